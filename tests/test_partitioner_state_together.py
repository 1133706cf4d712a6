"""A plan made with ``state=`` keeps each pair's writer and every reader of its input on
one device, in every objective, since the runtime refuses to bind anything else
(:func:`hetpart.runtime.state.resolve_pairs`).

The cases are built so the *unconstrained* optimum splits the pair (the writer much
faster on CUDA, the readers much faster on the CPU, a cheap link): the precondition is
checked by brute force from the cost table, and the plans by the runtime's own binding
check -- on the partitions of each plan, and on a simulated compile of a real ONNX
model whose steps are compared with ONNX Runtime's.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hetpart.compiler.artifact import CompiledModel, PartitionArtifact, TensorSpec
from hetpart.errors import PlanError
from hetpart.partitioner import explain, partition, render_plan
from hetpart.partitioner.costs import TableCosts
from hetpart.partitioner.random_cases import CaseShape, random_case
from hetpart.runtime.state import resolve_pairs
from partition_graphs import US, make_graph, table

SETTINGS = dict(derandomize=True, deadline=None, database=None)
FAST, SLOW = 1 * US, 2000 * US
"""A kernel's time on the device it suits, and on the other one."""


# --- independent references -------------------------------------------------------------
def pair_kernels(graph, out: str, inp: str) -> tuple[str, tuple[str, ...]]:
    """(writer of ``out``, readers of ``inp``), from the graph."""
    tensor = dict(zip(graph.model_output_names, graph.outputs))[out]
    return graph.tensors[tensor].producer, tuple(graph.tensors[inp].consumers)


def linear_cost(graph, costs, a, out: str, inp: str) -> float:
    """Compute plus copies of ``a``, from first principles: ``inp`` starts on the device of
    ``out``'s writer, ``out`` never goes to the host, every other tensor as usual."""
    writer, _ = pair_kernels(graph, out, inp)
    kept = dict(zip(graph.model_output_names, graph.outputs))[out]
    total = sum(costs.kernel_cost(graph.kernels[k], d) for k, d in a.items())
    for t in graph.tensors.values():
        src = a[writer] if t.name == inp else "cpu" if t.producer is None else a[t.producer]
        needed = {a[c] for c in t.consumers} | ({"cpu"} if t.is_output and t.name != kept else set())
        total += sum(costs.transfer_cost(t.nbytes, src, d) for d in needed if d != src)
    return total


def brute_force(graph, costs, out: str, inp: str, together: bool) -> tuple[float, dict]:
    """The least :func:`linear_cost` over every assignment (``together``: only those that
    run ``inp``'s readers on the device of ``out``'s writer), and its assignment."""
    writer, readers = pair_kernels(graph, out, inp)
    ids, best = list(graph.kernels), (float("inf"), None)
    for devices in itertools.product(("cpu", "cuda"), repeat=len(ids)):
        a = dict(zip(ids, devices))
        if not all(costs.supports(graph.kernels[k], d)[0] for k, d in a.items()):
            continue
        if together and any(a[r] != a[writer] for r in readers):
            continue
        best = min(best, (linear_cost(graph, costs, a, out, inp), a), key=lambda x: x[0])
    return best


def compiled_view(plan, graph) -> CompiledModel:
    """The plan's partitions as a compiled model shows them to the runtime (names,
    devices, kernels, boundary tensors), without building them: what
    :func:`resolve_pairs` reads."""
    def spec(t):
        return TensorSpec(t, tuple(graph.tensors[t].shape), graph.tensors[t].dtype)

    parts = [PartitionArtifact(p.name, p.device, p.device, {}, "", [spec(t) for t in p.inputs],
                               [spec(t) for t in p.outputs], list(p.kernels)) for p in plan.partitions]
    return CompiledModel(plan, parts, [spec(t) for t in graph.inputs], [spec(t) for t in graph.outputs],
                         output_names=list(graph.model_output_names))


def assert_kept_together(plan, graph, out: str, inp: str) -> None:
    writer, readers = pair_kernels(graph, out, inp)
    devices = {k: plan.assignment[k] for k in (writer, *readers)}
    assert len(set(devices.values())) == 1, f"{plan.objective} splits {out} -> {inp}: {devices}"
    (bound,) = resolve_pairs(compiled_view(plan, graph), {out: inp})  # StateError if the runtime refuses
    assert bound.side == plan.assignment[writer]


# --- random graphs --------------------------------------------------------------------------
def split_case(seed: int, n: int, overhead: float):
    """A random case with state ``out -> "x0"`` whose unconstrained optimum splits the pair:
    ``(graph, costs, out)``, or None when the graph has no such pair (x0's readers also
    write every output)."""
    graph, costs = random_case(seed, CaseShape(kernels=n, max_elements=1 << 10, unsupported_share=0.0,
                                               overhead_s=overhead))
    readers = graph.tensors["x0"].consumers
    outs = [t for t in graph.outputs if graph.tensors[t].producer not in readers]
    if not outs:
        return None
    out = outs[-1]
    tensors = dict(graph.tensors)
    tensors["x0"] = dataclasses.replace(tensors["x0"], shape=tensors[out].shape)
    graph = dataclasses.replace(graph, tensors=tensors)
    seconds = dict(costs.seconds)
    seconds[graph.tensors[out].producer] = {"cpu": SLOW, "cuda": FAST}
    seconds.update({r: {"cpu": FAST, "cuda": SLOW} for r in readers})
    return graph, dataclasses.replace(costs, seconds=seconds), out


@settings(max_examples=40, **SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 9), overhead=st.sampled_from([0.0, 20e-6]),
       capped=st.booleans(), stream=st.booleans())
def test_every_objective_keeps_a_state_pair_together(seed, n, overhead, capped, stream):
    case = split_case(seed, n, overhead)
    assume(case is not None)
    graph, costs, out = case
    writer, readers = pair_kernels(graph, out, "x0")
    free_s, free = brute_force(graph, costs, out, "x0", together=False)
    assert {free[k] for k in (writer, *readers)} == {"cpu", "cuda"}  # the precondition: split pays
    cap = sum(k.param_bytes for k in graph.kernels.values()) // 2 if capped else None
    for objective in ("latency", "makespan"):
        plan = partition(graph, objective, cost_model=costs, progress=False, gpu_memory=cap, stream_weights=stream,
                         state={out: "x0"})
        assert_kept_together(plan, graph, out, "x0")
        if objective == "latency" and not overhead and not capped:  # the cut: exact under the constraint
            tied_s, _ = brute_force(graph, costs, out, "x0", together=True)
            assert tied_s > free_s
            assert plan.predicted["latency_s"] == pytest.approx(tied_s, rel=1e-9, abs=1e-12)
    with pytest.raises(PlanError, match=f"'{out}' -> 'x0'.*latency"):
        partition(graph, "throughput", cost_model=costs, progress=False, state={out: "x0"})


# --- pins and capabilities ---------------------------------------------------------------------
# node_0 writes t_node_0 (read by node_1) and reads the state x; node_1 writes "out", x's pair;
# node_2 also reads x.
READERS = {"node_0": (("add",), ("x",)), "node_2": (("add",), ("x",)), "node_1": (("add",), ("t_node_0",))}


def _pinned_case():
    g = make_graph(READERS, outputs=("out", "t_node_2"))
    return g, table(g, {"node_0": 50, "node_1": 50, "node_2": 50}, {"node_0": 5, "node_1": 5, "node_2": 5})


def test_a_pin_contradicting_a_state_pair_names_the_kernels_and_the_pins():
    g, costs = _pinned_case()
    with pytest.raises(PlanError) as e:
        partition(g, cost_model=costs, progress=False, state={"out": "x"}, pins=["node_1=cuda", "node_2=cpu"])
    text = str(e.value)
    assert "'out' -> 'x'" in text
    assert "node_1 (writes 'out') must run on cuda: pinned by --pin node_1=cuda" in text
    assert "node_2 (reads 'x') must run on cpu: pinned by --pin node_2=cpu" in text
    assert "pin them to one device" in text


def test_a_capability_contradicting_a_state_pair_says_so():
    g, _ = _pinned_case()
    costs = TableCosts({"node_0": {"cpu": 50 * US, "cuda": 5 * US}, "node_1": {"cuda": 5 * US},
                        "node_2": {"cpu": 50 * US}})
    with pytest.raises(PlanError, match=r"node_1 \(writes 'out'\) must run on cuda: cannot run on cpu.*"
                                        r"node_2 \(reads 'x'\) must run on cpu: cannot run on cuda.*state="):
        partition(g, cost_model=costs, progress=False, state={"out": "x"})


def test_one_pin_holds_the_whole_pair_and_the_report_says_why():
    """Pinning a reader to the CPU holds the writer and the other reader there; the
    constraints, the report and explain all say the pair was kept together."""
    g, costs = _pinned_case()
    plan = partition(g, cost_model=costs, progress=False, state={"out": "x"}, pins=["node_2=cpu"])
    assert {plan.assignment[k] for k in ("node_0", "node_1", "node_2")} == {"cpu"}
    assert "with node_2 (pinned by --pin node_2=cpu)" in plan.constraints["node_1"]
    assert "kept together on cpu (writer node_1; readers node_0, node_2)" in render_plan(plan)
    assert "move together" in explain(plan)


def test_a_given_assignment_that_splits_a_pair_is_a_plan_error():
    """plan_for_assignment (the benchmark's baselines and candidates) refuses a split
    placement rather than return a plan the runtime cannot bind."""
    from hetpart.partitioner import plan_for_assignment
    from hetpart.partitioner.problem import build_problem

    g, costs = _pinned_case()
    problem = build_problem(g, costs, state={"out": "x"})
    with pytest.raises(PlanError, match="'out' -> 'x'") as e:
        plan_for_assignment(problem, {"node_0": "cuda", "node_1": "cuda", "node_2": "cpu"})
    assert "node_1 (writes 'out') on cuda" in str(e.value) and "node_2 (reads 'x') on cpu" in str(e.value)


def test_the_memory_rules_and_baselines_keep_a_pair_together():
    """The llama.cpp- and ORT-style rules and the greedy baseline decide kernel by kernel;
    with state, a pair's kernels still land on one device."""
    from hetpart.partitioner.baselines import BASELINES
    from hetpart.partitioner.memory_rules import RULES
    from hetpart.partitioner.problem import build_problem

    g = make_graph(READERS, outputs=("out", "t_node_2"), params={"node_0": 4000, "node_1": 4000, "node_2": 4000})
    costs = table(g, {"node_0": 50, "node_1": 1, "node_2": 1}, {"node_0": 5, "node_1": 500, "node_2": 5})
    for cap in (None, 30_000, 20_000):
        problem = build_problem(g, costs, gpu_memory=cap, state={"out": "x"})
        for name, rule in [*RULES.items(), *BASELINES.items()]:
            a = rule(problem)
            if a is not None:
                assert len({a[k] for k in ("node_0", "node_1", "node_2")}) == 1, (name, cap, a)


# --- a real model, compiled in simulation, run with its state bound ----------------------------
def _ort_steps(model, steps, state):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = []
    for feeds in steps:
        got = dict(zip(names, sess.run(None, {**feeds, "past": state})))
        out.append(got)
        state = got["present"]
    return out


def test_the_runtime_binds_the_state_of_every_objectives_compiled_plan():
    """Two kernels read the cache (the Where writing ``present``, a ReduceMax); the cost
    table makes the unconstrained optimum put the writer on the GPU and the other reader
    on the CPU.  Every objective's plan compiles (simulated GPU) into a model the
    runtime binds, and its steps equal ONNX Runtime's with the cache fed back."""
    from hetpart import compiler, importer
    from hetpart.runtime import Session
    from state_models import CACHE, D, two_reader_cache_model

    model = two_reader_cache_model()
    graph = importer.load(model)
    writer, readers = pair_kernels(graph, "present", "past")
    assert set(readers) - {writer}, "the model must read the cache in a kernel that does not write it"
    seconds = {k: {"cpu": 20 * US, "cuda": 20 * US} for k in graph.kernels}
    seconds[writer] = {"cpu": SLOW, "cuda": FAST}
    seconds.update({r: {"cpu": FAST, "cuda": SLOW} for r in readers if r != writer})
    costs = TableCosts(seconds)
    _, free = brute_force(graph, costs, "present", "past", together=False)
    assert len({free[k] for k in (writer, *readers)}) == 2  # the precondition: split pays
    rng = np.random.default_rng(5)
    steps = [{"x": rng.standard_normal((1, D)).astype(np.float32), "position": np.array([k], np.int64)}
             for k in range(3)]
    init = rng.standard_normal((1, CACHE, D)).astype(np.float32)
    want = _ort_steps(model, steps, init)
    built = {}
    for objective in ("latency", "makespan"):
        plan = partition(graph, objective, cost_model=costs, progress=False, state={"present": "past"})
        assert_kept_together(plan, graph, "present", "past")
        key = tuple(tuple(p.kernels) for p in plan.partitions), tuple(sorted(plan.assignment.items()))
        if key in built:
            continue
        built[key] = compiled = compiler.compile(plan, simulate=True, progress=False)
        with Session(compiled, state={"present": "past"}, initial_state={"past": init}) as s:
            for k, feeds in enumerate(steps):
                got = s.run(feeds)
                for name in ("y", "z"):
                    np.testing.assert_allclose(got[name], want[k][name], rtol=1e-4, atol=1e-5,
                                               err_msg=f"{objective} step {k} {name}")
            np.testing.assert_allclose(s.read_state("present"), want[-1]["present"], rtol=1e-4, atol=1e-5)


def test_pairs_sharing_a_reader_are_held_as_one_group():
    """A layer's key and value caches read by one attention kernel: node_0 reads both
    states k and v; node_1 writes k's pair, node_2 v's.  One pin on node_2 holds all
    three kernels (both pairs) on its device, in every objective."""
    from hetpart.importer.op_graph import Kernel, OpGraph, Tensor
    from hetpart.partitioner.problem import build_problem

    def t(name, producer, consumers, is_input=False, is_output=False):
        return Tensor(name, (1000,), "float32", producer, consumers, is_input, is_output)

    tensors = {"k": t("k", None, ("node_0",), True), "v": t("v", None, ("node_0",), True),
               "h": t("h", "node_0", ("node_1", "node_2")), "k2": t("k2", "node_1", (), is_output=True),
               "v2": t("v2", "node_2", (), is_output=True)}
    kernels = {kid: Kernel(kid, f"fused_{kid}", ("add",), "injective", ins, outs, 0, 0, 0, 0, f"sig_{kid}", i)
               for i, (kid, ins, outs) in enumerate([("node_0", ("k", "v"), ("h",)), ("node_1", ("h",), ("k2",)),
                                                     ("node_2", ("h",), ("v2",))])}
    g = OpGraph("kv", kernels, tensors, ("k", "v"), ("k2", "v2"))
    costs = table(g, {"node_0": 50, "node_1": 1, "node_2": 1}, {"node_0": 1, "node_1": 50, "node_2": 50})
    state = {"k2": "k", "v2": "v"}
    (group,) = build_problem(g, costs, state=state).same_device
    assert set(group.kernels) == {"node_0", "node_1", "node_2"} and len(group.pairs) == 2
    for objective in ("latency", "makespan"):
        plan = partition(g, objective, cost_model=costs, progress=False, state=state, pins=["node_2=cuda"])
        assert set(plan.assignment.values()) == {"cuda"}, objective
        for out, inp in state.items():
            assert_kept_together(plan, g, out, inp)
