"""The serving benchmark's logic on the CPU with fake runners: the load generator, the
per-answer check (a system that mixes answers is caught as ``crossed``, one that drops
requests as ``lost``), the sweep, the records (schema fields) and the report (table,
SVG).  No assertion depends on how fast this machine is."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from hetpart.bench import serve, serve_report
from hetpart.bench.serve_load import (INEXACT_MAX_FRACTION, LoadModel, classify, fingerprint, judge, mismatch_fraction,
                                      offer_load, poisson_arrivals, references)
from hetpart.serving import Server


class Sleepy:
    """A fake model: y = 3x - row index independent; sleeps a little per batch."""

    def __init__(self, max_batch, seconds=0.002):
        self.max_batch, self.seconds = max_batch, seconds

    def run(self, feeds):
        time.sleep(self.seconds)
        return {"y": 3 * feeds["x"] - 1, "norm": np.linalg.norm(feeds["x"], axis=1)}


def pool(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(n)]


def load_models():
    return [LoadModel("a", pool(seed=1)), LoadModel("b", pool(seed=2))]


class Mixer:
    """Answers honestly while the references are taken, then each request with the previous one's answer."""

    def __init__(self, honest):
        self.inner, self.honest, self.prev, self.count = Sleepy(1, 0), honest, {}, 0

    def submit(self, model, feeds):
        self.count += 1
        use = feeds if self.count <= self.honest else self.prev.get(model, feeds)
        self.prev[model] = feeds
        f = Future()
        f.set_result(self.inner.run(use))
        return f


class Dropper(Mixer):
    """Never answers every 5th request after the references."""

    def submit(self, model, feeds):
        self.count += 1
        f = Future()
        if self.count > self.honest and self.count % 5 == 0:
            return f
        f.set_result(self.inner.run(feeds))
        return f


def test_poisson_arrivals_have_the_rate_and_stay_in_the_window():
    t = poisson_arrivals(500.0, 4.0, np.random.default_rng(0))
    assert np.all(np.diff(t) > 0) and t[-1] < 4.0
    assert 1800 < len(t) < 2200  # 2000 expected; seeded, so this is one fixed draw


def test_classify_tells_own_other_and_wrong_answers_apart():
    refs = [fingerprint({"y": np.full((1, 8), float(i))}) for i in range(3)]
    assert classify(refs[1], 1, refs) == "ok"
    assert classify(refs[2], 1, refs) == "crossed"
    assert classify(fingerprint({"y": np.full((1, 8), 7.0)}), 1, refs) == "wrong"


def test_classify_measures_each_output_against_its_own_scale():
    """Another build's rounding (TF32 tiles of a batch-4 bucket against the batch-1
    reference) moves an element near zero by a fraction of the output's scale: ok.
    The H200 serving run called such answers wrong when the check was elementwise."""
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((1, 1000)) * 3 for _ in range(3)]
    logits[1][0, 0] = 1e-4  # a near-zero element the rounding moves by 2e-3 (1e-3 of the scale)
    small = [rng.uniform(0, 1, (1, 4)) for _ in range(3)]  # a second output of another scale
    refs = [fingerprint({"logits": lg, "p": q}) for lg, q in zip(logits, small)]
    rounded = logits[1].copy()
    rounded[0, 0] += 2e-3
    assert classify(fingerprint({"logits": rounded, "p": small[1]}), 1, refs) == "ok"
    # each output is held to its own scale: the small one cannot hide behind the logits'
    assert classify(fingerprint({"logits": logits[1], "p": small[1] + 0.1}), 1, refs) == "wrong"
    assert classify(fingerprint({"logits": logits[2], "p": small[2]}), 1, refs) == "crossed"


def test_a_near_tie_broken_otherwise_is_inexact_not_wrong():
    """The detector's TopK indices on another bucket's build: two equal scores come
    out swapped, so two of a hundred indices differ from the batch-1 reference.  The
    H200 serving run of 2026-12-03 counted such answers wrong (13 of 594 requests)."""
    rng = np.random.default_rng(1)
    indices = [rng.permutation(1000)[:100].astype(np.int64).reshape(1, 100) for _ in range(4)]
    refs = [fingerprint({"topk_indices": ix}) for ix in indices]
    swapped = indices[2].copy()
    swapped[0, [0, 99]] = swapped[0, [99, 0]]  # elements the fingerprint samples (first and last)
    verdict, off_own, off_other = judge(fingerprint({"topk_indices": swapped}), 2, refs)
    assert verdict == "inexact" and 0 < off_own <= INEXACT_MAX_FRACTION < off_other
    assert classify(fingerprint({"topk_indices": swapped}), 2, refs) == "inexact"


def test_an_answer_off_in_many_elements_stays_wrong_and_a_copy_of_another_crossed():
    rng = np.random.default_rng(2)
    logits = [rng.standard_normal((1, 1000)) for _ in range(3)]
    refs = [fingerprint({"logits": lg}) for lg in logits]
    noisy = logits[0] + 0.05 * np.abs(logits[0]).max() * rng.standard_normal((1, 1000))  # 5% of scale everywhere
    assert classify(fingerprint({"logits": noisy}), 0, refs) == "wrong"
    half = logits[0].copy()
    half[0, ::2] = logits[1][0, ::2]  # half its own, half another request's
    assert classify(fingerprint({"logits": half}), 0, refs) == "wrong"
    assert classify(fingerprint({"logits": logits[1]}), 0, refs) == "crossed"
    assert mismatch_fraction(refs[0], refs[0]) == 0.0
    assert mismatch_fraction(refs[0], fingerprint({"logits": logits[0], "extra": logits[0]})) == 1.0


def test_a_server_under_load_answers_every_request_with_its_own_answer():
    models = load_models()
    with Server({"a": Sleepy(8), "b": Sleepy(4)}, max_delay=0.001) as server:
        references(server, models)
        point = offer_load(server, models, rate_per_s=300, window_s=0.3, seed=3)
    assert point.offered > 30
    assert (point.completed, point.lost, point.crossed, point.wrong, point.failed) == (point.offered, 0, 0, 0, 0)
    assert point.p50_ms is not None and point.p99_ms >= point.p50_ms
    # each model's own p99, the larger of them the overall p99's neighbourhood
    assert set(point.p99_ms_by_model) == {"a", "b"}
    assert max(point.p99_ms_by_model.values()) >= point.p50_ms


def test_mixed_answers_are_caught_as_crossed():
    models = load_models()
    system = Mixer(honest=sum(len(m.payloads) for m in models))
    references(system, models)
    point = offer_load(system, models, rate_per_s=200, window_s=0.2, seed=1)
    assert point.crossed > 0 and point.completed + point.crossed + point.wrong == point.offered
    assert not point.meets(1e9)


class Slowpoke(Mixer):
    """Answers every 5th request after the references only after ``delay`` s."""

    def __init__(self, honest, delay):
        super().__init__(honest)
        self.delay = delay

    def submit(self, model, feeds):
        self.count += 1
        f = Future()
        result = self.inner.run(feeds)
        if self.count > self.honest and self.count % 5 == 0:
            threading.Timer(self.delay, f.set_result, args=(result,)).start()
        else:
            f.set_result(result)
        return f


def test_answers_after_the_drain_are_late_not_lost():
    models = load_models()
    system = Slowpoke(honest=sum(len(m.payloads) for m in models), delay=0.5)
    references(system, models)
    point = offer_load(system, models, rate_per_s=200, window_s=0.2, seed=1, drain_s=0.05, lost_after_s=30)
    assert point.late > 0 and point.lost == 0 and point.completed == point.offered
    assert not point.meets(1e9)


def test_unanswered_requests_are_lost():
    models = load_models()
    system = Dropper(honest=sum(len(m.payloads) for m in models))
    references(system, models)
    point = offer_load(system, models, rate_per_s=200, window_s=0.2, seed=1, drain_s=0.2, lost_after_s=0.1)
    assert point.lost > 0 and point.late == point.lost and point.completed == point.offered - point.lost
    assert point.p99_ms is None  # a lost request's latency is infinite


def test_the_benchmark_records_every_contender_and_renders(tmp_path):
    def hetpart_server(max_batch, **options):
        return lambda: Server({"a": Sleepy(max_batch), "b": Sleepy(max_batch)}, **options)

    models = load_models()
    scenario = serve.Scenario("pair", models, [
        serve.Contender("hetpart", hetpart_server(8, max_delay=0.001)),
        serve.Contender("hetpart-no-batching", hetpart_server(1, max_delay=0)),
        # honest through the sweep's two reference passes (warm-up, then timed)
        serve.Contender("mixer", lambda: Mixer(honest=2 * sum(len(m.payloads) for m in models))),
        serve.Contender("torch-cuda-graphs", None, skipped="PyTorch not installed"),
        serve.Contender("broken", lambda: 1 / 0),
    ], slo_ms=1000.0)
    options = serve.SweepOptions(window_s=0.15, start_rate=50, growth=2.0, max_steps=3, drain_s=5)
    body = serve.run([scenario], options, budget_s=60)
    rows = {r["contender"]: r for r in body["results"]}
    assert set(rows) == {"hetpart", "hetpart-no-batching", "mixer", "torch-cuda-graphs", "broken"}
    assert rows["broken"]["skipped"].startswith("failed: ZeroDivisionError")
    for r in rows.values():
        for key in ("models", "contender", "slo_ms", "max_rate_per_s", "p50_ms", "p99_ms"):
            assert key in r
    ours = rows["hetpart"]
    assert ours["models"] == ["a", "b"] and ours["lost"] == 0 and ours["crossed"] == 0 and ours["wrong"] == 0
    assert ours["max_rate_per_s"] > 0 and ours["curve"] and ours["curve"][0]["mean_batch_rows"] >= 1
    assert rows["mixer"]["crossed"] > 0 and rows["mixer"]["max_rate_per_s"] == 0
    assert rows["torch-cuda-graphs"]["skipped"] == "PyTorch not installed"
    (s,) = body["scenarios"]
    assert s["lost"] == 0 and s["crossed"] == 0
    assert s["best_other"] == "hetpart-no-batching"
    assert s["speedup_vs_best"] == ours["max_rate_per_s"] / rows["hetpart-no-batching"]["max_rate_per_s"]
    # a contender that failed was not measured: no verdict (the H200 run that lost two to a crash said "met")
    assert s["failed_contenders"] == ["broken"]
    json.dumps(body)  # JSON-ready
    table = serve_report.markdown(body)
    assert "Not measured (failed): broken" in table
    assert "| hetpart |" in table and "skipped: PyTorch not installed" in table and "x the best other" in table
    root = ET.fromstring(serve_report.svg(body))
    assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 3


@pytest.mark.slow
def test_the_front_end_runs_end_to_end_on_the_cpu(tmp_path):
    """bench/serve.py with a small zoo model, CUDA simulated: builds, serves through
    every contender, writes the JSON (schema), the table and the plot."""
    import runpy

    from hetpart.contracts import read_json

    out = tmp_path / "serve.json"
    front = runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "serve.py"))
    front["main"](["--small", "--simulate", "--scenarios", "mlp", "--max-batch", "4", "--budget", "120",
                   "--window-s", "0.2", "--max-steps", "2", "--slo-ms", "1000", "--out", str(out)])
    body = read_json(out, serve.SCHEMA, serve.VERSION)
    rows = {r["contender"]: r for r in body["results"]}
    assert set(rows) == {"hetpart", "hetpart-no-batching", "sequential", "torch-cuda-graphs"}
    assert rows["torch-cuda-graphs"]["skipped"]  # simulated: no GPU for PyTorch
    for name in ("hetpart", "hetpart-no-batching", "sequential"):
        assert rows[name]["skipped"] is None and rows[name]["max_rate_per_s"] > 0, rows[name]
        assert rows[name]["lost"] == 0 and rows[name]["crossed"] == 0 and rows[name]["wrong"] == 0
    assert body["scenarios"][0]["speedup_vs_best"] is not None
    assert "| hetpart |" in out.with_suffix(".md").read_text()
    ET.fromstring(out.with_suffix(".svg").read_text())


def test_nms_rows_of_another_count_are_compared_as_sets():
    """A detector's selected_indices: the batched build keeps one box more near the score
    threshold (a different row count) -- inexact, not wrong; another image's rows: wrong."""
    rng = np.random.default_rng(3)
    sel = [np.unique(np.stack([np.zeros(40, np.int64), rng.integers(0, 80, 40), rng.integers(0, 1200, 40)], 1), axis=0)
           for _ in range(3)]
    refs = [fingerprint({"selected_indices": s, "topk_scores": np.full((1, 10), float(i))}) for i, s in enumerate(sel)]
    one_more = np.concatenate([sel[1], [[0, 5, 1199]]])
    verdict, off_own, _ = judge(fingerprint({"selected_indices": one_more, "topk_scores": np.full((1, 10), 1.0)}), 1, refs)
    assert verdict == "inexact" and 0 < off_own < 0.05
    assert classify(fingerprint({"selected_indices": sel[2], "topk_scores": np.full((1, 10), 1.0)}), 1, refs) == "wrong"
