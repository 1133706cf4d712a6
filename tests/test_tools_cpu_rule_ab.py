"""tools/cpu_rule_ab.py: the before side built with the switch set, the switch restored for
the after side, both and ONNX Runtime run and compared."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import cpu_rule_ab  # noqa: E402

from hetpart.kernels import register_tile  # noqa: E402


def test_switch_set_then_restored():
    undo = cpu_rule_ab._set(["hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS=0"])
    assert register_tile.BATCH_OUTSIDE_PANELS is False
    for mod, attr, old in undo:
        setattr(mod, attr, old)
    assert register_tile.BATCH_OUTSIDE_PANELS is True


def test_ab_runs_three_sides_and_compares_outputs():
    r = cpu_rule_ab.ab("r50_1x1_56d", 2, ["hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS=0"], threads=1,
                       calls=1, rounds=1)
    assert len(r["best"]) == 3 and all(len(b) == 1 and b[0] > 0 for b in r["best"])
    assert r["diff_ab"] == 0.0 and r["err_ort"] < 1e-5
    assert register_tile.BATCH_OUTSIDE_PANELS is True


def test_tir_diff_names_the_kernels_a_switch_changes():
    import rule_switch_tir_diff
    import tvm

    from hetpart.bench.cpu_layers import LAYERS, with_batch
    from hetpart.targets import host_triple

    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "haswell", "num-cores": 2})
    off = ["hetpart.kernels.rules.cpu_matmul.RAGGED_PLANE=0"]
    assert rule_switch_tir_diff.changed(LAYERS["r50_1x1_14e"](), target, off) == (1, [])
    n, diff = rule_switch_tir_diff.changed(with_batch(LAYERS["r50_1x1_14e"](), 2), target, off)
    assert n == 1 and len(diff) == 1
