"""Opt-in channel-blocked layout for an all-CPU import: convolutions in ``NCHW{c}c`` with
``OIHW{c}i{c}o`` weights (``load(model, conv_block=c)``; default None: NCHW, unchanged).

In: the Relax module :func:`.fusion.prepare_for_inference` has folded (batch norms into
the convs) and the block ``c`` (one of :data:`CONV_BLOCKS`).  Out: the module with TVM's
``ConvertLayout`` applied to ``relax.nn.conv2d`` (:func:`convert`), run before
:mod:`.nan_semantics` turns ReLU/Clip into ``call_tir`` (opaque to ``ConvertLayout``:
after it, every ReLU would sit between two ``layout_transform``\\ s); ``layout_transform``\\ s
land at the model's edges (resnet50: 3) and where an op keeps NCHW (a 3-channel stem,
depthwise convs).  :data:`LEGALIZE` lowers a blocked conv with ``topi.nn.conv2d_NCHWc``:
TVM 0.27's own legalisation returns it unchanged ("data layout or kernel layout have
channel chunk cannot be legalized by TOPI").  The weight's transform is a constant,
folded at import.  The CPU tiles them with :mod:`hetpart.kernels.rules.cpu_blocked_conv`.

For all-CPU builds only: the GPU rules were written for NCHW, so
:func:`hetpart.compiler.compile` refuses a plan with a non-CPU partition of such a graph.
Measured (bench/results/cpu-blocked-conv-2core.md, 2-core AVX2, 1 thread): resnet50
NCHW8c 0.90x the NCHW build at batch 8, 0.92x at batch 1; at batch 1 googlenet 0.93x, inception_v3
0.91x, but densenet121 1.08x (its first dense block stayed NCHW: fixed by :mod:`.blocked_regions`; with
it and the blocked concats vectorised, NCHW16c 0.75x / 0.62x of NCHW at b1 / b8 on an AVX-512 VM:
bench/results/cpu-dn-blocked-2core.md), convnext 1.00x, efficientnet 1.15x, mobilenet_v2 1.9x
(depthwise convs and ReLU6 stay NCHW, a transform at each): bench/results/cpu-blocked-next-2core.md.
``load`` stays NCHW unless asked (the layout is chosen before the plan says where kernels
run); :func:`default_block` is what the CLI's all-CPU plans use when no block is given: 16 on
AVX-512 CPUs, where at 16 threads NCHW16c beat NCHW on every net measured
(bench/results/cpu-s44-xeon.md), NCHW elsewhere.  ``partition MODEL --conv-block N|off`` chooses
explicitly; ``bench/corpus.py``'s CPU rows stay NCHW unless ``--cpu-conv-block N`` asks.
"""

from __future__ import annotations

import re

import tvm
from tvm import relax

from ..errors import ModelLoadError
from . import blocked_sink
from .nchwc import conv_out_dtype

CONV_BLOCKS = (8, 16, 32)
"""The channel blocks an import may ask for (8: AVX2's float lanes, 16: AVX-512's)."""

_BLOCKED = re.compile(r"^NCHW(\d+)c$")

SHARED_TRANSFORMS = True
"""Convert a tensor's layout once for all its consumers (``EliminateCommonSubexpr`` after
``ConvertLayout``, which emits one ``layout_transform`` per consumer).  densenet121 in
NCHW8c: 29 transforms moving 5.6 M floats -> 14 moving 4.1 M (its first dense block
stays NCHW -- its input comes from the 3-channel stem -- and each growth conv's output
went back to NCHW once per later concat); resnet50: 3 -> 2.  Time: 0.993-1.014x of off
(1 AVX2 thread, batch 1; noise), so kept for the kernels and buffers it saves.  Off: as
ConvertLayout leaves it (bench/results/cpu-blocked-next-2core.md)."""


def host_block(target=None) -> int:
    """The block for ``target`` (default: this machine's CPU): its float32 SIMD lanes -- 16
    with AVX-512, 8 with AVX2 -- at least 8 (:data:`CONV_BLOCKS`).  A block wider than the
    lanes is correct but slower (NCHW16c on AVX2: googlenet, inception_v3 1.16x of NCHW)."""
    from ..kernels.analysis import cpu_shape
    from ..targets import cpu_tvm_target

    lanes = cpu_shape(target if target is not None else cpu_tvm_target()).lanes("float32")
    return max(b for b in CONV_BLOCKS if b <= max(lanes, CONV_BLOCKS[0]))


DEFAULT_ON_AVX512 = True
"""All-CPU plans import their convolutions in NCHW16c by default on AVX-512 CPUs
(:func:`default_block`).  The 16-core Xeon at 16 threads, NCHW16c / NCHW: resnet50 0.74 (b1)
and 0.83 (b32), mobilenet_v2 0.67, googlenet 0.82, densenet121 0.56, inception_v3 0.84 -- and
0.76-0.99x ONNX Runtime at b1 (bench/results/cpu-s44-xeon.md).  Off: NCHW unless asked."""


def default_block(graph=None, target=None) -> int | None:
    """The channel block an all-CPU plan imports convolutions in when none was asked for:
    ``16`` where :data:`DEFAULT_ON_AVX512` holds, the CPU (``target``, default this machine's)
    has 16 float32 lanes and ``graph`` (an imported OpGraph; None: not checked) has a 2-D
    convolution; else None (NCHW: on AVX2 the blocked layout was measured on one core only)."""
    if not DEFAULT_ON_AVX512 or host_block(target) != 16:
        return None
    if graph is not None and not any("conv2d" in op for k in graph.kernels.values() for op in k.ops):
        return None
    return 16


FUSED_TRANSFORMS = True
"""Let ``FuseOps`` fuse a ``layout_transform`` with its injective neighbours (a concat, the
elementwise ops after it, a ReLU): TVM marks the legalised transform opaque
(``op_pattern`` 8), so each ran as its own pass over memory.  It is an index remap,
injective (2).  densenet121's block-1 concats then write NCHW8c themselves and read the
growth convs' blocked outputs directly (bench/results/cpu-blocked-next-2core.md)."""


@tvm.transform.module_pass(opt_level=0, name="InjectiveLayoutTransforms")
def injective_transforms(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """``mod`` with every legalised ``layout_transform`` PrimFunc marked injective
    (``op_pattern`` 2) for ``FuseOps`` (:data:`FUSED_TRANSFORMS`).  In: a module after
    ``AnnotateTIROpPattern``.  Invariant: the PrimFuncs' bodies are unchanged."""
    from tvm import tirx

    for gv, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gv.name_hint.startswith("te_layout_transform"):
            mod[gv] = func.with_attr("op_pattern", 2)
    return mod


def check_block(block) -> int | None:
    """``block`` if it is None or one of :data:`CONV_BLOCKS`; else :class:`ModelLoadError`."""
    if block is None or (isinstance(block, int) and not isinstance(block, bool) and block in CONV_BLOCKS):
        return block
    raise ModelLoadError(f"conv_block must be one of {', '.join(map(str, CONV_BLOCKS))} or None, got {block!r}")


def convert(mod: tvm.IRModule, block: int) -> tvm.IRModule:
    """``mod`` with every ``relax.nn.conv2d`` TVM's ``ConvertLayout`` can take in
    ``NCHW{block}c`` / ``OIHW{block}i{block}o`` (others, e.g. input channels not a multiple of
    ``block``, keep NCHW), each tensor converted once (:data:`SHARED_TRANSFORMS`)."""
    layouts = {"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]}
    mod = relax.transform.ConvertLayout(layouts)(mod)
    mod = relax.transform.EliminateCommonSubexpr()(mod) if SHARED_TRANSFORMS else mod
    mod = blocked_sink.sink_blocked(mod, block, SHARED_TRANSFORMS) if blocked_sink.BLOCKED_DEPTHWISE else mod
    return _widened(mod, block)


def _widened(mod: tvm.IRModule, block: int) -> tvm.IRModule:
    """``mod`` with its blocked region widened past the ops ``ConvertLayout`` leaves NCHW
    (pools, concats, per-channel elementwise ops: :mod:`.blocked_regions`, switch
    ``WIDEN_BLOCKED``), transforms shared again; as is with the switch off."""
    from . import blocked_regions

    if not blocked_regions.WIDEN_BLOCKED:
        return mod
    mod = blocked_regions.widen(mod, block)
    return relax.transform.EliminateCommonSubexpr()(mod) if SHARED_TRANSFORMS else mod


def legalize_conv2d(bb, call):
    """Legalise a ``relax.nn.conv2d`` whose data layout is ``NCHW{c}c`` (not grouped) with
    TOPI's NCHWc compute; any other conv2d as TVM's own legalisation does.  In: a
    BlockBuilder and the call.  Out: a ``call_tir`` (or ``call`` unchanged where neither can)."""
    from tvm import topi
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d
    from tvm.target import Target

    a = call.attrs
    if not _BLOCKED.match(str(a.data_layout)) or not _BLOCKED.match(str(a.out_layout)) or int(a.groups) != 1:
        return _nn_conv2d(bb, call)
    args = dict(stride=a.strides, padding=a.padding, dilation=a.dilation, layout=str(a.data_layout),
                out_layout=str(a.out_layout), out_dtype=conv_out_dtype(a.out_dtype, call.args[0]))
    # TOPI's NCHWc compute reads Target.current() (its x86 tiling hints); the compute itself
    # is target-neutral
    with Target("llvm"):
        return bb.call_te(topi.nn.conv2d_NCHWc, call.args[0], call.args[1], **args, primfunc_name_hint="conv2d_NCHWc")


LEGALIZE = {"relax.nn.conv2d": legalize_conv2d}
"""The legalisation :func:`.fusion.fuse_with_ops` adds to its own for a blocked import."""
