"""CPU rule for NCHW convolutions (regular, 1x1, strided, grouped, depthwise) with a
fused padding producer and element-wise epilogue (bias, batch-norm, relu, add).

Matches a function whose one reduction block is a multiply-accumulate with a
*windowed* operand (an index like ``oh*stride + ry``).  Two tilings, chosen by
what the shapes allow:

* **output-channel vectors** (regular and 1x1 convolutions): the weight alone depends
  on ``oc``, so it is packed into ``[oc/L, ic, kh, kw, L]`` panels and ``oc`` is
  vectorised; ``ow`` is blocked across registers, its input scalar broadcast.  This
  works for any stride and any (small) output width -- the NCHWc idea without
  changing the layout the rest of the model sees.
* **output-width vectors** (depthwise / grouped, where input and weight both depend
  on the channel): vectorise ``ow`` over the input's rows, one register row.

The padding block stays separate (inlining it would put a bounds test into the inner
loop) and gets the injective schedule.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ScheduleRule
from tvm.target import Target

from ..analysis import block_infos, cpu_shape, find_mac, is_cpu, try_inline_spatial
from ..register_tile import make_plan, register_tile, vec_candidates


def _has_if_then_else(stmt) -> bool:
    found = []

    def visit(e):
        if isinstance(e, tvm.ir.Call) and str(getattr(e.op, "name", "")).endswith("if_then_else"):
            found.append(e)

    tvm_ffi.structural_walk(stmt.body, (tvm.ir.Call, visit), order="post")
    return bool(found)


class CpuConv2d(ScheduleRule):
    """Register-tiled, parallel, vectorised direct convolution (see module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        # Keep padding blocks (bounds tests) out of the inner loop; inline the rest.
        root = sch.get_sblock("root")
        keep = {sch.get(b).name_hint for b in sch.get_child_blocks(root) if _has_if_then_else(sch.get(b))}
        try_inline_spatial(sch, keep=keep)
        infos = block_infos(sch)
        if infos is None:
            return None
        mac = find_mac(sch, infos)
        if mac is None:
            return None
        if all(isinstance(e, (tirx.Var, tirx.IntImm)) for _, idx in mac.operands for e in idx):
            return None  # a plain contraction: the matmul rule's job
        shape = cpu_shape(target)
        lanes = shape.lanes(str(mac.out.dtype))
        cands = vec_candidates(mac, lanes)
        # Output-channel vectors: a plain dim of one operand (the weight), packed.
        plain = [c for c in cands if c.plain and self._is_weight(mac, c.operand)]
        if plain:
            plan = make_plan(mac, plain[0], shape, lanes, pack=not plain[0].last)
        else:
            # Output-width vectors: the innermost windowed dim, loads used as they are.
            width = [c for c in cands if c.last]
            if not width:
                width, lanes = self._narrow_width(mac, lanes)
                if not width:
                    return None
            plan = make_plan(mac, width[-1], shape, lanes, pack=False)
        register_tile(sch, mac, plan, shape)
        return sch

    @staticmethod
    def _is_weight(mac, operand: int) -> bool:
        """The operand indexed by bare iterators only (the weight, not the window)."""
        return all(isinstance(e, (tirx.Var, tirx.IntImm)) for e in mac.operands[operand][1])

    @staticmethod
    def _narrow_width(mac, lanes: int):
        """Candidates with fewer lanes (7 for the 7x7 / 14x14 maps of depthwise convs),
        which still beat scalar code: ``(candidates, lanes)`` or ``([], lanes)``."""
        for n in range(lanes - 1, 3, -1):
            found = [c for c in vec_candidates(mac, n) if c.last]
            if found:
                return found, n
        return [], lanes
