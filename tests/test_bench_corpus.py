"""bench/corpus.py, the public model corpus script, on its CPU path: what the GPU run
depends on (comparison, records, resuming, a failing stage) without torch."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parent.parent / "bench" / "corpus.py"


@pytest.fixture(scope="module")
def corpus():
    spec = importlib.util.spec_from_file_location("bench_corpus", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_rel_err_is_max_abs_diff_over_max_abs_reference(corpus):
    b = np.array([1.0, -4.0, 2.0], np.float32)
    a = np.array([1.5, -4.0, 2.0], np.float32)
    assert corpus.rel_err(a, b) == pytest.approx(0.5 / 4.0)
    assert corpus.rel_err(b, b) == 0.0


def test_nan_the_reference_lacks_is_wrong_even_when_small(corpus):
    b = np.linspace(-3, 3, 8, dtype=np.float32)
    a = b.copy()
    a[0] = np.nan  # the GPU Pow-on-negatives symptom
    result = corpus.compare([a], [b])
    assert result["status"] == "wrong" and "NaN/Inf" in result["detail"]
    assert corpus.compare([b], [b])["status"] == "pass"


def test_tolerance_follows_tf32(corpus, monkeypatch):
    b = np.ones(4, np.float32)
    a = b * (1 + 1e-3)
    assert corpus.compare([a], [b])["status"] == "pass"
    monkeypatch.setenv("HETPART_TF32", "0")
    assert corpus.compare([a], [b])["status"] == "wrong"


def test_low_precision_builds_are_held_to_their_own_tolerance(corpus):
    b = np.ones(4, np.float32)
    a = b * (1 + 1.5e-2)
    assert corpus.compare([a], [b])["status"] == "wrong"  # float32 with TF32: 1e-2
    assert corpus.compare([a], [b], "bf16")["status"] == "pass"  # bf16 weights: 2e-2 (issue 17)
    assert corpus.compare([b * 1.03], [b], "bf16")["status"] == "wrong"


def test_the_peers_own_error_is_measured_the_same_way_and_shown(corpus):
    """PyTorch's TF32/bf16 error against the float32 reference stands beside hetpart's,
    so a 'wrong' at the TF32 tolerance can be read against what TF32 does to the peer."""
    ref = [np.array([[1.0, -4.0], [0.0, 2.0]], np.float32), np.arange(3, dtype=np.int64)]
    got = [ref[0] + np.float32(0.04), ref[1]]
    assert corpus.peer_rel_err(got, ref) == pytest.approx(0.01)
    assert corpus.peer_rel_err(got[:1], ref) is None  # outputs that do not line up: no number
    assert corpus.peer_rel_err([ref[0][:1], ref[1]], ref) is None
    record = {"model": "m", "batch": 32, "device": "cuda", "precision": "fp32", "status": "wrong", "rel_err": 0.019,
              "hetpart_ms": 7.6, "peer": "torch_cuda_graph", "peer_ms": 4.9, "peer_rel_err": 0.017,
              "detail": "tolerance 0.01"}
    table = corpus.markdown(corpus.load_results(Path("/nonexistent")) | {"records": [record]})
    assert "peer rel. error 1.7e-02" in table


def test_a_timed_run_redoes_records_that_carry_no_time(corpus):
    """--time --skip-done: a correctness-only record (or an error) is not done; the
    H200 run of 2026-12-03 left 17 of 20 b1 rows untimed by skipping them."""
    untimed = {"model": "vit", "batch": 1, "device": "cuda", "precision": "fp32", "tf32": True, "status": "pass"}
    timed = {"model": "r50", "batch": 1, "device": "cuda", "precision": "fp32", "tf32": True, "status": "pass",
             "hetpart_ms": 1.4}
    assert corpus.done_keys([untimed, timed], timing=True) == {("r50", 1, "cuda", "fp32", None, True)}
    assert corpus.done_keys([untimed, timed], timing=False) == {("vit", 1, "cuda", "fp32", None, True),
                                                               ("r50", 1, "cuda", "fp32", None, True)}


def test_a_tf32_off_record_is_kept_beside_the_tf32_one(corpus):
    """A CUDA record with TF32 off (``HETPART_TF32=0``, the 1e-4 correctness check) and the
    TF32 one of the same model are two records: merging a new TF32 run's rows into the
    results replaced both (session 43 lost three TF32-off rows that way)."""
    off = {"model": "r50", "batch": 1, "device": "cuda", "precision": "fp32", "tf32": False, "status": "pass"}
    on = {"model": "r50", "batch": 1, "device": "cuda", "precision": "fp32", "tf32": True, "status": "pass",
          "hetpart_ms": 1.5}
    new_on = dict(on, hetpart_ms=1.4)
    merged = corpus._merged([off, on], {0: [new_on]})
    assert merged == [off, new_on]
    cpu = {"model": "r50", "batch": 1, "device": "cpu", "precision": "fp32", "tf32": True, "status": "pass"}
    assert corpus._key(cpu)[-1] is None  # TF32 is a CUDA build's setting only


def test_shape_mismatch_is_wrong(corpus):
    assert corpus.compare([np.zeros(3)], [np.zeros(4)])["status"] == "wrong"


@pytest.mark.slow
def test_cpu_run_records_resumes_and_reports_errors(corpus, tmp_path):
    out = tmp_path / "corpus.json"
    common = ["--devices", "cpu", "--out", str(out), "--export-dir", str(tmp_path / "exports"), "--timeout", "300"]
    assert corpus.main(["--models", "zoo:mlp:small", *common]) == 0
    assert corpus.main(["--onnx", f"missing={tmp_path / 'nope.onnx'}", "--skip-done", str(out), *common]) == 0
    data = json.loads(out.read_text())
    assert (data["schema"], data["version"]) == ("hetpart-corpus", corpus.VERSION)
    by_model = {r["model"]: r for r in data["records"]}
    assert by_model["zoo:mlp:small"]["status"] == "pass" and by_model["zoo:mlp:small"]["rel_err"] <= 1e-4
    assert by_model["missing"]["status"] == "error" and "prepare" in by_model["missing"]["detail"]
    assert "| zoo:mlp:small | 1 | cpu | fp32 | – | pass |" in out.with_suffix(".md").read_text()
    # Resuming skips what is recorded: the record (and its file) stay as they were.
    before = out.read_text()
    assert corpus.main(["--models", "zoo:mlp:small", "--skip-done", str(out), *common]) == 0
    assert out.read_text() == before


def test_budget_cut_leaves_no_record(corpus, tmp_path):
    """A stage cut by --budget is not an error record: the next call runs it again;
    a stage cut by --timeout is."""
    import time

    args = corpus._parser().parse_args(["--devices", "cpu", "--export-dir", str(tmp_path), "--timeout", "0.5"])
    item = corpus.Item("zoo:mlp:small", 1, ("cpu",))
    assert corpus.prepare_item(item, args, tmp_path, deadline=time.monotonic() + 0.5).steps == []
    ((device, timed_out),) = corpus.prepare_item(item, args, tmp_path).steps
    assert device == "cpu" and timed_out["status"] == "error" and "timed out" in timed_out["detail"]
    # A build left for a measure past the deadline: no record either.
    built = corpus.Prepared(item, [("cpu", tmp_path / "a-build")])
    assert corpus.measure_item(built, args, deadline=time.monotonic()) == []
    out = tmp_path / "corpus.json"
    assert corpus.main(["--models", "zoo:mlp:small", "--budget", "10", "--out", str(out), "--devices", "cpu",
                        "--export-dir", str(tmp_path)]) == 0
    assert json.loads(out.read_text())["records"] == []  # under 30 s left: nothing started


def test_schedule_prepares_side_by_side_and_measures_one_at_a_time(corpus):
    """At most ``jobs`` prepares at once (and that many do run together), one measure
    at a time, none beside a prepare when it must time alone (and no prepare starts
    while it waits, which could starve it); every item measured."""
    import threading
    import time

    lock, state, log = threading.Lock(), {"preparing": 0, "most": 0, "measuring": 0}, []
    first_wave = threading.Barrier(2, timeout=30)  # items 0 and 1 only pass it together
    alone, started_4, prepared_3 = {3}, threading.Event(), threading.Event()

    def prepare(item):
        with lock:
            state["preparing"] += 1
            state["most"] = max(state["most"], state["preparing"])
            log.append(("prepare", item))
        if item < 2:
            first_wave.wait()
        if item == 3:  # 4 starts while 3 is prepared ...
            assert started_4.wait(30)
        if item == 4:  # ... and still runs when 3, which must time alone, is ready
            started_4.set()
            assert prepared_3.wait(30)
        time.sleep(0.2 if item in (4, 5) else 0.01)  # 5 would run through 3's measure
        with lock:
            state["preparing"] -= 1
        if item == 3:
            prepared_3.set()
        return item

    def measure(item):
        for step in (1, -1):
            with lock:
                assert state["measuring"] == (0 if step == 1 else 1)
                assert item not in alone or state["preparing"] == 0
                state["measuring"] += step
            time.sleep(0.05)
        with lock:
            log.append(("measured", item))
        return f"record {item}"

    out = list(corpus.schedule(list(range(6)), prepare, measure, lambda item: item in alone, jobs=2,
                               deadline=float("inf")))
    assert sorted((index, result) for index, result, _ in out) == [(i, f"record {i}") for i in range(6)]
    assert state["most"] == 2
    assert {index: beside for index, _, beside in out}[3] == 0
    assert log.index(("measured", 3)) < log.index(("prepare", 5))  # held back while 3 waited and ran
    assert all(0 <= beside <= 2 for _, _, beside in out)


def test_schedule_starts_no_prepare_past_the_budget(corpus, capsys):
    """Past ``deadline - margin`` no prepare starts; those started are measured."""
    import threading

    reads = iter([0.0, 0.0] + [75.0] * 10)  # the clock, read before each prepare starts
    started, lock = [], threading.Lock()

    def prepare(item):
        with lock:
            started.append(item)
        return item

    out = list(corpus.schedule(list("abcde"), prepare, str.upper, lambda item: False, jobs=2, deadline=100.0,
                               clock=lambda: next(reads), margin=30.0))
    assert sorted(started) == ["a", "b"]
    assert sorted((index, result) for index, result, _ in out) == [(0, "A"), (1, "B")]
    assert "not starting c, d, e" in capsys.readouterr().out


@pytest.fixture(scope="module")
def cuda_run(corpus, tmp_path_factory):
    """One simulated-CUDA corpus run of zoo:mlp:small at batches 1 and 2, timed, two
    prepares side by side (``--jobs 2``): the results file and the export directory.
    test_parallel_prepares_write_every_record_in_item_order checks it; the bf16 test
    adds its record to a copy (each had run the model's fp32 build on its own)."""
    tmp = tmp_path_factory.mktemp("corpus-cuda")
    out, exports = tmp / "corpus.json", tmp / "exports"
    assert corpus.main(["--models", "zoo:mlp:small", "--batches", "1,2", "--devices", "cuda", "--simulate",
                        "--time", "--repeat", "2", "--jobs", "2", "--out", str(out),
                        "--export-dir", str(exports)]) == 0
    return out, exports


@pytest.mark.slow
def test_a_bf16_cuda_record_sits_beside_the_fp32_one(corpus, cuda_run, tmp_path):
    """--precision bf16 (simulated CUDA): its own record, its own key, within 2e-2."""
    shared, exports = cuda_run
    out = tmp_path / "corpus.json"
    out.write_text(shared.read_text())
    assert corpus.main(["--models", "zoo:mlp:small", "--devices", "cuda", "--simulate", "--out", str(out),
                        "--export-dir", str(exports), "--precision", "bf16", "--skip-done", str(out)]) == 0
    batch1 = [r for r in json.loads(out.read_text())["records"] if r["batch"] == 1]
    records = {r["precision"]: r for r in batch1}
    assert len(batch1) == 2 and set(records) == {"fp32", "bf16"}
    assert records["bf16"]["status"] == "pass" and 0 < records["bf16"]["rel_err"] <= 2e-2
    assert records["fp32"]["rel_err"] < records["bf16"]["rel_err"]  # the weights were rounded


@pytest.mark.slow
def test_parallel_prepares_write_every_record_in_item_order(cuda_run):
    """--jobs 2 (simulated CUDA): one complete record per item, listed as the items
    came (batch-major), whatever order the measures finished in.  Two items, both
    prepared side by side (the scheduler's order with more items than jobs is
    test_schedule_prepares_side_by_side_and_measures_one_at_a_time's, without
    processes)."""
    out, exports = cuda_run
    records = json.loads(out.read_text())["records"]
    assert [(r["model"], r["batch"], r["device"]) for r in records] == [("zoo:mlp:small", b, "cuda") for b in (1, 2)]
    for r in records:
        assert r["status"] == "pass" and r["rel_err"] <= 1e-2 and r["simulated"] and r["precision"] == "fp32"
        assert r["hetpart_ms"] > 0 and 0 <= r["compiles_beside_timing"] <= 2
    assert not list(exports.glob("builds-*"))  # the builds are gone


@pytest.fixture(scope="module")
def cpu_convs_run(corpus, tmp_path_factory):
    """One timed CPU corpus run of an ONNX file (``--onnx``, the 4-conv model of
    blocked_conv_cases, test_kernels_cpu_blocked_conv's), NCHW: the results file and the export directory.
    test_an_onnx_file_is_timed_against_onnxruntime_on_that_file checks its timing; the
    blocked test adds its NCHW8c record to a copy (each had run an NCHW build of its own)."""
    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from blocked_conv_cases import four_conv_model

    tmp = tmp_path_factory.mktemp("corpus-cpu")
    path, out, exports = tmp / "convs.onnx", tmp / "corpus.json", tmp / "exports"
    onnx.save(four_conv_model(1, 7), str(path))
    assert corpus.main(["--onnx", f"convs={path}", "--devices", "cpu", "--time", "--repeat", "2", "--out", str(out),
                        "--export-dir", str(exports)]) == 0
    return path, out, exports


@pytest.mark.slow
def test_an_onnx_file_is_timed_against_onnxruntime_on_that_file(cpu_convs_run):
    """--onnx with --time on the CPU: the peer, ONNX Runtime, opens the file given (it
    once looked for an export of that name, which --onnx never writes)."""
    _, out, _ = cpu_convs_run
    (record,) = json.loads(out.read_text())["records"]
    assert record["status"] == "pass" and record["peer"] == "onnxruntime_cpu" and record["peer_ms"] > 0
    assert record["compiles_beside_timing"] == 0  # CPU records time alone


@pytest.mark.slow
def test_a_blocked_cpu_record_sits_beside_the_nchw_one(corpus, cpu_convs_run, tmp_path):
    """--cpu-conv-block 8: the CPU build imports its convs in NCHW8c, matches ONNX Runtime
    (seeded normal inputs: negatives; ReLUs: zeros), says its layout, and keeps its own key."""
    path, shared, exports = cpu_convs_run
    out = tmp_path / "corpus.json"
    out.write_text(shared.read_text())
    assert corpus.main(["--onnx", f"convs={path}", "--devices", "cpu", "--out", str(out), "--export-dir",
                        str(exports), "--cpu-conv-block", "8", "--skip-done", str(out)]) == 0
    records = {r["layout"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {"NCHW", "NCHW8c"}
    assert records["NCHW8c"]["conv_block"] == 8 and "conv_block" not in records["NCHW"]
    assert all(r["status"] == "pass" and r["rel_err"] <= 1e-4 for r in records.values()), records
    assert "| convs | 1 | cpu NCHW8c | fp32 |" in out.with_suffix(".md").read_text()


def test_cpu_timing_settles_before_each_side_and_records_it(corpus, tmp_path, monkeypatch):
    """A CPU record times hetpart, then ORT, each after a settle (its waits in ``settle_ms``)."""
    import onnx
    from onnx import TensorProto, helper

    import hetpart.bench.settle as settle_mod

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    order = []
    monkeypatch.setattr(settle_mod, "settle", lambda: order.append("settle") or settle_mod.Settled(0.25, True, 0.0))

    class Session:
        class compiled:
            inputs = [type("T", (), {"name": "x"})()]

        def run(self, feeds):
            order.append("hetpart")

    out = corpus._timings(Session(), {"x": np.ones((1, 4), np.float32)}, "cpu", path, {}, repeat=2)
    assert out["peer"] == "onnxruntime_cpu" and out["settle_ms"] == [250.0, 250.0]
    assert order[0] == "settle" and order.index("settle", 1) > order.index("hetpart")


class _FakeSession:
    """What ``_timings`` uses of a Session: its inputs, ``run``, ``last_run_stats``."""

    class compiled:
        inputs = [type("T", (), {"name": "x"})()]

    def __init__(self, real_gpu=False):
        self.real_gpu, self.fed = real_gpu, []
        self.last_run_stats = None

    def run(self, feeds):
        from hetpart.runtime.stats import RunStats

        self.fed.append(feeds["x"])
        on_host = isinstance(feeds["x"], np.ndarray)
        self.last_run_stats = RunStats(h2d=int(on_host), feed_copies=int(on_host), d2h=1, bytes_d2h=8)
        return {"y": np.zeros(2, np.float32)}


PEER_NOTES = {"torch_cuda_graph_ms": 0.5, "torch_cuda_graph_ms_host": 0.61, "torch_cuda_graph_ms_device": 0.55,
              "torch_cuda_graph_ms_rel_err": 1e-4}


def test_a_cuda_row_carries_the_peer_at_every_boundary(corpus):
    """The peer's three times (replay alone, numpy to numpy, inputs on the GPU) come from
    the notes ``time_peer`` wrote; notes from before a boundary was timed give no field."""
    out = corpus._timings(_FakeSession(), {"x": np.zeros(2, np.float32)}, "cuda", None, dict(PEER_NOTES), 3)
    assert (out["peer_ms"], out["peer_host_ms"], out["peer_device_ms"]) == (0.5, 0.61, 0.55)
    assert "hetpart_device_ms" not in out  # a simulated session: no GPU to leave feeds on
    old = {k: v for k, v in PEER_NOTES.items() if not k.endswith(("_host", "_device"))}
    out = corpus._timings(_FakeSession(), {"x": np.zeros(2, np.float32)}, "cuda", None, old, 3)
    assert "peer_host_ms" not in out and "peer_device_ms" not in out


def test_on_a_gpu_hetpart_is_also_timed_with_its_feeds_there(corpus):
    """A real-GPU session is timed twice: from numpy (``hetpart_ms``) and from feeds made
    device tensors once, before the timing (``hetpart_device_ms``), with the copies the
    last such run made; every timed run of the second got the device tensor."""
    session = _FakeSession(real_gpu=True)
    x = np.arange(2, dtype=np.float32)
    made = []
    out = corpus.time_device_resident(session, {"x": x}, 3, to_device=lambda a: made.append(a) or ("dev", a))
    assert len(made) == 1 and all(f == ("dev", x) for f in session.fed)
    assert len(session.fed) == 4  # one warm-up, three timed
    assert out["hetpart_device_ms"] >= 0
    assert out["device_run_copies"] == {"feed_copies": 0, "h2d": 0, "d2h": 1, "bytes_d2h": 8}


def test_a_real_gpu_row_times_both_boundaries(corpus, monkeypatch):
    monkeypatch.setattr(corpus, "time_device_resident",
                        lambda s, feeds, repeat: {"hetpart_device_ms": 0.4, "device_run_copies": {"h2d": 0}})
    out = corpus._timings(_FakeSession(real_gpu=True), {"x": np.zeros(2, np.float32)}, "cuda", None,
                          dict(PEER_NOTES), 3)
    assert out["hetpart_device_ms"] == 0.4 and out["hetpart_ms"] > 0 and out["peer_device_ms"] == 0.55


def _table(corpus, *records):
    return corpus.markdown(corpus.load_results(Path("/nonexistent")) | {"records": list(records)})


def _row(table, model, device):
    (line,) = [ln for ln in table.splitlines() if ln.startswith(f"| {model} |") and f"| {device} |" in ln]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_table_pairs_times_by_boundary_and_never_mixes_them(corpus):
    """Issue 17's b32 rows read hetpart 9.14 ms (numpy to numpy) against the graph's 4.90
    (GPU time alone). Each ratio now divides two times taken at one boundary; a record
    from before a boundary was timed shows no ratio there."""
    header = _table(corpus).splitlines()
    cols = [c.strip() for c in next(ln for ln in header if ln.startswith("| model")).strip("|").split("|")]
    full = {"model": "new", "batch": 32, "device": "cuda", "precision": "fp32", "status": "pass", "rel_err": 1e-4,
            "detail": "tolerance 0.01", "peer": "torch_cuda_graph", "hetpart_ms": 9.0, "hetpart_device_ms": 4.4,
            "peer_ms": 4.9, "peer_host_ms": 7.5, "peer_device_ms": 5.0}
    old = {"model": "old", "batch": 32, "device": "cuda", "precision": "fp32", "status": "pass", "rel_err": 1e-4,
           "detail": "tolerance 0.01", "peer": "torch_cuda_graph", "hetpart_ms": 9.14, "peer_ms": 4.9}
    cpu = {"model": "new", "batch": 32, "device": "cpu", "precision": "fp32", "status": "pass", "rel_err": 1e-6,
           "detail": "tolerance 0.01", "peer": "onnxruntime_cpu", "hetpart_ms": 300.0, "peer_ms": 200.0}
    table = _table(corpus, full, old, cpu)
    row = dict(zip(cols, _row(table, "new", "cuda")))
    assert (row["hetpart ms np→np"], row["peer ms np→np"], row["× np→np"]) == ("9.000", "7.500", "**1.20**")
    assert (row["hetpart ms GPU-in"], row["peer ms GPU-in"], row["× GPU-in"]) == ("4.400", "5.000", "**0.88**")
    assert row["peer GPU ms"] == "4.900"
    row = dict(zip(cols, _row(table, "old", "cuda")))
    assert row["hetpart ms np→np"] == "9.140" and row["peer GPU ms"] == "4.900"
    assert row["× np→np"] == row["× GPU-in"] == row["peer ms np→np"] == "–"  # 9.14 / 4.90 is never shown
    row = dict(zip(cols, _row(table, "new", "cpu")))  # ONNX Runtime is timed numpy to numpy, as hetpart
    assert (row["peer ms np→np"], row["× np→np"], row["× GPU-in"]) == ("200.000", "**1.50**", "–")
    assert "peer with host copies" not in table


def test_a_device_run_that_copied_a_feed_says_so(corpus):
    record = {"model": "m", "batch": 1, "device": "cuda", "precision": "fp32", "status": "pass", "rel_err": 0.0,
              "detail": "tolerance 0.01", "hetpart_device_ms": 1.0,
              "device_run_copies": {"feed_copies": 0, "h2d": 1, "d2h": 1, "bytes_d2h": 4}}
    assert "GPU-in run still made 1 host->GPU feed copies" in _table(corpus, record)
    record["device_run_copies"]["h2d"] = 0
    assert "GPU-in run" not in _table(corpus, record)


def test_a_version_1_file_reads_as_version_2(corpus, tmp_path):
    """Version 2 only adds fields: a version-1 file keeps its records as they are and
    gains the version and the timing fields' note on load."""
    record = {"model": "m", "batch": 1, "device": "cuda", "precision": "fp32", "status": "pass", "rel_err": 0.0,
              "hetpart_ms": 1.0, "peer": "torch_cuda_graph", "peer_ms": 0.5}
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps({"schema": "hetpart-corpus", "version": 1, "relative_error": "r",
                                "tolerance": {"tf32_on": 1e-2, "tf32_off": 1e-4}, "records": [record]}))
    data = corpus.load_results(path)
    assert data["version"] == corpus.VERSION == 2 and data["records"] == [record]
    assert set(data["timing_fields"]) >= {"hetpart_ms", "hetpart_device_ms", "peer_ms", "peer_host_ms",
                                          "peer_device_ms"}
    corpus.save_results(path, data)
    assert "| m | 1 | cuda |" in path.with_suffix(".md").read_text()


@pytest.mark.cuda
def test_the_device_resident_timing_feeds_gpu_tensors_without_a_host_copy(corpus):
    """On the GPU: ``time_device_resident`` runs a real all-CUDA session on TVM CUDA
    tensors, counted by the runtime as no feed copy and no host->GPU copy, while the
    same session fed numpy makes both; its outputs are still right."""
    from hetpart.compiler.artifact import TensorSpec
    from hetpart.runtime import Session
    from hetpart.runtime.memory import aligned_array
    from hetpart.runtime.synthetic import chain, chain_reference

    shape = (256, 1024)
    x = aligned_array(TensorSpec("x", shape, "float32"))
    x[...] = np.random.default_rng(0).standard_normal(shape)
    with Session(chain(["cuda", "cuda"], shape, simulate=False)) as s:
        out = s.run({"x": x})
        assert s.last_run_stats.h2d >= 1 and s.last_run_stats.feed_copies >= 1  # numpy in: copied
        timed = corpus.time_device_resident(s, {"x": x}, 3)
        assert timed["device_run_copies"]["feed_copies"] == 0 and timed["device_run_copies"]["h2d"] == 0
        assert timed["device_run_copies"]["d2h"] >= 1 and timed["hetpart_device_ms"] > 0
        import tvm

        resident = s.run({"x": tvm.runtime.tensor(x, tvm.cuda(0))})  # what the timed runs computed
    for got in (out, resident):
        np.testing.assert_allclose(got["t1"], chain_reference(x, 2), rtol=1e-4, atol=1e-4)


def test_cpu_conv_block_option_reads_as_the_cli_conv_block(corpus):
    """--cpu-conv-block takes partition plan --conv-block's values (parse_conv_block): 8, 16, 32,
    auto; off is NCHW, as without the option; anything else an argparse error."""
    from hetpart.importer.conv_layout import host_block

    parse = corpus._parser().parse_args
    assert parse([]).cpu_conv_block is None
    assert [parse(["--cpu-conv-block", v]).cpu_conv_block for v in ("8", "16", "32", "auto", "off")] == \
        [8, 16, 32, host_block(), None]
    with pytest.raises(SystemExit):
        parse(["--cpu-conv-block", "7"])


def test_a_blocked_cpu_record_has_its_own_key_layout_and_cell(corpus):
    """What --cpu-conv-block adds to a record, without running one (the run itself is the
    slow test below): the layout fields, a key of its own beside the NCHW record's (merging
    keeps both), and the table's device cell."""
    assert corpus._layout_fields("cpu", 8) == {"layout": "NCHW8c", "conv_block": 8}
    assert corpus._layout_fields("cpu", None) == {"layout": "NCHW"}
    assert corpus._layout_fields("cuda", 8) == {}
    nchw = {"model": "convs", "batch": 1, "device": "cpu", "precision": "fp32", "status": "pass", "rel_err": 0.0,
            "detail": "tolerance 0.01", "layout": "NCHW"}
    blocked = dict(nchw, layout="NCHW8c", conv_block=8)
    assert corpus._key(nchw) != corpus._key(blocked)
    assert corpus._merged([nchw], {0: [blocked]}) == [nchw, blocked]
    assert corpus.done_keys([nchw], timing=False) == {corpus._key(nchw)}
    table = _table(corpus, nchw, blocked)
    assert "| convs | 1 | cpu NCHW8c | fp32 |" in table and "| convs | 1 | cpu | fp32 |" in table
