"""Device-resident state (hetpart.runtime.state, issue 19): outputs kept on their device
as the next run's inputs, in simulation (the "GPU" partitions built for the CPU).

References: numpy for the synthetic partitions; ONNX Runtime's N steps, the cache fed
back by hand, for compiled ONNX graphs.  Never hetpart itself."""

from __future__ import annotations

import numpy as np
import pytest

from hetpart.compiler.artifact import CompiledModel, TensorSpec
from hetpart.errors import RuntimeFailure, StateError
from hetpart.runtime import Session
from hetpart.runtime.synthetic import build_partition, plan_of
from state_cases import (N, STEPS, attention_plan, ort_steps, state_inputs, step_partition, synthetic_state_model,
                         tensor_specs)
from state_models import CACHE, D, cache_step_model


@pytest.fixture(scope="module")
def on_gpu():
    return synthetic_state_model("cuda", reader="cpu")


@pytest.fixture(scope="module")
def on_cpu():
    return synthetic_state_model("cpu", reader="cuda")


@pytest.mark.parametrize("which", ["on_gpu", "on_cpu"])
def test_bound_steps_equal_steps_fed_back_through_numpy(request, which):
    model = request.getfixturevalue(which)
    init, xs = state_inputs(1)
    with Session(model) as plain:  # the state fed back by hand
        state, want = init, []
        for x in xs:
            out = plain.run({"x": x, "past": state})
            want.append(out["z"])
            state = out["present"]
    with Session(model, state={"present": "past"}, initial_state={"past": init}) as s:
        got = [s.run({"x": x}) for x in xs]
        final = s.read_state("present")
    for k, (g, w) in enumerate(zip(got, want)):
        assert set(g) == {"z"}, "a bound output is not returned"
        np.testing.assert_array_equal(g["z"], w, err_msg=f"step {k}")
    np.testing.assert_array_equal(final, state)
    # and against numpy: the running sum
    np.testing.assert_allclose(final, init + sum(xs), rtol=1e-5, atol=1e-5)


def test_no_host_copy_of_the_state_per_step(on_gpu):
    """The state never crosses: per step only x goes up and y comes down, the state's
    two device buffers swap (the same two addresses, step after step)."""
    init, xs = state_inputs(2)
    with Session(on_gpu, state={"present": "past"}, initial_state={"past": init}, handoff="copy") as plain_ptrs:
        first = plain_ptrs.state.buffer_ptrs("past")
        for k, x in enumerate(xs):
            plain_ptrs.run({"x": x})
            stats = plain_ptrs.last_run_stats
            assert {e.tensor for e in stats.edges} == {"x", "y"}, k
            assert (stats.h2d, stats.bytes_h2d) == (1, x.nbytes)
            assert (stats.d2h, stats.bytes_d2h) == (1, x.nbytes)
            assert stats.feed_copies == 1 and stats.staging == 0  # x into its pinned buffer; DPS writes the state
            ptrs = plain_ptrs.state.buffer_ptrs("past")
            assert ptrs == (first if k % 2 else first[::-1])
        assert plain_ptrs.state.steps == STEPS


def test_without_state_the_cache_crosses_every_step(on_gpu):
    """The counter the previous test reads does see a state fed back through numpy."""
    init, xs = state_inputs(2)
    with Session(on_gpu, handoff="copy") as s:
        s.run({"x": xs[0], "past": init})
        assert {e.tensor for e in s.last_run_stats.edges} == {"x", "past", "y", "present"}


def test_state_buffers_are_allocated_once_not_per_slot(on_gpu):
    """Bound: two state buffers, no slot buffers for past/present (fed back: an input
    and an output buffer on each side, per slot)."""
    with Session(on_gpu, slots=2, handoff="copy") as plain:
        fed_back = plain.buffer_bytes
    with Session(on_gpu, slots=2, handoff="copy", state={"present": "past"}) as s:
        bound = s.buffer_bytes
    state_bytes = np.zeros(N, np.float32).nbytes
    assert fed_back - bound == 2 * 4 * state_bytes - 2 * state_bytes


def test_submitted_steps_run_one_after_the_other(on_gpu):
    init, xs = state_inputs(3)
    with Session(on_gpu, state={"present": "past"}, initial_state={"past": init}) as s:
        futures = [s.submit({"x": x}) for x in xs]
        got = [f.result()["z"] for f in futures]
    state = init
    for x, g in zip(xs, got):
        np.testing.assert_allclose(g, 2 * state + x + 1, rtol=1e-5, atol=1e-5)
        state = state + x


def test_write_state_restarts(on_gpu):
    init, xs = state_inputs(4)
    with Session(on_gpu, state={"present": "past"}) as s:
        np.testing.assert_array_equal(s.read_state("past"), 0)  # zeros until written
        s.write_state({"past": init})
        s.run({"x": xs[0]})
        np.testing.assert_allclose(s.read_state("present"), init + xs[0], rtol=1e-6)
        s.write_state({"present": init})
        np.testing.assert_allclose(s.run({"x": xs[1]})["z"], 2 * init + xs[1] + 1, rtol=1e-5, atol=1e-5)


def test_a_failed_step_leaves_the_state_as_it_was(on_gpu):
    """The step's partition writes its outputs, then fails: the state is not advanced,
    and the next step reads the state from before the failed one."""
    init, xs = state_inputs(5)
    with Session(on_gpu, state={"present": "past"}, initial_state={"past": init}) as s:
        runner = next(st.runner for st in s._stages if st.name == "step")
        real = runner.call

        def written_then_failed(*args, **kwargs):
            real(*args, **kwargs)
            raise ValueError("injected")

        runner.call = written_then_failed
        with pytest.raises(RuntimeFailure, match="injected"):
            s.run({"x": xs[0]})
        runner.call = real
        np.testing.assert_array_equal(s.read_state("past"), init)
        np.testing.assert_allclose(s.run({"x": xs[1]})["z"], 2 * init + xs[1] + 1, rtol=1e-5, atol=1e-5)
        assert s.state.steps == 1


def test_the_capture_run_leaves_the_state_as_it_was(on_gpu, monkeypatch):
    """The run a session opens with to capture CUDA graphs (Session._capture_graphs,
    forced here) is no step: the state and the step count stay, later steps are right."""
    monkeypatch.setattr(Session, "_needs_capture_run", lambda self: True)
    init, xs = state_inputs(7)
    with Session(on_gpu, state={"present": "past"}, initial_state={"past": init}) as s:
        assert s.state.steps == 0 and s.last_run_stats is None
        np.testing.assert_array_equal(s.read_state("past"), init)
        np.testing.assert_allclose(s.run({"x": xs[0]})["z"], 2 * init + xs[0] + 1, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.read_state("present"), init + xs[0], rtol=1e-6)


def test_a_partition_without_dps_stages_its_state_on_its_own_device():
    """No main_dps: the VM's result is copied into the state buffer, on the same side
    (``staging``), and still never crosses."""
    from tvm import te

    x, past, y, present = tensor_specs("x", "past", "y", "present")
    step = build_partition("step", "cuda", [x, past], [y, present], lambda i: [
        te.compute(N, lambda r, s: i[1][r, s] * 2 + i[0][r, s], name="y"),
        te.compute(N, lambda r, s: i[1][r, s] + i[0][r, s], name="present")], dps=False)
    model = CompiledModel(plan_of("no_dps", [step]), [step], [x, past], [y, present])
    init, xs = state_inputs(6)
    with Session(model, state={"present": "past"}, initial_state={"past": init}, handoff="copy") as s:
        state = init
        for x_k in xs:
            np.testing.assert_allclose(s.run({"x": x_k})["y"], 2 * state + x_k, rtol=1e-5, atol=1e-5)
            state = state + x_k
            assert s.last_run_stats.staging == 2 and {e.tensor for e in s.last_run_stats.edges} == {"x", "y"}


def test_state_buffers_come_from_the_quota(on_gpu):
    """With a quota the two device buffers of the state are carved from its arena."""
    init, xs = state_inputs(7)
    state_bytes = init.nbytes
    with Session(on_gpu, quota=1 << 20, handoff="copy") as plain:
        fed_back = plain.pool.in_use
    with Session(on_gpu, quota=1 << 20, handoff="copy", state={"present": "past"},
                 initial_state={"past": init}) as s:
        assert fed_back - s.pool.in_use == 2 * 2 * state_bytes - 2 * state_bytes  # 2 slots x (past, present)
        for x_k in xs:
            s.run({"x": x_k})
        np.testing.assert_allclose(s.read_state("past"), init + sum(xs), rtol=1e-5, atol=1e-5)


def test_steps_from_several_threads_each_read_the_state_of_the_one_before(on_gpu):
    """Threads race to submit; whatever order the steps take, each reads the state the
    previous one left: the state after all is the sum of every x, and each result is
    consistent with some order of the steps."""
    import threading

    init, xs = state_inputs(8)
    got = {}
    with Session(on_gpu, state={"present": "past"}, initial_state={"past": init}) as s:
        def step(k):
            got[k] = s.run({"x": xs[k]})["z"]

        threads = [threading.Thread(target=step, args=(k,)) for k in range(STEPS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = s.read_state("past")
    np.testing.assert_allclose(final, init + sum(xs), rtol=1e-5, atol=1e-5)
    # each step saw init plus the x of some set of other steps: z - x - 1 = 2 * state
    for k, z in got.items():
        seen = (z - xs[k] - 1) / 2 - init
        assert any(np.allclose(seen, sum((xs[j] for j in subset), np.zeros(N, np.float32)), atol=1e-4)
                   for subset in _subsets(set(range(STEPS)) - {k})), k


def _subsets(items):
    from itertools import combinations

    return [c for r in range(len(items) + 1) for c in combinations(sorted(items), r)]


# --- errors ---------------------------------------------------------------------------
def test_a_bucketed_model_cannot_bind_state():
    class Bucketed:
        is_bucketed = True

    with pytest.raises(StateError, match="shape bucket"):
        Session(Bucketed(), state={"present": "past"})


def test_unknown_names_and_mismatches_are_state_errors(on_gpu):
    with pytest.raises(StateError, match="'logits' is not an output"):
        Session(on_gpu, state={"logits": "past"})
    with pytest.raises(StateError, match="'cache' is not an input"):
        Session(on_gpu, state={"present": "cache"})
    with pytest.raises(StateError, match="cannot feed input 'x'") as e:
        Session(_mismatched(), state={"present": "x"})
    assert e.value.names == ["present"]
    with Session(on_gpu, state={"present": "past"}) as s:
        with pytest.raises(StateError, match="'past'.*bound state"):
            s.run({"x": np.zeros(N, np.float32), "past": np.zeros(N, np.float32)})
        with pytest.raises(StateError, match="not bound"):
            s.read_state("z")
        with pytest.raises(StateError, match=r"\[4, 8\] float32, got \[4, 8\] float64"):
            s.write_state({"past": np.zeros(N)})
    with Session(on_gpu) as plain, pytest.raises(StateError, match="no bound state"):
        plain.read_state("past")


def _mismatched() -> CompiledModel:
    from tvm import te

    x = TensorSpec("x", (2, 8), "float32")
    past, y, present = tensor_specs("past", "y", "present")
    part = build_partition("step", "cuda", [past], [y, present], lambda i: [
        te.compute(N, lambda r, s: i[0][r, s] * 2, name="y"), te.compute(N, lambda r, s: i[0][r, s], name="present")])
    extra = build_partition("x_reader", "cuda", [x], [TensorSpec("w", (2, 8), "float32")],
                            lambda i: [te.compute((2, 8), lambda r, s: i[0][r, s], name="w")])
    return CompiledModel(plan_of("bad", [part, extra]), [part, extra], [x, past],
                         [y, present, TensorSpec("w", (2, 8), "float32")])


def test_a_state_across_devices_is_refused_naming_the_partitions():
    """present is made on the GPU but past is read on the CPU: refused, with advice."""
    from tvm import te

    x, past, y, present, h = tensor_specs("x", "past", "y", "present", "h")
    reader = build_partition("host_reader", "cpu", [past, x], [h], lambda i: [
        te.compute(N, lambda r, s: i[0][r, s] + i[1][r, s], name="h")])
    step = step_partition("gpu_step", "cuda", h, x, y, present)
    model = CompiledModel(plan_of("split", [reader, step]), [reader, step], [x, past], [y, present])
    with pytest.raises(StateError) as e:
        Session(model, state={"present": "past"})
    text = str(e.value)
    assert "partition 'gpu_step' on cuda" in text and "partition 'host_reader' on cpu" in text
    assert "pin" in text


# --- compiled ONNX graphs against ONNX Runtime ----------------------------------------------
def _gpu_plan(graph, plan_for):
    from hetpart.kernels.capabilities import unsupported_reason

    return plan_for(graph, {k: "cuda" if unsupported_reason(kernel, "cuda") is None else "cpu"
                            for k, kernel in graph.kernels.items()})


def test_compiled_cache_steps_equal_onnx_runtime(plan_for):
    from hetpart import compiler, importer

    model = cache_step_model()
    graph = importer.load(model)
    plan = _gpu_plan(graph, plan_for)
    compiled = compiler.compile(plan, simulate=True, progress=False)
    assert any(p.device == "cuda" for p in compiled.partitions)
    rng = np.random.default_rng(8)
    steps = [{"x": rng.standard_normal((1, D)).astype(np.float32), "position": np.array([k], np.int64)}
             for k in range(STEPS)]
    init = rng.standard_normal((1, CACHE, D)).astype(np.float32)
    want = ort_steps(model, steps, {"present": "past"}, {"past": init})
    with Session(compiled, state={"present": "past"}, initial_state={"past": init}) as s:
        for k, feeds in enumerate(steps):
            got = s.run(feeds)
            np.testing.assert_allclose(got["y"], want[k]["y"], rtol=1e-4, atol=1e-5, err_msg=f"step {k}")
            assert "past" not in {e.tensor for e in s.last_run_stats.edges}
            assert "present" not in {e.tensor for e in s.last_run_stats.edges}
        np.testing.assert_allclose(s.read_state("past"), want[-1]["present"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_llama_decode_steps_equal_onnx_runtime(plan_for):
    """The small llama_decode with attention on the simulated GPU and its 2 x layers
    caches bound: N steps equal ONNX Runtime's N steps with the caches fed back, and
    no cache crosses between CPU and GPU."""
    from hetpart import compiler, importer, models

    model = models.build("llama_decode", small=True)
    graph = importer.load(model)
    compiled = compiler.compile(attention_plan(graph, plan_for), simulate=True, progress=False)
    assert {p.device for p in compiled.partitions} == {"cpu", "cuda"}
    pairs = {o.name: o.name.replace("present.", "past.") for o in model.graph.output if o.name.startswith("present.")}
    feeds = models.example_inputs(model, seed=3)
    init = {p: feeds[p] for p in pairs.values()}
    steps = [{"input_ids": np.array([[5 + k]], np.int64), "position": np.array([k], np.int64)} for k in range(4)]
    want = ort_steps(model, steps, pairs, init)
    cache = set(pairs.values()) | {t.name for n, t in zip(compiled.model_output_names, compiled.outputs) if n in pairs}
    with Session(compiled, state=pairs, initial_state=init) as s:
        for k, step in enumerate(steps):
            got = s.run(step)
            assert set(got) == {"logits"}
            np.testing.assert_allclose(got["logits"], want[k]["logits"], rtol=2e-3, atol=2e-3, err_msg=f"step {k}")
            crossed = {e.tensor for e in s.last_run_stats.edges}
            assert crossed and not crossed & cache
        for out in pairs:
            np.testing.assert_allclose(s.read_state(out), want[-1][out], rtol=2e-3, atol=2e-3, err_msg=out)
