"""Apply a :class:`~hetpart.contracts.precision.Precision` to a plan before it is built.

In: the op graph, the plan (which device runs each kernel) and the precision to
build with.  Out: the op graph whose kernels on a ``bf16`` / ``fp16`` device store
their weights in that format (:func:`hetpart.importer.low_precision.lower_weights`;
same kernels and boundaries, so :func:`~hetpart.compiler.extract.extract` cuts it as
it cuts the float32 graph), and the kernel options that build it (``cuda=fp32`` is
TF32 off; every other CUDA format keeps the caller's TF32 choice, which runs the
contractions of bf16/fp16 weights exactly on TF32 tensor cores).

Invariant: with the default precision the graph and options come back unchanged.
"""

from __future__ import annotations

import dataclasses

from ..contracts.precision import DEFAULT, DEVICES, Precision
from ..errors import PlanError
from ..importer import flash_triples, low_precision_activations, low_precision_attention, low_precision_scores
from ..importer.low_precision import lower_weights, param_bytes
from ..kernels import flash_substitute
from ..kernels.options import KernelOptions


def lower_plan_weights(graph, plan, precision: Precision):
    """``graph`` with each kernel's weights in the format of the device ``plan`` runs it on
    (and, with ``low_precision_scores.STORE_SCORES_BF16``, attention's scores and
    probabilities inside each bfloat16 partition stored in bfloat16; with
    ``low_precision_activations.STORE_GEMM_INPUTS_BF16``, the activations only weight
    GEMMs read in each bfloat16 CUDA partition, after the scores; with
    ``low_precision_attention.STORE_ATTENTION_OPERANDS_BF16``, attention's Q, K and V in each
    bfloat16 CUDA partition; last, with ``kernels.flash_substitute.FLASH_ATTENTION``, the attention
    triples -- Q K^T, softmax, P V -- of each bfloat16 CUDA partition marked for the flash kernel,
    :mod:`~hetpart.importer.flash_triples`)."""
    for device in DEVICES:
        dtype = precision.storage(device)
        kernels = [k for p in plan.partitions if p.device == device for k in p.kernels]
        if kernels and dtype != "float32":
            graph = lower_weights(graph, kernels, dtype)
    bf16 = [p for p in plan.partitions if precision.storage(p.device) == low_precision_scores.DTYPE]
    cuda_bf16 = [p.kernels for p in bf16 if p.device == "cuda"]  # the passes below: the CPU rules stage no bf16 operand
    # each switch read at call time: one set after import counts
    if low_precision_scores.STORE_SCORES_BF16:
        graph = low_precision_scores.lower_scores(graph, [p.kernels for p in bf16])
    if low_precision_activations.STORE_GEMM_INPUTS_BF16:
        graph = low_precision_activations.lower_gemm_inputs(graph, cuda_bf16)
    if low_precision_attention.STORE_ATTENTION_OPERANDS_BF16:
        graph = low_precision_attention.lower_attention_operands(graph, cuda_bf16)
    if flash_substitute.FLASH_ATTENTION:  # sm_90 decides at build (kernels.flash_substitute)
        graph = flash_triples.mark_triples(graph, cuda_bf16, masked=flash_substitute.FLASH_MASKED_ATTENTION)
    return graph


def options_for(options: KernelOptions, precision: Precision) -> KernelOptions:
    """``options`` as ``precision`` asks: ``cuda=fp32`` switches TF32 off."""
    return dataclasses.replace(options, tf32=False) if precision.cuda == "fp32" else options


def resolve(plan, precision) -> Precision:
    """The precision to compile ``plan`` with: ``precision`` if given, else the plan's.

    A plan made for another (non-default) precision is refused: its weight bytes,
    memory cap and stream slots were sized for that one."""
    from ..contracts.precision import coerce

    planned = getattr(plan, "precision", DEFAULT)
    if precision is None:
        return planned
    precision = coerce(precision)
    if planned != DEFAULT and precision != planned:
        raise PlanError(f"the plan was made for precision {planned.describe()}, not {precision.describe()}; "
                        f"compile it with that precision, or make the plan again with the one you want")
    return precision


def with_precision(plan, graph, precision: Precision):
    """``plan`` recording ``precision``, each partition's ``weight_bytes`` counted in its
    device's format (a plan made before precisions existed, now compiled with one)."""
    if getattr(plan, "precision", DEFAULT) == precision:
        return plan
    sizes = {d: param_bytes(graph, precision.storage(d)) for d in DEVICES}
    partitions = [dataclasses.replace(p, weight_bytes=sum(sizes[p.device].get(k, graph.kernels[k].param_bytes)
                                                          for k in p.kernels)) for p in plan.partitions]
    return dataclasses.replace(plan, partitions=partitions, precision=precision, graph=plan.graph,
                               costs=plan.costs)


__all__ = ["lower_plan_weights", "options_for", "resolve", "with_precision"]
