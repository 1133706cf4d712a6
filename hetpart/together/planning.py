"""``partition_together(graphs, gpu_memory=...)``: several models placed jointly under one GPU cap.

The models' kernels compete for the GPU's memory and time.  Each model's answer to
"how fast at how much memory" is its *curve*: the ordinary partitioner
(:func:`hetpart.partition`) run at a few candidate caps between the model's floor
(the least GPU memory any plan of it needs: every kernel that may run on the CPU
there) and what its best plan under the whole cap uses.  :func:`.quotas.choose` then
picks one point per model, exactly, minimising the joint objective (rate-weighted
mean latency with GPU/CPU contention, priorities as weights; see :mod:`.quotas`) with
the points' memories summed under the cap.  The cap left over is handed out to the
chosen models in proportion to their plans' memory (headroom; nothing is left idle),
so the quotas sum to the cap.

An explicit quota for a model (``quotas``) is kept as given: that model is planned
once, under its quota, and the rest of the cap is split among the others.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import PlanError, option
from ..importer.summary import human_bytes
from .joint_plan import JointPlan, ModelShare
from .quotas import Demand, Option, choose, expected_latency, objective_value, option_of, utilisation, weight

FRACTIONS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
"""Where between a model's floor and its best plan's memory its curve is sampled."""


def partition_together(graphs, gpu_memory: int | None = None, quotas=None, priorities=None, rates=None, *,
                       objective: str = "latency", profile=None, cost_model=None, stream_weights: bool = False,
                       candidate_caps: Sequence[int] | None = None, progress: bool = False) -> JointPlan:
    """Place every model of ``graphs`` jointly under ``gpu_memory`` bytes of GPU memory.

    ``graphs``: OpGraphs (a list, named by ``graph.name``, or a dict name -> graph).
    ``quotas``, ``priorities``, ``rates``: None, a list in model order, or a dict by
    name (models left out get none / 0 / none); a quota is bytes, a priority an int
    (higher first), a rate expected requests per second (all models or none).
    ``cost_model``: one :class:`~hetpart.partitioner.Costs` for every model, or one per
    model (list or dict); else ``profile`` as in :func:`hetpart.partition`, which also
    gives the default cap (the profiled GPU's memory).  ``candidate_caps`` replaces the
    sampled caps of every model's curve (those between its floor and the cap are used).

    Returns a :class:`JointPlan`: per model its plan, quota and priority; every plan
    predicts at most its quota, the quotas sum to at most the cap.  PlanError names the
    model when a quota is below its floor, or when the models cannot fit together.
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
        floor = _floor(graphs[n], costs[n], stream_weights)
        if n in quotas:
            options.append([_fixed(n, graphs[n], costs[n], quotas[n], floor, kw)])
        else:
            options.append(_curve(n, graphs[n], costs[n], floor, cap - sum(quotas.values()), candidate_caps, kw))
    chosen = choose(options, demands, cap, names)
    shares = _shares(names, chosen, demands, quotas, priorities, rates, cap)
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
        from ..partitioner.planning import _cost_model

        shared = _cost_model(profile)
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


def _floor(graph, costs, stream_weights: bool) -> int:
    """The least GPU memory any plan of ``graph`` needs (weights resident): every kernel
    that may run on the CPU there, the rest (held on CUDA) with their activations."""
    from ..partitioner.capacity import least_gpu
    from ..partitioner.gpu_memory import gpu_memory
    from ..partitioner.problem import build_problem

    if hasattr(costs, "add_graph"):  # unmeasured kernels are predicted with their schedule rule
        costs.add_graph(graph)
    problem = build_problem(graph, costs, (), None, stream_weights)
    return gpu_memory(problem, least_gpu(problem)).total


def _plan(graph, costs, cap: int, kw: dict):
    from ..partitioner import partition

    return partition(graph, gpu_memory=cap, cost_model=costs, **kw)


def _fixed(name: str, graph, costs, quota: int, floor: int, kw: dict) -> Option:
    """The one option of a model with an explicit quota: its plan under the quota, the
    whole quota counted as its memory."""
    if quota < floor:
        raise PlanError(f"model '{name}': its quota of {human_bytes(quota)} is below the {human_bytes(floor)} of "
                        f"GPU memory it needs at least (its kernels held on CUDA and their activations); "
                        f"give it a quota of at least {human_bytes(floor)}")
    o = option_of(_plan(graph, costs, quota, kw), quota)
    return Option(quota, quota, o.latency_s, o.cpu_s, o.gpu_s, o.plan)


def _curve(name: str, graph, costs, floor: int, budget: int, candidate_caps, kw: dict) -> list[Option]:
    """The model's options: plans at caps sampled between its floor and ``budget``
    (the cap left by explicit quotas), one per distinct memory need."""
    if floor > budget:
        raise PlanError(f"model '{name}' needs at least {human_bytes(floor)} of GPU memory (its kernels held on "
                        f"CUDA and their activations), more than the {human_bytes(budget)} left for it; "
                        f"raise {option('gpu_memory')} or lower the other models' quotas")
    if candidate_caps is None:
        top = option_of(_plan(graph, costs, budget, kw), budget)
        caps = sorted({floor + int((top.memory - floor) * f) for f in FRACTIONS[:-1]})
        found = [top]
    else:
        caps = sorted({int(c) for c in candidate_caps if floor <= c <= budget} | {floor})
        found = []
    for c in caps:
        found.append(option_of(_plan(graph, costs, c, kw), c))
    by_memory: dict[int, Option] = {}
    for o in sorted(found, key=lambda o: (o.memory, o.latency_s)):
        by_memory.setdefault(o.memory, o)  # equal memory: the faster plan
    return list(by_memory.values())


def _shares(names, chosen: list[Option], demands, quotas: dict, priorities: dict, rates: dict,
            cap: int) -> list[ModelShare]:
    """Each model's share: its chosen plan, and its quota (an explicit one as given; the
    others their plan's memory plus their part of the cap left over, in proportion to
    that memory, evenly when all are 0)."""
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
                     "memory_bytes": int(o.plan.predicted["gpu_memory_bytes"]), "planned_at_cap": o.cap}
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
