"""tools/nchwc_in_situ.py: a small densenet's NCHW and NCHW8c builds timed kernel by kernel inside
whole runs: the kinds (concat + BN-ReLU, 1x1 / 3x3 convs, the one transform) and every conv of
the NCHW build beside its blocked twin are printed."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nchwc_in_situ  # noqa: E402
from blocked_conv_cases import small_densenet  # noqa: E402


def test_kinds_and_conv_pairs_are_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    path = tmp_path / "small_densenet.onnx"
    onnx.save(small_densenet(), str(path))
    assert nchwc_in_situ.main([str(path), "--runs", "1"]) == 0
    out = capsys.readouterr().out
    for kind in ("concat (+BN-ReLU)", "conv 1x1", "conv 3x3", "layout_transform", "pool"):
        assert kind in out, out
    assert out.count("\n   conv 3x3 ") == 3 and "convolutions: NCHW" in out, out  # stem and 2 growth convs
