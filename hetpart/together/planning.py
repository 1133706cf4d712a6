"""``partition_together(graphs, gpu_memory=...)``: several models placed jointly under one GPU cap.

The models' kernels compete for the GPU's memory and time.  Each model's answer to
"how fast at how much memory" is its *curve*: the ordinary partitioner
(:func:`hetpart.partition`) run at a few candidate caps between the model's floor
(the least GPU memory any plan of it needs: every kernel that may run on the CPU
there) and what its best plan under the whole cap uses.  A point reserves what its
session will hold (:func:`.footprint.quota_need`: the plan's predicted memory, or the
runtime's per-slot device buffers when those are more).  :func:`.quotas.choose` then
picks one point per model, exactly, minimising the joint objective (rate-weighted
mean latency with GPU/CPU contention, priorities as weights; see :mod:`.quotas`) with
the points' reservations summed under the cap.  The cap left over is handed out to the
chosen models in proportion to their plans' memory (headroom; nothing is left idle),
so the quotas sum to the cap.

An explicit quota for a model (``quotas``) is kept as given: that model gets its
best sampled plan whose need fits the quota, and the rest of the cap is split among
the others.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import PlanError, option
from ..importer.summary import human_bytes
from .footprint import DEFAULT_SLOTS, quota_need
from .joint_plan import JointPlan, ModelShare
from .quotas import Demand, Option, choose, expected_latency, objective_value, option_of, utilisation, weight

FRACTIONS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
"""Where between a model's floor and its best plan's memory its curve is sampled."""


def partition_together(graphs, gpu_memory: int | None = None, quotas=None, priorities=None, rates=None, *,
                       objective: str = "latency", profile=None, cost_model=None, stream_weights: bool = False,
                       candidate_caps: Sequence[int] | None = None, slots: int = DEFAULT_SLOTS,
                       progress: bool = False) -> JointPlan:
    """Place every model of ``graphs`` jointly under ``gpu_memory`` bytes of GPU memory.

    ``graphs``: OpGraphs (a list, named by ``graph.name``, or a dict name -> graph).
    ``quotas``, ``priorities``, ``rates``: None, a list in model order, or a dict by
    name (models left out get none / 0 / none); a quota is bytes, a priority an int
    (higher first), a rate expected requests per second (all models or none).
    ``cost_model``: one :class:`~hetpart.partitioner.Costs` for every model, or one per
    model (list or dict); else ``profile`` as in :func:`hetpart.partition`, which also
    gives the default cap (the profiled GPU's memory).  ``candidate_caps`` replaces the
    sampled caps of every model's curve (those between its floor and the cap are used).
    ``slots``: the session slots each model will be opened with (its quota holds that
    many sets of device buffers, :mod:`.footprint`).

    Returns a :class:`JointPlan`: per model its plan, quota and priority; every plan's
    need (:func:`.footprint.quota_need`, at least its predicted memory) is at most its
    quota, the quotas sum to at most the cap.  PlanError names the model when a quota
    is below what it needs at least, or when the models cannot fit together.
    """
    graphs = _named(graphs)
    names = list(graphs)
    quotas, priorities, rates = (_per_model(v, names, what) for v, what in
                                 ((quotas, "quotas"), (priorities, "priorities"), (rates, "rates")))
    costs = _costs(cost_model, profile, names)
    cap = _cap(gpu_memory, costs)
    _check_inputs(names, quotas, priorities, rates, cap)
    demands = [Demand(weight(int(priorities.get(n) or 0), rates.get(n)), rates.get(n)) for n in names]
    kw = dict(objective=objective, stream_weights=stream_weights, progress=progress)
    options = []
    for n in names:
        curve = _Curve(n, graphs[n], costs[n], kw, slots)
        if n in quotas:
            options.append([curve.within_quota(quotas[n], candidate_caps)])
        else:
            options.append(curve.options(cap - sum(quotas.values()), candidate_caps))
    chosen = choose(options, demands, cap, names)
    shares = _shares(names, chosen, demands, quotas, priorities, rates, cap, slots)
    u_cpu, u_gpu = utilisation(chosen, demands)
    has_rates = bool(rates)
    predicted = {"objective_value": objective_value(chosen, demands),
                 "cpu_utilisation": u_cpu if has_rates else None, "gpu_utilisation": u_gpu if has_rates else None}
    return JointPlan(shares, cap, objective, predicted)


def _named(graphs) -> dict:
    if isinstance(graphs, Mapping):
        named = dict(graphs)
    else:
        named = {}
        for g in graphs:
            if g.name in named:
                raise PlanError(f"two models are named '{g.name}'; pass graphs as a dict name -> graph")
            named[g.name] = g
    if not named:
        raise PlanError("partition_together needs at least one model")
    return named


def _per_model(value, names: list[str], what: str) -> dict:
    """``value`` (None, a list in model order, or a dict by name) as a dict by name."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise PlanError(f"{option(what)} names unknown models {unknown}; the models are {names}")
        return {n: v for n, v in value.items() if v is not None}
    value = list(value)
    if len(value) != len(names):
        raise PlanError(f"{option(what)} has {len(value)} entries for {len(names)} models")
    return {n: v for n, v in zip(names, value) if v is not None}


def _costs(cost_model, profile, names: list[str]) -> dict:
    """The cost model of each model by name."""
    if cost_model is None:
        from ..partitioner import cost_model_for

        shared = cost_model_for(profile)
        return {n: shared for n in names}
    if isinstance(cost_model, Mapping):
        missing = [n for n in names if n not in cost_model]
        if missing:
            raise PlanError(f"{option('cost_model')} has no cost model for {missing}")
        return {n: cost_model[n] for n in names}
    if isinstance(cost_model, (list, tuple)):
        if len(cost_model) != len(names):
            raise PlanError(f"{option('cost_model')} has {len(cost_model)} entries for {len(names)} models")
        return dict(zip(names, cost_model))
    return {n: cost_model for n in names}


def _cap(gpu_memory, costs: dict) -> int:
    if gpu_memory is None:
        from ..partitioner.capacity import default_cap

        gpu_memory = default_cap(next(iter(costs.values())))
    if gpu_memory is None:
        raise PlanError(f"give {option('gpu_memory')}: the GPU memory the models share (bytes); "
                        "the cost model records none")
    if gpu_memory < 0:
        raise PlanError(f"{option('gpu_memory')} must be positive, got {gpu_memory} bytes")
    return int(gpu_memory)


def _check_inputs(names, quotas: dict, priorities: dict, rates: dict, cap: int) -> None:
    for n, q in quotas.items():
        if not isinstance(q, int) or q < 0:
            raise PlanError(f"model '{n}': its quota must be a number of bytes >= 0, got {q!r}")
    for n, p in priorities.items():
        if not isinstance(p, int):
            raise PlanError(f"model '{n}': its priority must be an int (higher runs first), got {p!r}")
    if rates and len(rates) != len(names):
        raise PlanError(f"{option('rates')}: give every model a rate or none (missing: "
                        f"{[n for n in names if n not in rates]})")
    for n, r in rates.items():
        if not isinstance(r, (int, float)) or r <= 0:
            raise PlanError(f"model '{n}': its rate must be requests per second > 0, got {r!r}")
    if sum(quotas.values()) > cap:
        raise PlanError(f"the quotas sum to {human_bytes(sum(quotas.values()))}, over the GPU memory cap of "
                        f"{human_bytes(cap)}; lower a quota or raise {option('gpu_memory')}")


class _Curve:
    """One model's latency-vs-memory curve: its plans at sampled caps, each an
    :class:`~.quotas.Option` reserving its :func:`~.footprint.quota_need`."""

    def __init__(self, name: str, graph, costs, kw: dict, slots: int):
        self.name, self.graph, self.costs, self.kw, self.slots = name, graph, costs, kw, slots
        self.floor = _floor(graph, costs, kw["stream_weights"])
        self._plans: dict[int, Option] = {}

    def at(self, cap: int) -> Option:
        """The model's plan under ``cap`` (predicted memory), as an option."""
        if cap not in self._plans:
            from ..partitioner import partition

            plan = partition(self.graph, gpu_memory=cap, cost_model=self.costs, **self.kw)
            self._plans[cap] = option_of(plan, cap, quota_need(plan, self.slots))
        return self._plans[cap]

    def caps(self, budget: int, candidate_caps) -> list[int]:
        """The caps sampled between the floor and ``budget``: ``candidate_caps``, or
        :data:`FRACTIONS` of the way to the memory of the best plan under ``budget``."""
        if candidate_caps is not None:
            return sorted({int(c) for c in candidate_caps if self.floor <= c <= budget} | {self.floor})
        top = int(self.at(budget).plan.predicted["gpu_memory_bytes"])
        return sorted({self.floor + int((top - self.floor) * f) for f in FRACTIONS} | {budget})

    def options(self, budget: int, candidate_caps, why: str = "") -> list[Option]:
        """The sampled plans whose need fits ``budget``, one per distinct need (the
        faster); PlanError naming the model when none does."""
        found = [self.at(c) for c in self.caps(budget, candidate_caps)] if budget >= self.floor else [
            self.at(self.floor)]
        by_memory: dict[int, Option] = {}
        for o in sorted(found, key=lambda o: (o.memory, o.latency_s)):
            if o.memory <= budget:
                by_memory.setdefault(o.memory, o)
        if not by_memory:
            need = min(o.memory for o in found)
            raise PlanError(f"model '{self.name}' needs at least {human_bytes(need)} of GPU memory (its kernels held "
                            "on CUDA, their activations and its session's buffers), " + (why or (
                                f"more than the {human_bytes(budget)} left for it; raise {option('gpu_memory')} "
                                "or lower the other models' quotas")))
        return list(by_memory.values())

    def within_quota(self, quota: int, candidate_caps) -> Option:
        """The fastest sampled plan whose need fits ``quota``, the whole quota reserved."""
        o = min(self.options(quota, candidate_caps, f"above its quota of {human_bytes(quota)}; give it a "
                             "larger quota"), key=lambda o: o.latency_s)
        return Option(o.cap, quota, o.latency_s, o.cpu_s, o.gpu_s, o.plan)


def _floor(graph, costs, stream_weights: bool) -> int:
    """The least predicted GPU memory of any plan of ``graph`` (weights resident): every
    kernel that may run on the CPU there, the rest (held on CUDA) with their activations."""
    from ..partitioner.capacity import least_gpu
    from ..partitioner.gpu_memory import gpu_memory
    from ..partitioner.problem import build_problem

    problem = build_problem(graph, costs, (), None, stream_weights)  # gives the graph to costs
    return gpu_memory(problem, least_gpu(problem)).total


def _shares(names, chosen: list[Option], demands, quotas: dict, priorities: dict, rates: dict,
            cap: int, slots: int) -> list[ModelShare]:
    """Each model's share: its chosen plan, and its quota (an explicit one as given; the
    others their plan's memory plus their part of the cap left over, in proportion to
    that reservation, evenly when all are 0)."""
    auto = [i for i, n in enumerate(names) if n not in quotas]
    left = cap - sum(o.memory for o in chosen)
    base = [chosen[i].memory for i in auto]
    extra = _apportion(left, base)
    quota = dict(quotas)
    for i, e in zip(auto, extra):
        quota[names[i]] = chosen[i].memory + e
    u_cpu, u_gpu = utilisation(chosen, demands)
    shares = []
    for n, o, d in zip(names, chosen, demands):
        predicted = {"latency_s": o.latency_s, "expected_latency_s": expected_latency(o, u_cpu, u_gpu),
                     "cpu_busy_s": o.cpu_s, "gpu_busy_s": o.gpu_s, "weight": d.weight,
                     "memory_bytes": int(o.plan.predicted["gpu_memory_bytes"]), "planned_at_cap": o.cap,
                     "need_bytes": quota_need(o.plan, slots)}
        shares.append(ModelShare(n, o.plan, int(quota[n]), int(priorities.get(n) or 0), rates.get(n), predicted))
    return shares


def _apportion(total: int, base: list[int]) -> list[int]:
    """``total`` bytes split in proportion to ``base`` (evenly when it sums to 0), as
    ints summing to exactly ``total``; [] when there is nobody to give them to."""
    if not base or total <= 0:
        return [0] * len(base)
    s = sum(base)
    raw = [total * b // s for b in base] if s else [total // len(base)] * len(base)
    raw[0] += total - sum(raw)
    return raw
