"""Store the activations that only weight GEMMs read in bfloat16 between kernels.

In: an :class:`~hetpart.importer.OpGraph` whose weights are already lowered
(:func:`hetpart.importer.low_precision.lower_weights`) and groups of kernel ids (each
group the kernels of one partition on a device that computes in bfloat16).  Out
(:func:`lower_gemm_inputs`): the same kernels, where each tensor ``T`` of a group
(:func:`gemm_input_edges`) that

* is a float32 activation, the one output of a kernel of the group, not a model input
  or output, and
* is read only by kernels of the group that are weight GEMMs reading it as their
  contraction's A operand -- a ``matmul`` kernel one of whose arguments is a bf16 weight,
  in whose PrimFunc ``T``'s buffer is read by the contraction block alone, as the left
  factor of its product (not by a residual add or bias fused in the epilogue) -- with at
  least :data:`MIN_ROWS` rows (``T``'s elements over the contracted extent),

is stored in bfloat16: its producer computes in float32 and its kernel ends in a
rounding ``astype`` (round to nearest even) fused into the block writing the result
(the epilogue of a GEMM, a layer norm's normalisation, a transpose/reshape copy); each
GEMM widens it as it reads it, and is marked
:data:`~hetpart.importer.low_precision_scores.NARROW_ACTIVATION_ATTR`, so the tensor-core
rule stages A in bf16 by ``cp.async`` (half the bytes) and widens it in the fragment
loads (exact: bf16 values are TF32 values).  The mechanics are
:func:`~hetpart.importer.low_precision_scores.lower_edges`' (the score pass's): no kernel
added, no cast kernel, kernel ids, order and edges unchanged.

Which tensors: in a transformer layer, the projections' inputs -- a pre-LN layer's
(ViT, Whisper) LayerNorm outputs (Q/K/V and fc1), the GELU output fc1's epilogue writes
(fc2), the attention context the merge-heads copy writes (the out-projection).  A tensor
with any other consumer keeps float32 (one rounded copy per tensor, not two: a kernel
writing both would need a second output, a new kernel signature): in a post-LN layer
(BERT, DistilBERT) the LayerNorm output is also the next residual, read by the out- or
fc2-projection's epilogue, so it stays float32 there and only the GELU output and the
context are narrowed.  Residual streams, norms' inputs and every reduction stay float32.
Rows below :data:`MIN_ROWS` (a pooler's or classifier's GEMV) are left: their weight
bytes dominate and the rules for them are not the tensor-core ones.

Why: ``cuda=bf16`` stores only weights in bf16, so a GEMM reads its activation in
float32, and hetpart's wgmma GEMM runs ViT's projections 2x faster with A already in
bf16 than with A narrowed in the kernel (bench/results/gpu-wgmma-swizzle-150-nvidia-h100.json);
``torch.autocast`` likewise feeds its GEMMs bf16 activations.

Switch: :data:`STORE_GEMM_INPUTS_BF16` (on since device step 155; off: the compiler never
calls this, generated code as before it); :func:`hetpart.compiler.precision.lower_plan_weights`
passes it the bf16 CUDA partitions only (a ``cpu=bf16`` partition keeps float32 activations: the CPU rules
stage no bf16 operand).  Only edges inside one group are changed: partition boundaries and
the model's inputs and outputs keep their dtypes.  With
:data:`~hetpart.importer.low_precision_scores.STORE_SCORES_BF16` on as well, the score
pass runs first; its tensors are bf16 already and are not this pass's.

Invariant: the graph computes the float32-activation graph's function with those
tensors rounded to bfloat16 once each; kernel ids, order and edges are unchanged; each
changed tensor's ``dtype`` is ``bfloat16`` and its kernels' ``bytes_read`` /
``bytes_written`` count it so.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import s_tir
from tvm.ir import TensorLoad

from .low_precision import _is_call_tir, kernel_calls
from .low_precision_scores import DTYPE, Edge, _binding_vars, _is_contraction, lower_edges

STORE_GEMM_INPUTS_BF16 = True
"""Store weight GEMMs' A inputs in bfloat16 in a ``cuda=bf16`` build (module docstring).
On since device step 155 (H100, all-CUDA bf16, ``bench/results/gpu-bf16-defaults-nvidia-h100.md``):
alone, whisper_encoder 1.95 -> 1.91 ms at batch 1, vit_b_16 and distilbert within the rounds' spread; it is
what lets the ``wgmma`` GEMM's bf16 family (:data:`hetpart.kernels.wgmma_match.WGMMA_BF16`) take the
projections: all three on, vit_b_16 1.592 -> 1.199 (b1) and 21.29 -> 11.05 (b32), whisper_encoder 1.960 ->
1.518 and 51.48 -> 43.56.  A/B: ``tools/gpu_model_switch_ab.py MODEL --precision bf16 --before
hetpart.importer.low_precision_activations.STORE_GEMM_INPUTS_BF16=0``."""

SUFFIX = "bf16a"
"""Suffix of the retyped kernels' PrimFuncs (the score pass's is ``bf16s``)."""

GEMMS = ("matmul",)
"""Op classes whose kernels may read an activation in bf16 (dense / batched matmul)."""

MIN_ROWS = 32
"""Least rows (A's elements over the contracted extent) of a GEMM whose input is
narrowed: a tensor-core tile's 32 (``gpu_tensor_core.MATMUL_SPLIT_MIN_ROWS``)."""


def gemm_input_edges(graph, group) -> list[Edge]:
    """The tensors of ``graph`` that :func:`lower_gemm_inputs` stores in bfloat16 for one
    group of kernel ids (module docstring), in graph order of their producers."""
    return narrowable_edges(graph, group, GEMMS, _reads_as_a)


def narrowable_edges(graph, group, op_classes, reads) -> list[Edge]:
    """The float32 activations of one group of kernel ids -- each the one output of a kernel of
    the group, not a model input or output -- whose every reader is a kernel of the group of one
    of ``op_classes`` for which ``reads(module, call, var)`` holds; in graph order of their
    producers.  The shared walk of this pass and :mod:`.low_precision_attention`."""
    group = set(group)
    kernels = graph.kernels
    calls = kernel_calls(graph)
    var_of = _output_vars(graph, calls, group)
    out = []
    for name, t in graph.tensors.items():
        if (t.is_output or t.is_input or t.dtype != "float32" or t.producer not in group or not t.consumers
                or len(kernels[t.producer].outputs) != 1 or t.producer not in var_of):
            continue
        readers = tuple(dict.fromkeys(t.consumers))
        if all(c in group and kernels[c].op_class in op_classes and reads(graph.module, calls[c], var_of[t.producer])
               for c in readers):
            out.append(Edge(name, t.producer, readers))
    return sorted(out, key=lambda e: kernels[e.producer].index)


def lower_gemm_inputs(graph, groups):
    """``graph`` with the :func:`gemm_input_edges` of each group of kernel ids stored in
    bfloat16 (module docstring); ``graph`` itself is unchanged."""
    return lower_edges(graph, [e for g in groups for e in gemm_input_edges(graph, g)], SUFFIX)


def _output_vars(graph, calls, group) -> dict:
    """``{kernel id: the var its call binds}`` for the ``call_tir`` kernels of ``group``."""
    ok = {k: c for k, c in calls.items() if _is_call_tir(c) and len(c.args) == 2}
    bound = _binding_vars(graph.module["main"], ok)
    return {k: v for k, v in bound.items() if k in group}


def _reads_as_a(module, call, var) -> bool:
    """Whether the ``call_tir`` ``call`` passes ``var`` once, to a buffer its PrimFunc reads in
    one block only, a contraction taking it as the left factor of its product, with a
    bf16 weight among the call's constant arguments and :data:`MIN_ROWS` rows (static
    shapes only)."""
    found = contraction_reading(module, call, var)
    if found is None:
        return False
    args, buf, block = found
    if not any(isinstance(a, tvm.ir.GenericConst) and str(a.ty.dtype) == DTYPE for a in args):
        return False
    product = block.body.value.b
    if not (_loads(product.a, buf) and not _loads(product.b, buf)):
        return False
    extents = [iv.dom.extent for iv in block.iter_vars if iv.iter_type != tvm.tirx.IterVar.DataPar]
    if not all(isinstance(d, tvm.tirx.IntImm) for d in (*extents, *buf.shape)):
        return False  # a symbolic extent: rows unknown, left float32
    return math.prod(int(d) for d in buf.shape) // max(math.prod(int(d) for d in extents), 1) >= MIN_ROWS


def contraction_reading(module, call, var):
    """``(call's arguments, the PrimFunc's buffer, the block)`` when the ``call_tir`` ``call``
    passes ``var`` once, to a buffer its PrimFunc reads in one block only, a contraction
    (:func:`~.low_precision_scores._is_contraction`); else None.  The common test of this pass
    and :mod:`.low_precision_attention`, which then ask which factor it is and what else is passed."""
    if not _is_call_tir(call) or len(call.args) != 2:
        return None
    args = list(call.args[1].fields)
    positions = [i for i, a in enumerate(args) if a.same_as(var)]
    if len(positions) != 1:
        return None
    func = module[call.args[0]]
    if not isinstance(func, tvm.tirx.PrimFunc):
        return None
    buf = func.params[positions[0]]
    readers = []

    def visit(block):
        if any(r.source.same_as(buf) for r in block.reads):
            readers.append(block)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    if len(readers) != 1 or not _is_contraction(readers[0]):
        return None
    return args, buf, readers[0]


def _loads(expr, buf) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, (TensorLoad, lambda n: found.append(n) if n.source.same_as(buf) else None))
    return bool(found)


__all__ = ["GEMMS", "MIN_ROWS", "STORE_GEMM_INPUTS_BF16", "SUFFIX", "gemm_input_edges", "lower_gemm_inputs"]
