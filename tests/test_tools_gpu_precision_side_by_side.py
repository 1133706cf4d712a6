"""tools/gpu_precision_side_by_side.py: a model's CUDA kernels per build, side by side (no GPU).

Small BERT (256 tokens) in tf32, bf16 and bf16 with the scores stored in bf16: the three attention
kernels' dtypes and bytes change in the third, nothing else, and the totals say so."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import gpu_precision_side_by_side as sbs  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.usefixtures("bf16_switches_off")  # "bf16" is the build before them; a variant turns on
SWITCH = "hetpart.importer.low_precision_scores.STORE_SCORES_BF16=1"


def test_side_by_side_shows_the_scores_switch(capsys, tmp_path):
    md = tmp_path / "out.md"
    assert sbs.main(["zoo:bert:small:seq_len=256", "--variant", "tf32", "--variant", "bf16", "--variant", f"bf16:{SWITCH}",
                     "--md", str(md)]) == 0
    text = capsys.readouterr().out
    assert md.read_text().strip() == text.strip()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "f32 -> f32" in rows["softmax"] and "bf16 -> bf16" in rows["softmax"]
    assert rows["softmax"].count("bf16 -> bf16") == 1  # the third variant only
    assert "bf16/f32 -> f32" in rows["matmul2"]
    totals = [float(c.strip("* ")) for c in rows["**total (x count)**"].split("|")[2:] if c.strip().startswith("**")]
    assert totals[4] < totals[2] <= totals[0]  # MB: bf16 + switch < bf16 (weights) <= tf32


def test_side_by_side_shows_the_gemm_inputs_switch(capsys):
    """``bf16:acts`` (the short name of ``STORE_GEMM_INPUTS_BF16=1``) and ``bf16:acts,scores``: the
    merge-heads copy and fc1 (+ GELU) write bf16, the out-projection and fc2 read it; the kernels and
    their rules are the same; the MB fall in that order."""
    assert sbs.parse_variant("bf16:acts,scores")[1] == [sbs.SHORTHANDS["acts"], SWITCH]
    assert sbs.main(["zoo:bert:small:layers=1,seq_len=128", "--variant", "bf16", "--variant", "bf16:acts",
                     "--variant", "bf16:acts,scores"]) == 0
    text = capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    merge = next(r for k, r in rows.items() if k.startswith("fused_transpose") and "reshape" in k)
    assert merge.count("f32 -> bf16") == 2
    fc1 = next(r for k, r in rows.items() if "erf" in k)
    assert fc1.count("f32 -> bf16") == 2
    out_proj = next(r for k, r in rows.items() if k.startswith("fused_matmul") and "add3" in k)
    assert out_proj.count("bf16/f32 -> f32") == 2
    for r in rows.values():  # the same rule in each variant
        cells = [c.strip() for c in r.split("|")]
        if cells[1].startswith("**"):
            continue
        assert cells[5] == cells[9] == cells[13], r
    totals = [float(c.strip("* ")) for c in rows["**total (x count)**"].split("|")[2:] if c.strip().startswith("**")]
    assert totals[4] < totals[2] < totals[0]  # MB: + acts, scores < + acts < bf16
