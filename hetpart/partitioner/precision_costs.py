"""Costs of each kernel in the number format of the device it would run on.

In: the partitioner's :class:`~.costs.Costs`, the op graph and a
:class:`~hetpart.contracts.precision.Precision`.  Out (:func:`with_precision`): costs
that price a kernel on a ``bf16`` / ``fp16`` device as the kernel the compiler will
build there -- the op graph's kernel with its weights stored in that format
(:func:`hetpart.importer.low_precision.lower_weights`: another PrimFunc, so another
signature, measured into the profile by ``partition profile --precision``; where the
profile has no measurement of it, the cost model predicts it from its own features
and schedule rule, its weight bytes halved).  Other devices, transfers and overheads
are priced as before.

With :data:`hetpart.kernels.flash_substitute.FLASH_ATTENTION` on, a ``cuda=bf16`` device's
kernels are priced with the attention triples the compiler would mark if the whole graph ran
in one bf16 CUDA partition marked too (:func:`priced_graph`,
:func:`hetpart.importer.flash_triples.mark_triples`; masked ones -- the mask or bias fused into the
scores kernel -- as well where :data:`~hetpart.kernels.flash_substitute.FLASH_MASKED_ATTENTION` is
on): the cost model prices such a triple as the flash chain that runs on sm_90
(:mod:`hetpart.costmodel.flash_cost`'s sum rule: ``scores`` and ``softmax`` 0, ``values`` the chain).
The planner's costs are per kernel, so a plan that splits a triple across devices or partitions
(the compiler then marks nothing and runs three kernels) is priced as if the CUDA part of it ran
fused: optimistic for that plan only.

Invariant: with the default precision (or no low format on any device) the costs
come back unchanged; with ``FLASH_ATTENTION`` off, as before it (with only
``FLASH_MASKED_ATTENTION`` off, masked triples as before it).
"""

from __future__ import annotations

from ..contracts.precision import DEVICES, Precision
from ..importer.low_precision import LOW_DTYPES, lower_weights


class PrecisionCosts:
    """``costs`` with every kernel asked about on a device in ``lowered`` replaced by
    that device's version of it (``lowered[device][kernel id]``); everything else
    (``profile``, ``origin``, ``rule_of`` ...) is ``costs``'."""

    def __init__(self, costs, lowered: dict[str, dict]):
        self.costs = costs
        self.lowered = lowered

    def _as_built(self, kernel, device: str):
        return self.lowered.get(device, {}).get(kernel.id, kernel)

    def kernel_cost(self, kernel, device: str) -> float:
        return self.costs.kernel_cost(self._as_built(kernel, device), device)

    def is_predicted(self, kernel, device: str) -> bool:
        return self.costs.is_predicted(self._as_built(kernel, device), device)

    def supports(self, kernel, device: str) -> tuple[bool, str]:
        return self.costs.supports(self._as_built(kernel, device), device)

    def transfer_cost(self, nbytes: int, src: str, dst: str) -> float:
        return self.costs.transfer_cost(nbytes, src, dst)

    def mapped_cost(self, kernel) -> float:
        """The CUDA build's kernel (its weights in the CUDA format) read from mapped host memory."""
        return float(self.costs.mapped_cost(self._as_built(kernel, "cuda")))

    def launches(self, kernel) -> int:
        """Kernel launches of the CUDA build's kernel (a flash triple's: :mod:`hetpart.costmodel.flash_cost`)."""
        launches = getattr(self.costs, "launches", None)
        return int(launches(self._as_built(kernel, "cuda"))) if launches is not None else 1

    def add_graph(self, graph) -> "PrecisionCosts":
        """``graph`` given to the costs behind (their kernels as asked about here are looked up there)."""
        self.costs.add_graph(graph)
        return self

    def partition_overhead(self, device: str) -> float:
        return self.costs.partition_overhead(device)

    def wake_cost(self, device: str) -> float:
        wake = getattr(self.costs, "wake_cost", None)
        return float(wake(device)) if wake is not None else 0.0

    def scaled(self, gpu: float = 1.0, link: float = 1.0) -> "PrecisionCosts":
        return PrecisionCosts(self.costs.scaled(gpu=gpu, link=link), self.lowered)

    def __getattr__(self, name):
        return getattr(self.costs, name)


def priced_graph(graph, device: str, dtype: str):
    """``graph`` as the cost model prices it on ``device`` stored in ``dtype`` (a low format):
    every kernel's weights in ``dtype``; on a ``bfloat16`` CUDA device with
    ``FLASH_ATTENTION`` on, also its attention triples marked as one bf16 CUDA partition of
    all kernels would have them -- the masked ones too with ``FLASH_MASKED_ATTENTION`` on, both
    switches read at call time (module docstring).  ``partition profile --precision``
    measures this graph, so the planner finds what was measured."""
    from ..importer import flash_triples, low_precision_scores
    from ..kernels import flash_substitute

    low = lower_weights(graph, list(graph.kernels), dtype)
    if device == "cuda" and dtype == low_precision_scores.DTYPE and flash_substitute.FLASH_ATTENTION:
        # masked triples too where the compiler marks them (FLASH_MASKED_ATTENTION, read now): their
        # chain module takes the mask inputs and prices the bias kernel (costmodel.flash_cost)
        low = flash_triples.mark_triples(low, [list(low.kernels)], masked=flash_substitute.FLASH_MASKED_ATTENTION)
    return low


def with_precision(costs, graph, precision: Precision):
    """``costs`` pricing ``graph``'s kernels in ``precision`` (module docstring)."""
    lowered = {}
    for device in DEVICES:
        dtype = precision.storage(device)
        if dtype not in LOW_DTYPES:
            continue
        low = priced_graph(graph, device, dtype)
        costs.add_graph(low)  # the cost model finds the widened PrimFuncs' rules there
        lowered[device] = {k: v for k, v in low.kernels.items() if v is not graph.kernels[k]}
    return PrecisionCosts(costs, lowered) if lowered else costs


__all__ = ["PrecisionCosts", "priced_graph", "with_precision"]
