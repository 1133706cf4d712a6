"""Splitting one GPU memory cap into per-model quotas: the joint objective and its exact search.

In: per model, its *options* (:class:`Option`: a plan made by the ordinary partitioner
at one candidate cap, with the GPU memory it predicts, its latency and how long it
keeps the CPU and the GPU busy), a weight and an expected request rate; the cap.
Out: one option per model (:func:`choose`), the one minimising the joint objective
with the options' memory summed under the cap.

**The objective** (what :func:`objective_value` computes).  Models share the GPU's
time as well as its memory: a model moved onto the GPU runs faster alone but loads
the GPU for the others.  Each device is treated as one processor-shared server (the
partitioner's CPU and CUDA tracks): with expected rates ``r_i`` (requests/s), the
device ``d`` is busy ``U_d = sum_i r_i * busy_i,d`` of the time, and a request's
``busy_i,d`` seconds there stretch to ``busy_i,d / (1 - U_d)`` (mean response time of
an M/G/1 processor-sharing queue).  A model's expected latency is its plan's
predicted latency plus that stretch on both devices::

    E[latency_i] = latency_i + sum_d busy_i,d * U_d / (1 - U_d)
    J = sum_i w_i * E[latency_i],   w_i = r_i * 2 ** priority_i

so J is the rate-weighted mean latency of all requests, each priority level doubling
a model's weight.  Without rates (``None``) there is no contention term (``U_d = 0``)
and ``w_i = 2 ** priority_i``: the priority-weighted sum of the latencies alone.  A
choice with ``U_d >= 1`` for a device cannot keep up with the rates and is never chosen.

**The search** is exact over the options: a dynamic programme over the models keeping,
after each, only the partial choices not dominated in (memory, ``U_cpu``, ``U_gpu``,
``sum w * latency``, ``sum w * busy_cpu``, ``sum w * busy_gpu``) -- J is
non-decreasing in each of those sums, so a dominated partial choice never completes
into a better one.  Options over the cap are dropped as they are added.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlanError

PRIORITY_BASE = 2.0
"""Each priority level multiplies a model's weight in the objective by this."""


@dataclass(frozen=True)
class Option:
    """One plan a model may get: made at ``cap``, needing ``memory`` bytes (<= cap),
    ``latency_s`` alone, keeping the CPU busy ``cpu_s`` and the GPU ``gpu_s`` per request.
    ``plan`` is the :class:`~hetpart.partitioner.Plan` (None in tests of the search)."""

    cap: int
    memory: int
    latency_s: float
    cpu_s: float
    gpu_s: float
    plan: object = None


@dataclass(frozen=True)
class Demand:
    """What the objective knows of a model: its weight and expected rate (None: unknown)."""

    weight: float
    rate: float | None


def weight(priority: int, rate: float | None) -> float:
    """``w_i`` of the module docstring."""
    return (rate if rate is not None else 1.0) * PRIORITY_BASE ** priority


def option_of(plan, cap: int, memory: int | None = None) -> Option:
    """The :class:`Option` of a partitioner plan made at ``cap``: latency and per-device
    busy seconds from its predictions (busy = the partitions' predicted_s); ``memory``
    what it reserves (default: its predicted GPU memory)."""
    busy = {"cpu": 0.0, "cuda": 0.0}
    for p in plan.partitions:
        busy[p.device] += p.predicted_s
    memory = int(plan.predicted["gpu_memory_bytes"]) if memory is None else int(memory)
    return Option(cap, memory, float(plan.predicted["latency_s"]), busy["cpu"], busy["cuda"], plan)


def utilisation(chosen: list[Option], demands: list[Demand]) -> tuple[float, float]:
    """(CPU, GPU) busy fractions of ``chosen`` at the demands' rates (0 without rates)."""
    cpu = sum(d.rate * o.cpu_s for o, d in zip(chosen, demands) if d.rate is not None)
    gpu = sum(d.rate * o.gpu_s for o, d in zip(chosen, demands) if d.rate is not None)
    return cpu, gpu


def expected_latency(o: Option, u_cpu: float, u_gpu: float) -> float:
    """``E[latency]`` of the module docstring (inf when a device is saturated)."""
    if u_cpu >= 1 or u_gpu >= 1:
        return float("inf")
    return o.latency_s + o.cpu_s * u_cpu / (1 - u_cpu) + o.gpu_s * u_gpu / (1 - u_gpu)


def objective_value(chosen: list[Option], demands: list[Demand]) -> float:
    """J of the module docstring for one option per model."""
    u_cpu, u_gpu = utilisation(chosen, demands)
    return sum(d.weight * expected_latency(o, u_cpu, u_gpu) for o, d in zip(chosen, demands))


@dataclass(frozen=True)
class _Partial:
    """A choice for the first models: its sums (the dominance key) and the options."""

    key: tuple  # (memory, U_cpu, U_gpu, sum w*latency, sum w*cpu_s, sum w*gpu_s)
    picks: tuple


def choose(options: list[list[Option]], demands: list[Demand], cap: int, names: list[str]) -> list[Option]:
    """One option per model minimising J with the memories summed under ``cap``
    (first found on ties); PlanError naming the models when no choice fits or keeps up."""
    frontier = [_Partial((0, 0.0, 0.0, 0.0, 0.0, 0.0), ())]
    for opts, d in zip(options, demands):
        grown = [_extend(p, o, d) for p in frontier for o in opts]
        frontier = _pareto([p for p in grown if p.key[0] <= cap and p.key[1] < 1 and p.key[2] < 1])
        if not frontier:
            raise PlanError(_why_none(options, demands, cap, names))
    best = min(frontier, key=lambda p: objective_value(list(p.picks), demands))
    return list(best.picks)


def _extend(p: _Partial, o: Option, d: Demand) -> _Partial:
    r = d.rate or 0.0
    w = d.weight if d.rate is not None else 0.0  # without rates J does not read the busy sums
    m, uc, ug, lat, bc, bg = p.key
    key = (m + o.memory, uc + r * o.cpu_s, ug + r * o.gpu_s, lat + d.weight * o.latency_s,
           bc + w * o.cpu_s, bg + w * o.gpu_s)
    return _Partial(key, p.picks + (o,))


def _pareto(partials: list[_Partial]) -> list[_Partial]:
    """The partials no other one dominates (<= in every key entry, < in one); of equal
    keys the first is kept."""
    partials = sorted(partials, key=lambda p: p.key)  # stable: ties keep their order
    kept: list[_Partial] = []
    for p in partials:
        if not any(all(a <= b for a, b in zip(q.key, p.key)) for q in kept):
            kept.append(p)
    return kept


def _why_none(options, demands, cap, names) -> str:
    from ..importer.summary import human_bytes

    least = [min(o.memory for o in opts) for opts in options]
    if sum(least) > cap:
        needs = ", ".join(f"'{n}' {human_bytes(b)}" for n, b in zip(names, least))
        return (f"the models need at least {human_bytes(sum(least))} of GPU memory together ({needs}), over the "
                f"cap of {human_bytes(cap)}; raise gpu_memory or serve fewer models on this GPU")
    return ("at the given request rates every placement under the cap keeps the CPU or the GPU busy all the "
            "time (utilisation >= 1): the models cannot keep up; lower the rates or serve fewer models")
