"""tools/turn_price.py: a trace's CPU spans and turns against a predicted timeline (issue 19)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "turn_price", Path(__file__).resolve().parents[1] / "tools" / "turn_price.py")
turn_price = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(turn_price)


def _trace(tmp_path) -> str:
    """p0_cpu 0-1000, p1_cuda (GPU 100 us), p2_cpu 1250-2250: a turn of 250 us, 150 beside the GPU."""
    meta = [{"ph": "M", "pid": 1, "tid": t, "name": "thread_name", "args": {"name": n}}
            for t, n in ((1, "cpu: p0_cpu"), (2, "host: cuda calls"), (3, "cpu: p2_cpu"), (4, "cuda stream"))]
    xs = [{"ph": "X", "pid": 1, "tid": 1, "name": "p0_cpu", "ts": 0.0, "dur": 1000.0},
          {"ph": "X", "pid": 1, "tid": 2, "name": "host p1_cuda", "ts": 1080.0, "dur": 150.0},
          {"ph": "X", "pid": 1, "tid": 4, "name": "p1_cuda", "ts": 1140.0, "dur": 100.0},
          {"ph": "X", "pid": 1, "tid": 3, "name": "p2_cpu", "ts": 1250.0, "dur": 1000.0},
          {"ph": "X", "pid": 2, "tid": 1, "name": "p0_cpu", "ts": 0.0, "dur": 1.0}]  # predicted: ignored
    path = tmp_path / "t.trace.json"
    path.write_text(json.dumps({"traceEvents": meta + xs}))
    return str(path)


def test_compare_reads_spans_and_the_turn_beside_the_gpu(tmp_path):
    meas = turn_price.measured(_trace(tmp_path))
    assert meas["cpu"] == {"p0_cpu": (0.0, 1000.0), "p2_cpu": (1250.0, 2250.0)} and meas["gpu"] == {"p1_cuda": 100.0}
    # predicted: spans of 1100 (100 of it overhead) and a 120 us gap of which 90 are CUDA kernels
    pred = {"cpu": [(0.0, 1100.0, 100.0), (1220.0, 2320.0, 100.0)], "turn_cuda": [90.0]}
    c = turn_price.compare(meas, pred)
    first = c["rows"][0]
    assert first["gap"] == 250.0 and first["gap_less_gpu"] == 150.0
    assert first["pred_gap_less_gpu"] == pytest.approx(30.0)
    assert c["span_mae"] == pytest.approx(100.0)
    assert c["turn_mae"] == pytest.approx(abs(30.0 + 100.0 - 150.0))  # the next span's overhead counts to the turn


def test_a_trace_of_another_plan_is_refused(tmp_path):
    meas = turn_price.measured(_trace(tmp_path))
    with pytest.raises(SystemExit):
        turn_price.compare(meas, {"cpu": [(0.0, 1.0, 0.0)], "turn_cuda": []})


def test_gpu_spans_lists_each_cuda_partition_per_trace(tmp_path):
    """--gpu-spans (tools/device_round.sh 125): a CUDA partition's span on the cuda stream, nan where a trace
    lacks it, the d2h copies on the stream, the streamed groups' medians."""
    from hetpart.contracts.trace import Process, Span, write_trace

    big = {"device": "cuda", "weights": "streamed", "weight_bytes": 84e6, "kernels": list(range(11)),
           "predicted_s": 9e-5}
    plan = {"partitions": [dict(big, name="p1_cuda"), dict(big, name="p3_cuda", weight_bytes=38e6),
                           {"name": "p2_cpu", "device": "cpu"}]}
    for who, spans in (("a", [Span("cuda stream", "p1_cuda", 0.0, 3e-4), Span("cuda stream", "p3_cuda", 4e-4, 6e-4),
                              Span("cuda stream", "d2h t9", 6e-4, 6.2e-4, kind="copy")]),
                       ("b", [Span("cuda stream", "p1_cuda", 0.0, 1e-4), Span("cpu: p2_cpu", "p3_cuda", 0.0, 1.0)])):
        write_trace(tmp_path / f"{who}.trace.json", [Process("measured", spans)], {})
    lines = turn_price.gpu_spans(tmp_path, plan)
    assert lines[0] == "a.trace.json: d2h on the cuda stream 1 (d2h t9 20)"
    assert lines[1] == "b.trace.json: d2h on the cuda stream 0 ()"
    assert lines[3].split() == ["p1_cuda", "84.0", "90", "300", "100"]
    assert lines[4].split() == ["p3_cuda", "38.0", "90", "200", "nan"]  # b's p3_cuda is on a CPU track
    assert lines[5] == "~84 MB streamed (1): a median 300 us sum 300; b median 100 us sum 100"
    assert lines[6] == "~38 MB streamed (1): a median 200 us sum 200; b median nan us sum 0"


def test_rates_replace_the_cpu_rates_and_the_link_in_a_copy():
    """--rates: the profile's CPU weight-read rates and pinned h2d bandwidth replaced in a copy,
    the loaded profile untouched; unknown keys and non-positive values refused."""
    from hetpart.costmodel import CostModel, Profile

    prof = Profile.load(Path(__file__).resolve().parents[1] / "bench/results/profile-capped-nvidia-h200.json")
    before_cpu, before_fit = prof.overheads["cpu"], prof.transfers.fit("h2d", "pinned")
    rates = turn_price.parse_rates("weight_read=140e9, contended_h2d=47e9,h2d=50.7e9")
    assert rates == {"weight_read": 140e9, "contended_h2d": 47e9, "h2d": 50.7e9}
    out = turn_price.with_rates(prof, rates)
    assert out.overheads["cpu"].weight_read_Bps == 140e9 and out.overheads["cpu"].contended_h2d_Bps == 47e9
    assert out.overheads["cpu"].call_s == before_cpu.call_s and out.overheads["cuda"] is prof.overheads["cuda"]
    assert out.transfers.fit("h2d", "pinned").bandwidth_Bps == 50.7e9
    assert out.transfers.fit("h2d", "pinned").latency_s == before_fit.latency_s
    assert prof.overheads["cpu"] is before_cpu and prof.transfers.fit("h2d", "pinned") is before_fit
    costs = CostModel(out)
    assert costs.cold_weight_bandwidth("cpu") == 140e9
    assert costs.transfer_cost(50_700_000, "cpu", "cuda") == pytest.approx(1e-3 + before_fit.latency_s)
    assert turn_price.with_rates(prof, {}) is prof
    for bad in ("bogus=1", "h2d=-1", "h2d=x"):
        with pytest.raises(ValueError):
            turn_price.parse_rates(bad)
