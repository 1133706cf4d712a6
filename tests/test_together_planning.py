"""Joint placement of several models under one GPU memory cap (``hetpart.partition_together``).

Random tiny graphs with random costs (no TVM).  The references are computed here,
independently of hetpart.together: each plan's GPU memory by the slow reference model
(tests/gpu_memory_reference.py), the floor of a model by trying all its assignments,
the quota a plan needs (its predicted memory, or what its session allocates: resident
weights + 2 slots of 64-byte-aligned device buffers for every tensor crossing a CUDA
partition's boundary), and the joint objective (docs: rate-weighted mean latency,
processor-sharing contention, each priority level doubling a weight) written out
again; the optimum by brute force over a quota grid and over every combination of
per-model plans.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hetpart
from hetpart.errors import PlanError
from hetpart.partitioner import partition
from hetpart.partitioner.random_cases import random_case
from hetpart.together import JointPlan, partition_together
from gpu_memory_reference import gpu_bytes, plan_gpu_bytes
from partition_graphs import TOGETHER_SHAPE, models_of, plannable

SETTINGS = dict(derandomize=True, deadline=None, database=None, max_examples=25)


def floor_by_brute_force(graph, costs) -> int:
    """The least GPU memory of any allowed assignment of ``graph``."""
    ids = list(graph.kernels)
    allowed = [[d for d in ("cpu", "cuda") if costs.supports(graph.kernels[k], d)[0]] for k in ids]
    return min(gpu_bytes(graph, dict(zip(ids, devices))) for devices in itertools.product(*allowed))


def session_need(graph, plan, slots: int = 2) -> int:
    """What a session of ``plan`` allocates on the GPU: resident weights of the CUDA
    kernels, every tensor made and read only inside one CUDA partition, and per slot
    one aligned buffer per tensor that enters or leaves a CUDA partition (made
    elsewhere and read inside, or made inside and read elsewhere or returned)."""
    part = {k: p.name for p in plan.partitions for k in p.kernels}
    cuda = {p.name for p in plan.partitions if p.device == "cuda"}
    if not cuda:
        return 0
    crossing = set()
    for t in graph.tensors.values():
        made_in = part.get(t.producer)
        read_in = {part[c] for c in t.consumers}
        if any(r in cuda and r != made_in for r in read_in):
            crossing.add(t.name)
        if made_in in cuda and (t.is_output or any(r != made_in for r in read_in)):
            crossing.add(t.name)
    weights = sum(graph.kernels[k].param_bytes for k in part if part[k] in cuda)
    inside = sum(t.nbytes for t in graph.tensors.values() if part.get(t.producer) in cuda and not t.is_output
                 and all(part[c] == part[t.producer] for c in t.consumers))
    return weights + inside + slots * sum(-(-max(graph.tensors[t].nbytes, 1) // 64) * 64 for t in crossing)


def need(graph, plan) -> int:
    return max(plan_gpu_bytes(graph, plan), session_need(graph, plan))


def busy(plan, device) -> float:
    return sum(p.predicted_s for p in plan.partitions if p.device == device)


def reference_objective(plans: list, priorities: list[int], rates: list[float] | None) -> float:
    """J = sum w_i E[latency_i]; w_i = rate_i * 2**priority_i; E[latency] = latency +
    busy_d * U_d / (1 - U_d) over both devices, U_d = sum rate_i * busy_i,d."""
    r = rates or [0.0] * len(plans)
    u = {d: sum(ri * busy(p, d) for ri, p in zip(r, plans)) for d in ("cpu", "cuda")}
    if any(v >= 1 for v in u.values()):
        return math.inf
    total = 0.0
    for p, pr, ri in zip(plans, priorities, rates or [1.0] * len(plans)):
        stretch = sum(busy(p, d) * u[d] / (1 - u[d]) for d in u)
        total += ri * 2.0 ** pr * (p.predicted["latency_s"] + stretch)
    return total


def plan_at(graph, costs, cap, cache):
    key = (id(graph), cap)
    if key not in cache:
        try:
            cache[key] = partition(graph, cost_model=costs, gpu_memory=cap, progress=False, stream_weights=False)
        except PlanError:
            cache[key] = None
    return cache[key]


def check_joint(joint: JointPlan, graphs, cap: int):
    """Every plan fits its quota (reference memory model and session buffers), the
    quotas fit the cap."""
    assert sum(joint.quotas.values()) <= cap
    for m in joint.models:
        assert need(graphs[m.name], m.plan) <= m.quota_bytes, m.name
        assert m.memory_bytes <= m.quota_bytes


# --- properties --------------------------------------------------------------------------
@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 3), share=st.floats(0.0, 1.2))
def test_every_plan_fits_its_quota_and_the_quotas_fit_the_cap(seed, n, share):
    graphs, costs = models_of(seed, n)
    if not plannable(graphs, costs):
        return
    floor_plans = {k: partition(graphs[k], cost_model=costs[k], stream_weights=False, gpu_memory=floor_by_brute_force(graphs[k], costs[k]),
                                progress=False) for k in graphs}
    full = sum(sum(k.param_bytes for k in g.kernels.values()) + sum(t.nbytes for t in g.tensors.values())
               for g in graphs.values())
    cap = int(sum(need(graphs[k], p) for k, p in floor_plans.items()) + share * full)
    joint = partition_together(graphs, gpu_memory=cap, cost_model=costs)
    check_joint(joint, graphs, cap)
    assert joint.names == list(graphs)


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 3), rated=st.booleans(),
       priorities=st.lists(st.integers(0, 2), min_size=3, max_size=3))
def test_the_split_is_optimal_over_a_quota_grid(seed, n, rated, priorities):
    """Brute force 1: every quota vector on a grid summing under the cap, each model
    planned alone at its quota -- the joint plan is at least as good.  Brute force 2:
    every combination of the per-model plans at the grid's caps (and the floor) whose
    memories fit together -- the joint plan's objective is exactly their best."""
    graphs, costs = models_of(seed, n)
    if not plannable(graphs, costs):
        return
    names = list(graphs)
    priorities = priorities[:n]
    full = max(sum(k.param_bytes for k in g.kernels.values()) + sum(t.nbytes for t in g.tensors.values())
               for g in graphs.values())
    cap = int(0.6 * full * n)
    grid = sorted({int(cap * f) for f in (0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)})
    floors = [floor_by_brute_force(graphs[k], costs[k]) for k in names]
    cache = {}
    options = [[p for p in (plan_at(graphs[k], costs[k], c, cache) for c in sorted({f, *grid}) if f <= c <= cap)
                if p is not None] for k, f in zip(names, floors)]
    fitting = [c for c in itertools.product(*options) if sum(need(graphs[k], p) for k, p in zip(names, c)) <= cap]
    if not fitting:
        with pytest.raises(PlanError):
            partition_together(graphs, gpu_memory=cap, cost_model=costs, candidate_caps=grid)
        return
    # rates: a load that keeps the busier device around half busy under all-alone plans
    rates = None
    if rated:
        alone = [plan_at(graphs[k], costs[k], cap, {}) for k in names]
        rates = [0.4 / max(n * max(busy(p, "cpu"), busy(p, "cuda")), 1e-9) for p in alone]
    try:
        joint = partition_together(graphs, gpu_memory=cap, cost_model=costs, candidate_caps=grid,
                                   priorities=priorities, rates=rates)
    except PlanError as e:
        assert "cannot keep up" in str(e)
        return
    check_joint(joint, graphs, cap)
    ours = reference_objective([m.plan for m in joint.models], priorities, rates)
    assert ours == pytest.approx(joint.predicted["objective_value"], rel=1e-9)

    on_grid = math.inf
    for quotas in itertools.product(grid, repeat=n):
        if sum(quotas) <= cap:
            plans = [plan_at(graphs[k], costs[k], q, cache) for k, q in zip(names, quotas)]
            if None not in plans and all(need(graphs[k], p) <= q for k, p, q in zip(names, plans, quotas)):
                on_grid = min(on_grid, reference_objective(plans, priorities, rates))
    assert ours <= on_grid * (1 + 1e-9)

    exact = min(reference_objective(list(c), priorities, rates) for c in fitting)
    assert ours == pytest.approx(exact, rel=1e-9)


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), share=st.floats(0.0, 1.0))
def test_an_explicit_quota_is_kept_and_the_others_share_the_rest(seed, share):
    graphs, costs = models_of(seed, 3)
    if not plannable(graphs, costs):
        return
    floors = {k: need(graphs[k], partition(graphs[k], cost_model=costs[k], progress=False, stream_weights=False,
                                           gpu_memory=floor_by_brute_force(graphs[k], costs[k]))) for k in graphs}
    full = sum(k.param_bytes for k in graphs["m0"].kernels.values()) + sum(
        t.nbytes for t in graphs["m0"].tensors.values())
    quota = floors["m0"] + int(share * full)
    cap = sum(floors.values()) + quota + full
    joint = partition_together(graphs, gpu_memory=cap, cost_model=costs, quotas={"m0": quota})
    check_joint(joint, graphs, cap)
    assert joint.share("m0").quota_bytes == quota
    assert joint.share("m0").plan.gpu_memory_cap <= quota


def reference_objective_of(options, demands) -> float:
    """The objective of the docs over bare options (latency, busy seconds per device)."""
    rated = [d for d in demands if d.rate is not None]
    u_cpu = sum(d.rate * o.cpu_s for o, d in zip(options, demands) if d.rate is not None)
    u_gpu = sum(d.rate * o.gpu_s for o, d in zip(options, demands) if d.rate is not None)
    if rated and (u_cpu >= 1 or u_gpu >= 1):
        return math.inf
    return sum(d.weight * (o.latency_s + o.cpu_s * u_cpu / (1 - u_cpu) + o.gpu_s * u_gpu / (1 - u_gpu))
               for o, d in zip(options, demands))


option_lists = st.lists(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 100), st.integers(0, 100),
                                           st.integers(0, 100)), min_size=1, max_size=5), min_size=1, max_size=4)


@settings(derandomize=True, deadline=None, database=None, max_examples=300)
@given(raw=option_lists, cap=st.integers(0, 300), rated=st.booleans(), seed=st.integers(0, 1000))
def test_the_search_finds_the_best_combination_of_options(raw, cap, rated, seed):
    """The exact search (:func:`hetpart.together.quotas.choose`) against every
    combination of bare options, with contention near saturation."""
    import random

    from hetpart.together.quotas import Demand, Option, choose

    rng = random.Random(seed)
    options = [[Option(m, m, (lat + cpu + gpu) * 1e-3, cpu * 1e-3, gpu * 1e-3) for m, lat, cpu, gpu in opts]
               for opts in raw]
    demands = [Demand(rng.choice((1.0, 2.0, 4.0)) * (r := rng.uniform(1, 6) if rated else 1.0),
                      r if rated else None) for _ in options]
    fitting = [c for c in itertools.product(*options) if sum(o.memory for o in c) <= cap]
    best = min((reference_objective_of(c, demands) for c in fitting), default=math.inf)
    names = [f"m{i}" for i in range(len(options))]
    if best == math.inf:
        with pytest.raises(PlanError):
            choose(options, demands, cap, names)
        return
    chosen = choose(options, demands, cap, names)
    assert sum(o.memory for o in chosen) <= cap
    assert reference_objective_of(chosen, demands) == pytest.approx(best, rel=1e-12)


# --- errors ------------------------------------------------------------------------------
def graphs_with_floor(seed_from=0):
    """Two models, the first with a kernel held on CUDA (a floor above 0)."""
    for seed in range(seed_from, seed_from + 500):
        graphs, costs = models_of(seed, 2)
        if plannable(graphs, costs) and floor_by_brute_force(graphs["m0"], costs["m0"]) > 0:
            return graphs, costs
    raise AssertionError("no random case with a floor found")


def test_a_quota_below_the_models_floor_is_refused_naming_the_model():
    graphs, costs = graphs_with_floor()
    floor = floor_by_brute_force(graphs["m0"], costs["m0"])
    with pytest.raises(PlanError, match="model 'm0' needs at least .* above its quota"):
        partition_together(graphs, gpu_memory=10 * floor, cost_model=costs, quotas={"m0": floor - 1})


def test_quotas_over_the_cap_are_refused():
    graphs, costs = models_of(3, 2)
    with pytest.raises(PlanError, match="quotas sum to"):
        partition_together(graphs, gpu_memory=1000, cost_model=costs, quotas=[600, 600])


def test_models_whose_floors_exceed_the_cap_are_refused_naming_them():
    graphs, costs = graphs_with_floor()
    floor = floor_by_brute_force(graphs["m0"], costs["m0"])
    with pytest.raises(PlanError, match="'m0'"):
        partition_together(graphs, gpu_memory=floor - 1, cost_model=costs)


def test_bad_arguments_are_plan_errors():
    graphs, costs = models_of(3, 2)
    with pytest.raises(PlanError, match="unknown models"):
        partition_together(graphs, gpu_memory=1000, cost_model=costs, quotas={"nope": 1})
    with pytest.raises(PlanError, match="every model a rate or none"):
        partition_together(graphs, gpu_memory=1000, cost_model=costs, rates={"m0": 1.0})
    with pytest.raises(PlanError, match="2 entries for 3 models|3 entries for 2 models"):
        partition_together(graphs, gpu_memory=1000, cost_model=costs, priorities=[0, 1, 2])
    g = next(iter(graphs.values()))
    with pytest.raises(PlanError, match="two models are named"):
        partition_together([g, g], gpu_memory=1000, cost_model=costs["m0"])


def test_a_higher_priority_wins_the_memory_both_want():
    """Two copies of one model, a cap that fits one fast plan and one slow one but not
    two fast ones: the model of higher priority gets the fast plan, whichever it is."""
    for seed in range(300):
        (g, c) = random_case(seed, TOGETHER_SHAPE)
        if not plannable({"a": g}, {"a": c}):
            continue
        fast = partition(g, cost_model=c, gpu_memory=1 << 40, progress=False, stream_weights=False)
        floor = floor_by_brute_force(g, c)
        slow = partition(g, cost_model=c, gpu_memory=floor, progress=False, stream_weights=False)
        if need(g, fast) > need(g, slow) and fast.predicted["latency_s"] < 0.5 * slow.predicted["latency_s"]:
            break
    else:
        raise AssertionError("no random case where the GPU pays")
    cap = need(g, fast) + need(g, slow)
    for first in (0, 1):
        joint = partition_together({"a": g, "b": g}, gpu_memory=cap, cost_model=c,
                                   priorities={"a": 1 - first, "b": first},
                                   candidate_caps=[floor, int(fast.predicted["gpu_memory_bytes"])])
        winner, loser = ("b", "a") if first else ("a", "b")
        assert joint.share(winner).plan.predicted["latency_s"] == pytest.approx(fast.predicted["latency_s"])
        assert joint.share(loser).plan.predicted["latency_s"] == pytest.approx(slow.predicted["latency_s"])
        check_joint(joint, {"a": g, "b": g}, cap)


# --- the file ----------------------------------------------------------------------------
def test_a_joint_plan_saves_and_loads_equal(tmp_path):
    graphs, costs = models_of(11, 2)
    joint = partition_together(graphs, gpu_memory=1 << 16, cost_model=costs, priorities=[1, 0], rates=[10.0, 20.0])
    path = joint.save(tmp_path / "joint.json")
    again = JointPlan.load(path, graphs)
    assert again.to_json() == joint.to_json()
    assert again.models[0].plan.graph is graphs["m0"]
    assert hetpart.JointPlan is JointPlan


def test_a_joint_plan_file_whose_plan_breaks_its_quota_is_refused(tmp_path):
    graphs, costs = graphs_with_floor()
    joint = partition_together(graphs, gpu_memory=1 << 20, cost_model=costs)
    doc = joint.to_json()
    doc["models"][0]["quota_bytes"] = joint.models[0].memory_bytes - 1
    with pytest.raises(PlanError, match="over its quota"):
        JointPlan.from_json(doc)
