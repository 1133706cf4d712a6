"""Device-resident state (hetpart.runtime.state) on a real CUDA GPU (marked ``cuda``;
skipped where there is none).

Run on the GPU machine:  PYTHONPATH=. python3 -m pytest tests/test_runtime_state_cuda.py -q -m cuda -s
(``-s`` shows the per-step times of the llama_decode test: bound against fed back.)
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from state_cases import STEPS, attention_plan, ort_steps, state_inputs, synthetic_state_model

pytestmark = pytest.mark.cuda  # tests/conftest.py skips these with "no CUDA GPU" where there is none


@pytest.mark.parametrize("quota", [None, 64 << 20])
def test_bound_state_on_gpu_equals_fed_back_and_never_crosses(quota):
    """Real device buffers (and, with a quota, buffers carved from the arena): N bound
    steps equal N steps fed back; read_state/write_state go through cudaMemcpy."""
    from hetpart.runtime import Session

    model = synthetic_state_model("cuda", reader="cpu", simulate=False)
    init, xs = state_inputs(11)
    with Session(model, handoff="copy") as plain:
        state, want = init, []
        for x in xs:
            out = plain.run({"x": x, "past": state})
            want.append(out["z"])
            state = out["present"]
    with Session(model, handoff="copy", quota=quota, state={"present": "past"}, initial_state={"past": init}) as s:
        first = s.state.buffer_ptrs("past")
        for k, x in enumerate(xs):
            got = s.run({"x": x})
            np.testing.assert_array_equal(got["z"], want[k], err_msg=f"step {k}")
            assert {e.tensor for e in s.last_run_stats.edges} == {"x", "y"}
            assert s.state.buffer_ptrs("past") == (first if k % 2 else first[::-1])
        np.testing.assert_array_equal(s.read_state("present"), state)
        s.write_state({"past": init})
        np.testing.assert_array_equal(s.read_state("past"), init)
        assert s.state.steps == STEPS


def test_llama_decode_bound_caches_on_gpu_equal_onnx_runtime(plan_for):
    """The small llama_decode with attention on the GPU (issue 19's plan), its caches
    bound: logits equal ONNX Runtime's over N steps; per-step time printed, bound vs
    fed back through numpy (no timed assert)."""
    from hetpart import compiler, importer, models
    from hetpart.runtime import Session

    model = models.build("llama_decode", small=True)
    graph = importer.load(model)
    compiled = compiler.compile(attention_plan(graph, plan_for), progress=False)
    pairs = {o.name: o.name.replace("present.", "past.") for o in model.graph.output if o.name.startswith("present.")}
    feeds = models.example_inputs(model, seed=3)
    init = {p: feeds[p] for p in pairs.values()}
    steps = [{"input_ids": np.array([[5 + k]], np.int64), "position": np.array([k], np.int64)} for k in range(8)]
    want = ort_steps(model, steps, pairs, init)
    with Session(compiled, state=pairs, initial_state=init) as s:
        start = time.perf_counter()
        for k, step in enumerate(steps):
            got = s.run(step)
            np.testing.assert_allclose(got["logits"], want[k]["logits"], rtol=2e-3, atol=2e-3, err_msg=f"step {k}")
            assert not {e.tensor for e in s.last_run_stats.edges} & (set(pairs) | set(pairs.values()))
        bound = (time.perf_counter() - start) / len(steps)
    with Session(compiled) as plain:
        state = dict(init)
        start = time.perf_counter()
        for step in steps:
            out = plain.run({**step, **state})
            state = {p: out[o] for o, p in pairs.items()}
        fed_back = (time.perf_counter() - start) / len(steps)
    print(f"\nllama_decode small, per step: bound {bound * 1e3:.3f} ms, fed back {fed_back * 1e3:.3f} ms")
