"""contracts.trace: the one trace reader reads back what write_trace writes, both JSON forms,
and refuses another schema or version with a TraceError."""

from __future__ import annotations

import json

import pytest

from hetpart import TraceError
from hetpart.contracts.trace import COPY, Process, Span, TraceSpan, parse_trace, read_trace, write_trace


def _written(tmp_path):
    measured = [Span("cpu: p0_cpu", "p0_cpu", 0.0, 1e-3), Span("cuda stream", "p1_cuda", 1.1e-3, 1.2e-3),
                Span("cuda stream", "d2h t3", 1.2e-3, 1.25e-3, kind=COPY), Span("cpu: p2_cpu", "p2_cpu", 1.3e-3, 2e-3)]
    predicted = [Span("predicted cpu", "p0_cpu", 0.0, 1e-3)]
    return write_trace(tmp_path / "run.trace.json", [Process("measured", measured),
                                                      Process("predicted (cost model)", predicted)],
                       {"model": "m"}, args_of=lambda s: {"kernels": 2})


def test_reads_back_what_write_trace_writes(tmp_path):
    t = read_trace(_written(tmp_path))
    assert t.version == 2 and t.about == {"model": "m"}
    assert t.processes == {1: "measured", 2: "predicted (cost model)"}
    assert t.track_names(1) == ["cpu: p0_cpu", "cuda stream", "cpu: p2_cpu"]
    assert t.track_names("predicted (cost model)") == ["predicted cpu"]
    assert [s.name for s in t.spans_on("cuda stream", "measured")] == ["p1_cuda", "d2h t3"]
    p1, d2h = t.spans_on("cuda stream", 1)
    assert p1.start_us == pytest.approx(1100.0) and p1.dur_us == pytest.approx(100.0)
    assert p1.end_us == pytest.approx(1200.0) and p1.args == {"run": 0, "kernels": 2} and p1.kind == "partition"
    assert d2h.kind == COPY and d2h.process == "measured" and d2h.pid == 1
    assert [s.name for s in t.of(2)] == ["p0_cpu"] and len(t.of()) == 5
    assert t.spans_on("cuda stream", 2) == []


def test_the_list_form_and_a_dict_without_header_read_alike(tmp_path):
    events = [{"ph": "M", "pid": 1, "tid": 4, "name": "thread_name", "args": {"name": "cuda stream"}},
              {"ph": "X", "pid": 1, "tid": 4, "name": "p1_cuda", "ts": 10, "dur": 5},
              {"ph": "X", "pid": 1, "tid": 9, "name": "unnamed", "ts": 0.0, "dur": 1.0},
              {"ph": "i", "pid": 1, "tid": 4, "name": "instant", "ts": 3.0}]
    (tmp_path / "list.json").write_text(json.dumps(events))
    (tmp_path / "dict.json").write_text(json.dumps({"traceEvents": events}))
    a, b = read_trace(tmp_path / "list.json"), read_trace(tmp_path / "dict.json")
    assert a == b and a.version is None and a.about == {}
    assert a.spans_on("cuda stream") == [TraceSpan("p1_cuda", "cuda stream", 10.0, 5.0, pid=1)]
    assert [s.track for s in a.spans] == ["cuda stream", ""]  # a span whose thread has no name: track ""


@pytest.mark.parametrize("doc, words", [
    ({"schema": "hetpart-trace", "version": 1, "traceEvents": []}, "version 1"),
    ({"schema": "hetpart-plan", "version": 2, "traceEvents": []}, "not a hetpart-trace file"),
    ({"schema": "hetpart-trace", "version": 2}, "no list of trace events"),
    ({"traceEvents": [{"ph": "X", "pid": 1}]}, "without a name or ts"),
    ("text", "no list of trace events"),
])
def test_another_schema_or_version_or_shape_is_a_trace_error(tmp_path, doc, words):
    path = tmp_path / "t.trace.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TraceError, match=words) as info:
        read_trace(path)
    assert str(path) in str(info.value)


def test_a_missing_or_broken_file_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "bad.json")


def test_parse_trace_takes_a_decoded_document():
    assert parse_trace([]).spans == () and parse_trace({"traceEvents": []}).processes == {}
