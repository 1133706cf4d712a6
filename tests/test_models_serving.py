"""The zoo models issue 19 needs: the LLaMA decode step with a static KV cache, the
~1B prefill, the mixture-of-experts stack, DLRM sized by spec.  Semantics are checked
with ``onnx.reference.ReferenceEvaluator`` (an independent numpy implementation):
the decode step token by token gives the prefill's logits, writes only its own cache
slot, and the MoE layer reads only the experts its router chose.  hetpart's CPU
build of the small variants is checked against the same reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hetpart import compiler, models
from hetpart.errors import UnknownModelError

REL_TOL = 1e-4


def _rel_err(got, want) -> float:
    scale = float(np.max(np.abs(want)))
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / scale


def _decode(model, ids: np.ndarray, cache_len: int) -> list[np.ndarray]:
    """Logits [batch, vocab] of each token of ``ids`` [batch, n] fed one step at a time,
    every step's present caches fed back as the next step's past."""
    run = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    feeds = {vi.name: np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim], np.float32)
             for vi in model.graph.input if vi.name.startswith("past.")}
    logits = []
    for pos in range(ids.shape[1]):
        out = dict(zip(names, run.run(None, {**feeds, "input_ids": ids[:, pos:pos + 1],
                                             "position": np.array([pos], np.int64)})))
        logits.append(out["logits"][:, 0])
        feeds = {k.replace("past.", "present."): v for k, v in feeds.items()}  # names only, for the next line
        feeds = {k.replace("present.", "past."): out[k] for k in feeds}
    return logits


def test_decode_steps_give_the_prefill_logits():
    """Same config and seed: the prompt through the prefill model and token by token
    through the decode step (cache carried between steps) agree at every position."""
    n = 5
    prefill = models.build("llama", small=True, seq_len=n)
    decode = models.build("llama_decode", small=True)
    ids = np.random.default_rng(0).integers(0, 256, (1, n)).astype(np.int64)
    want = ReferenceEvaluator(prefill).run(None, {"input_ids": ids})[0]  # [1, n, vocab]
    got = _decode(decode, ids, 16)
    for pos in range(n):
        assert _rel_err(got[pos], want[:, pos]) <= REL_TOL, f"position {pos}"


def test_a_step_writes_only_its_own_cache_slot():
    model = models.build("llama_decode", small=True)
    feeds = models.example_inputs(model, seed=2)
    feeds["position"] = np.array([7], np.int64)
    names = [o.name for o in model.graph.output]
    out = dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))
    for name in (n for n in names if n.startswith("present.")):
        past = feeds[name.replace("present.", "past.")]
        changed = np.any(out[name] != past, axis=(0, 1, 3))
        assert changed.tolist() == [i == 7 for i in range(16)], name


def test_decode_step_interface():
    model = models.build("llama_decode", small=True, layers=3)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs[:2] == ["input_ids", "position"] and len(inputs) == 2 + 2 * 3
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(3) for kv in ("key", "value")]
    shape = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    by_name = {vi.name: vi for vi in [*model.graph.input, *model.graph.output]}
    assert shape(by_name["past.1.value"]) == shape(by_name["present.1.value"]) == [1, 2, 16, 16]


def test_full_sizes_are_what_issue_19_asks_for():
    """Weight bytes from the configs (nothing built): ~1.1B parameters, 2,048 cache slots."""
    from hetpart.models.llama_decode import DECODE_FULL, LLAMA_1B

    c = LLAMA_1B
    kv = c.hidden // c.heads * c.kv_heads
    per_layer = 2 * c.hidden * c.hidden + 2 * c.hidden * kv + 3 * c.hidden * c.intermediate + 2 * c.hidden
    params = c.layers * per_layer + 2 * c.vocab * c.hidden + c.hidden
    assert 1.0e9 <= params <= 1.2e9 and c.seq_len == 512
    assert DECODE_FULL.cache_len == 2048 and DECODE_FULL.llama().hidden == c.hidden


def _with_output(model: onnx.ModelProto, tensor: str, elem) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info(tensor, elem, None))
    return m


def test_moe_reads_only_the_chosen_experts():
    """Zeroing every expert the router did not choose leaves the logits as they were;
    zeroing one it chose changes them."""
    model = models.build("moe", small=True, layers=1)
    feeds = models.example_inputs(model, seed=4)
    probe = _with_output(model, "layers.0.moe.topk:1", onnx.TensorProto.INT64)
    logits, ids = ReferenceEvaluator(probe).run(None, feeds)
    chosen = set(ids.ravel().tolist())
    assert 0 < len(chosen) < 8, "every expert chosen: the test would prove nothing"

    def zeroed(experts) -> np.ndarray:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        for t in m.graph.initializer:
            if ".experts." in t.name:
                w = numpy_helper.to_array(t).copy()
                w[list(experts)] = 0
                t.CopyFrom(numpy_helper.from_array(w, t.name))
        return ReferenceEvaluator(m).run(None, feeds)[0]

    np.testing.assert_array_equal(zeroed(set(range(8)) - chosen), logits)
    assert not np.array_equal(zeroed({min(chosen)}), logits)


def test_moe_routes_through_topk_and_gather_of_weights():
    model = models.build("moe", small=True)
    weights = {t.name for t in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in weights
               and ".experts." in n.input[0]]
    assert len(gathers) == 3 * 2 and all(n.input[1].endswith("topk:1") for n in gathers)
    assert sum(n.op_type == "TopK" for n in model.graph.node) == 2
    with pytest.raises(UnknownModelError, match="top_k"):
        models.build("moe", small=True, top_k=9)


def test_dlrm_is_sized_by_spec():
    name, small, cfg = models.parse_zoo_spec("zoo:dlrm:table_rows=3_000_000,num_tables=26")
    assert (name, small, cfg) == ("dlrm", False, {"table_rows": 3_000_000, "num_tables": 26})
    # 26 tables x 3M rows x 64 float32 = ~20 GB: several GB, as issue 19 asks (not built here).
    assert cfg["num_tables"] * cfg["table_rows"] * 64 * 4 > 4e9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama_decode", "moe"])
def test_hetpart_matches_the_reference(name, plan_for, compose):
    from hetpart import importer
    from hetpart.kernels.capabilities import unsupported_reason

    model = models.build(name, small=True)
    graph = importer.load(model)
    plan = plan_for(graph, {k: "cpu" if unsupported_reason(kernel, "cpu") is None else "cuda"
                            for k, kernel in graph.kernels.items()})
    compiled = compiler.compile(plan, progress=False)
    feeds = models.example_inputs(model, seed=5)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = compose(compiled, dict(zip(graph.inputs, feeds.values())))
    for info, a, b in zip(model.graph.output, got, want):
        assert a.shape == b.shape, info.name
        assert _rel_err(a, b) <= REL_TOL, f"{name}: {info.name} rel. error {_rel_err(a, b):.2e}"
