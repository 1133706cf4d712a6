"""A lower bound on the predicted latency of any placement under a GPU memory cap.

The ``latency`` objective's timeline (:mod:`.timeline`, ``sequential``) runs partitions
one after another -- a CPU kernel and a CUDA kernel never overlap -- while the weight
copies of streamed kernels run beside them on their own track.  So for any placement
(each kernel resident on CUDA, CUDA with its weights streamed, or on the CPU):

* ``latency >= sum over kernels of its time on its device`` (the *chain*: partition
  overheads and activation copies only add);
* ``latency >= streamed weight bytes / host-to-device bandwidth`` (the copy track);
* resident weight bytes ``<= cap - ring``, where the ring holds at least one slot as
  large as the largest streamed kernel's weights (:mod:`.gpu_memory`; activations
  only take more).

:func:`chain_bound` minimises ``max(chain, copies)`` over *fractional* placements
(each kernel split between its three choices) under that memory budget: a linear
programme whose optimum is a lower bound on every integral placement the partitioner
can make.  It is solved through its Lagrangian dual (exact up to the search's
tolerance, no LP solver needed): for multipliers ``lam`` (on the chain against the
copy track) and ``mu`` (on resident bytes) every kernel independently takes its
cheapest choice, and the dual ``D(lam, mu)`` is concave: maximised over ``mu``
exactly (a fractional knapsack over the kernels' breakpoints) and over ``lam`` by
ternary search.  Any ``D`` is itself a lower bound (weak duality), so an inexact
search still bounds from below.

What the bound leaves out is what makes it a bound: a kernel's work is never split
between the devices here in practice, partition overheads, activation copies, the
copy track's start (the first streamed call waits for its copy) and the ring's
back-pressure.  In: a :class:`~.problem.Problem` with a cap.  Out: :class:`ChainBound`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .problem import HOST, Problem

UNAVAILABLE_S = 1e6
"""The price of a choice a kernel does not have (a pin, a capability, streaming past the
slot): finite, so the prices stay ordinary numbers; a relaxation that still takes it
bounds by at least this much, i.e. says the cap cannot be met that way."""
ITERATIONS = 80
"""Ternary-search steps over ``lam`` (each keeps 2/3 of the interval: 80 -> 1e-14)."""


@dataclass(frozen=True)
class ChainBound:
    """``seconds``: the bound.  The relaxed placement at the best multipliers (each kernel
    its cheapest choice there, so its sums need not meet the budget exactly):
    ``resident_bytes``, ``streamed_bytes``, ``cpu_bytes`` (weights on each choice),
    ``chain_s`` (its sum of kernel times) and ``copy_s`` (its streamed bytes over the
    link); ``slot_bytes``: the largest streamed kernel's weights the best bound assumed;
    ``h2d_bytes_per_s``: the link's bandwidth used."""

    seconds: float
    resident_bytes: int
    streamed_bytes: int
    cpu_bytes: int
    chain_s: float
    copy_s: float
    slot_bytes: int
    h2d_bytes_per_s: float


def link_bandwidth(problem: Problem) -> float:
    """Host-to-device bytes per second of the cost model's link for a large copy (its
    fixed latency left out, so per-kernel copies are never over-priced)."""
    big = 1 << 30
    big_s = problem.weight_copy_s(big) - problem.weight_copy_s(1)
    return big / big_s if big_s > 0 else float("inf")


def chain_bound(problem: Problem, h2d_bytes_per_s: float | None = None) -> ChainBound:
    """The least ``max(chain, copies)`` over fractional placements of ``problem`` under its
    cap (see the module docstring); ``h2d_bytes_per_s`` defaults to the cost model's
    link (:func:`link_bandwidth`).  Without a cap every kernel may be resident."""
    h2d = h2d_bytes_per_s or link_bandwidth(problem)
    w, gpu, cpu = _arrays(problem)
    cap = float("inf") if problem.gpu_memory is None else float(problem.gpu_memory)
    # The largest streamed kernel's weights, W, sizes the ring's one slot at least:
    # each candidate W allows streaming kernels with weights <= W and leaves cap - W.
    sizes = [0.0] + sorted({x for x, g in zip(w, gpu) if x > 0 and g < UNAVAILABLE_S})
    best = None
    for slot in sizes:
        if slot > cap:
            break
        b = _bound(w, gpu, cpu, cap - slot, slot, h2d)
        if best is None or b[0] < best[0]:
            best = (*b, slot)
    seconds, choice, slot = best
    seconds = max(seconds, float(np.minimum(gpu, cpu).sum()))  # each kernel at best on its cheaper device
    resident, streamed, on_cpu = (choice == 0), (choice == 1), (choice == 2)
    copy_s = float(w[streamed].sum() / h2d)
    chain = float(gpu[resident | streamed].sum() + cpu[on_cpu].sum())
    return ChainBound(seconds, int(w[resident].sum()), int(w[streamed].sum()), int(w[on_cpu].sum()), chain,
                      copy_s, int(slot), h2d)


def relaxed_choices(problem: Problem, budget: float, slot: int, h2d_bytes_per_s: float) -> dict[str, str]:
    """Each kernel's choice ("cuda" resident, :data:`~.problem.STREAM`, "cpu") at the
    bound's multipliers for resident weights within ``budget`` and streaming up to
    ``slot`` bytes: a placement to start a search from, not necessarily within the cap."""
    from .problem import STREAM

    w, gpu, cpu = _arrays(problem)
    _, choice = _bound(w, gpu, cpu, float(budget), float(slot), h2d_bytes_per_s)
    return {k: ("cuda", STREAM, HOST)[c] for k, c in zip(problem.order, choice)}


def _arrays(problem: Problem):
    """(weight bytes, CUDA seconds, CPU seconds) per kernel in run order, a missing
    device at :data:`UNAVAILABLE_S`."""
    order = problem.order
    w = np.array([float(problem.graph.kernels[k].param_bytes) for k in order])
    gpu = np.array([problem.seconds[k].get("cuda", UNAVAILABLE_S) for k in order])
    cpu = np.array([problem.seconds[k].get(HOST, UNAVAILABLE_S) for k in order])
    return w, gpu, cpu


def _bound(w, gpu, cpu, budget: float, slot: float, h2d: float):
    """(max over lam, mu of the dual, each kernel's choice there: 0 resident, 1 streamed,
    2 CPU) with resident bytes <= ``budget`` and streaming only for weights <= ``slot``."""
    copy = np.where((w > 0) & (w <= slot), w / h2d, UNAVAILABLE_S)  # weightless: residency

    def prices(lam, mu):
        return np.stack([lam * gpu + mu * w, lam * gpu + (1 - lam) * copy, lam * cpu])

    def best_mu(lam):
        """The exact maximum over mu of the concave, piecewise-linear D(lam, .): past
        kernel k's breakpoint (its resident price meets its best other one) it leaves
        residency, and D's slope is the resident bytes left minus the budget."""
        other = np.minimum(lam * gpu + (1 - lam) * copy, lam * cpu)
        mu = 0.0
        if np.isfinite(budget):
            weighted = w > 0
            breaks = np.maximum(0.0, (other[weighted] - lam * gpu[weighted]) / w[weighted])
            order = np.argsort(-breaks, kind="stable")
            over = np.nonzero(np.cumsum(w[weighted][order]) > budget)[0]
            mu = float(breaks[order][over[0]]) if len(over) else 0.0
        value = float(np.minimum(lam * gpu + mu * w, other).sum() - (mu * budget if mu else 0.0))
        return mu, value

    lo, hi = 0.0, 1.0
    for _ in range(ITERATIONS):
        l1, l2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if best_mu(l1)[1] < best_mu(l2)[1]:
            lo = l1
        else:
            hi = l2
    lam = (lo + hi) / 2
    mu, value = best_mu(lam)
    # Kernels at the breakpoint tie residency with their other choice: reported as the
    # other, so the resident bytes reported stay within the budget.
    choice = np.argmin(prices(lam, mu * (1 + 1e-9) + 1e-18), axis=0)
    return value, choice
