"""Store the operands of attention's batched matmuls (Q, K, V) in bfloat16 between kernels.

In: an :class:`~hetpart.importer.OpGraph` and groups of kernel ids (each group the kernels
of one bfloat16 CUDA partition), after :mod:`.low_precision_scores` and
:mod:`.low_precision_activations`.  Out (:func:`lower_attention_operands`): the same
kernels, where each tensor ``T`` of a group (:func:`attention_operand_edges`) that

* is a float32 activation, the one output of a kernel of the group, not a model input or
  output, and
* is read only by kernels of the group that are activation x activation contractions --
  a ``matmul`` kernel none of whose arguments is a model weight (a constant of two or more
  dimensions), in whose PrimFunc ``T``'s buffer is read by the contraction block alone, as
  one factor of its product (attention's ``Q K^T`` reads Q and K^T, its ``P V`` reads V),

is stored in bfloat16: its producer (usually the head-split reshape/transpose copy after a
projection) ends in a rounding ``astype`` fused into the block writing the result, and each
contraction widens it as it reads it and is marked
:data:`~hetpart.importer.low_precision_scores.NARROW_ACTIVATION_ATTR` -- the mechanics of
:func:`~hetpart.importer.low_precision_scores.lower_edges`: no kernel added, kernel ids,
order and edges unchanged.  ``P`` (the softmax's output, read by ``P V`` alone) is such a
tensor too: bf16 already where :mod:`.low_precision_scores` is on (that pass runs first), stored
by this one where it is off.  So ``P V`` reads both operands in bf16, like ``Q K^T``: what
:data:`hetpart.kernels.rules.gpu_tensor_core.LOW_PRECISION_ATTENTION_MMA` multiplies in
bf16 ``mma.sync`` (m16n8k16, float32 sums), as ``torch.autocast`` does.

Why: ``cuda=bf16`` stores weights, weight GEMMs' inputs and the scores in bf16; Q, K and V
stay float32 (their producers' outputs are read by the bmms only, which
:mod:`.low_precision_activations` leaves: no bf16 weight), so attention's bmms move float32
operands and multiply in TF32 (``bench/results/gpu-bf16-remaining-static.md``: half the
Whisper encoder's priced GPU time at batch 1).

Switch: :data:`STORE_ATTENTION_OPERANDS_BF16` (off; off: the compiler never calls this,
generated code as before it).  :func:`hetpart.compiler.precision.lower_plan_weights` passes
it the bf16 CUDA partitions only.  Only edges inside one group change.

Invariant: the graph computes the previous graph's function with those tensors rounded to
bfloat16 once each; kernel ids, order and edges are unchanged; each changed tensor's
``dtype`` is ``bfloat16`` and its kernels' ``bytes_read`` / ``bytes_written`` count it so.
"""

from __future__ import annotations

import tvm

from .low_precision_activations import _loads, contraction_reading, narrowable_edges
from .low_precision_scores import Edge, lower_edges

STORE_ATTENTION_OPERANDS_BF16 = False
"""Store attention's Q, K and V in bfloat16 in a ``cuda=bf16`` build (module docstring).  Off
until a device step measures it; A/B: ``tools/gpu_model_switch_ab.py MODEL --precision bf16
--before hetpart.importer.low_precision_attention.STORE_ATTENTION_OPERANDS_BF16=0 --after
...=1`` (with :data:`hetpart.kernels.rules.gpu_tensor_core.LOW_PRECISION_ATTENTION_MMA`
the bmms multiply in bf16)."""

SUFFIX = "bf16q"
"""Suffix of the retyped kernels' PrimFuncs (the score pass's is ``bf16s``, the GEMM-input
pass's ``bf16a``)."""

CONTRACTIONS = ("matmul",)
"""Op classes whose kernels may read Q, K or V in bf16."""


def attention_operand_edges(graph, group) -> list[Edge]:
    """The tensors of ``graph`` that :func:`lower_attention_operands` stores in bfloat16 for
    one group of kernel ids (module docstring), in graph order of their producers."""
    return narrowable_edges(graph, group, CONTRACTIONS, _reads_as_factor)


def lower_attention_operands(graph, groups):
    """``graph`` with the :func:`attention_operand_edges` of each group of kernel ids stored
    in bfloat16 (module docstring); ``graph`` itself is unchanged."""
    return lower_edges(graph, [e for g in groups for e in attention_operand_edges(graph, g)], SUFFIX)


def _reads_as_factor(module, call, var) -> bool:
    """Whether the ``call_tir`` ``call`` passes ``var`` once, to a buffer its PrimFunc reads in
    one block only, a contraction taking it as one factor of its product, and passes no model
    weight (a constant of two or more dimensions: a weight GEMM is
    :mod:`.low_precision_activations`')."""
    found = contraction_reading(module, call, var)
    if found is None:
        return False
    args, buf, block = found
    if any(isinstance(a, tvm.ir.GenericConst) and len(a.ty.shape) >= 2 for a in args):
        return False
    product = block.body.value.b
    return _loads(product.a, buf) != _loads(product.b, buf)


__all__ = ["CONTRACTIONS", "STORE_ATTENTION_OPERANDS_BF16", "SUFFIX", "attention_operand_edges",
           "lower_attention_operands"]
