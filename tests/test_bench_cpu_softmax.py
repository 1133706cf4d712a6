"""``hetpart.bench.cpu_softmax``: the CPU softmax benchmark runs end to end on small
shapes and reports hetpart's kernel against ONNX Runtime's output."""

from __future__ import annotations

import pytest

from hetpart.bench import cpu_softmax
from hetpart.bench.timing import Settings


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_measure_times_both_and_compares_outputs(op):
    row = cpu_softmax.measure(op, (4, 48), threads=1, settings=Settings.tiny())
    assert row["hetpart_s"] > 0 and row["ort_s"] > 0
    assert row["ratio"] == pytest.approx(row["hetpart_s"] / row["ort_s"])
    assert row["max_abs_diff"] < 1e-5


def test_main_prints_one_line_per_op_and_shape(capsys, monkeypatch):
    monkeypatch.setattr(cpu_softmax, "Settings", type("S", (), {"quick": staticmethod(Settings.tiny)}))
    assert cpu_softmax.main(["--ops", "Softmax,LogSoftmax", "--shapes", "2x32,3x16", "--quick"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith(("Softmax", "LogSoftmax"))]
    assert len(lines) == 4


@pytest.mark.parametrize("op", ["Sigmoid", "SiLU"])
def test_measure_times_elementwise_ops(op):
    row = cpu_softmax.measure(op, (1, 8, 5, 7), threads=1, settings=Settings.tiny())
    assert row["hetpart_s"] > 0 and row["ort_s"] > 0
    assert row["max_abs_diff"] < 1e-5


def test_op_model_rejects_an_unknown_op():
    with pytest.raises(ValueError, match="Sigmoid"):
        cpu_softmax.op_model("Gelu", (2, 3))
