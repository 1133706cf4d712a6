"""The channel-blocked layout ``NCHW{c}c``: its two ``layout_transform``\\ s, built and
recognised, and the dtype a conv writes, for the passes of a blocked import
(:mod:`.conv_layout`, :mod:`.blocked_sink`, :mod:`.blocked_regions`).

In: Relax expressions with static shapes.  Out: ``to_blocked`` / ``to_nchw`` calls and
:func:`transform_kind`, which names either kind whether this module, ``ConvertLayout`` or a
pass emitted it.  Invariant: a transform recognised is a pure index remap (no padding).
"""

from __future__ import annotations

import tvm
from tvm import relax


def shape(expr) -> list[int] | None:
    """``expr``'s static shape, or None (not a tensor of known dims)."""
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    try:
        return [int(d) for d in shape.values]
    except (TypeError, ValueError):
        return None


def to_blocked(x, block: int):
    """``layout_transform`` of an NCHW tensor ``x`` to ``NCHW{block}c``."""
    return relax.op.layout_transform(x, index_map=lambda n, c, h, w: (n, c // block, h, w, c % block))


def to_nchw(x, block: int):
    """``layout_transform`` of an ``NCHW{block}c`` tensor ``x`` to NCHW."""
    return relax.op.layout_transform(x, index_map=lambda n, c, h, w, b: (n, c * block + b, h, w))


def _maps_as(index_map, probe, expect) -> bool:
    """Whether ``index_map`` sends the index tuple ``probe`` to ``expect`` (ints)."""
    try:
        got = index_map.map_indices([tvm.tirx.IntImm("int64", v) for v in probe])
        return [int(g) for g in got] == list(expect)
    except Exception:  # noqa: BLE001 - not a plain index remap
        return False


def transform_kind(call, block: int | None = None) -> str | None:
    """"to_nchw" / "to_blocked" where ``call`` is a ``layout_transform`` between NCHW and
    ``NCHW{block}c`` (as :func:`to_nchw` / :func:`to_blocked` emit and ``ConvertLayout``
    does; ``block`` None: any of 8, 16, 32), else None."""
    if block is None:
        dst, src = shape(call), shape(call.args[0]) if isinstance(call, relax.Call) and call.args else None
        sizes = {x[4] for x in (src, dst) if x is not None and len(x) == 5}
        return next((k for k in (transform_kind(call, b) for b in sizes if b in (8, 16, 32)) if k), None)
    if not (isinstance(call, relax.Call) and getattr(call.op, "name", None) == "relax.layout_transform"):
        return None
    src, dst = shape(call.args[0]), shape(call)
    if src is None or dst is None or call.attrs.pad_value is not None:
        return None
    im = call.attrs.index_map
    if len(src) == 5 and len(dst) == 4 and src[4] == block and _maps_as(im, (1, 2, 3, 4, 5), (1, 2 * block + 5, 3, 4)):
        return "to_nchw"
    if len(src) == 4 and len(dst) == 5 and dst[4] == block and _maps_as(im, (1, 2 * block + 5, 3, 4),
                                                                        (1, 2, 3, 4, 5)):
        return "to_blocked"
    return None


def conv_out_dtype(out_dtype, data) -> str:
    """The conv's output dtype: its attribute, else (unset: None/void/"") its input's."""
    s = "" if out_dtype is None else str(out_dtype)
    return s if s not in ("", "None", "void") else str(data.ty.dtype)
