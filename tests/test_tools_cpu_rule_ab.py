"""tools/cpu_rule_ab.py: the before side built with the switch set, the switch restored for
the after side, both and ONNX Runtime run and compared."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import cpu_rule_ab  # noqa: E402

from hetpart.kernels import register_tile  # noqa: E402


def test_switch_set_then_restored():
    with cpu_rule_ab.switched(["hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS=0"]):
        assert register_tile.BATCH_OUTSIDE_PANELS is False
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
    assert rule_switch_tir_diff.changed(LAYERS["r50_1x1_7"](), target, off) == (1, [])  # 7x7: never padded
    n, diff = rule_switch_tir_diff.changed(with_batch(LAYERS["r50_1x1_14e"](), 2), target, off)
    assert n == 1 and len(diff) == 1


def test_kernel_switch_ab_times_only_the_changed_kernels():
    """tools/kernel_switch_ab.py: the depthwise row switch changes mobilenet_v2's 144x56x56
    depthwise kernel (8-lane rows on both x86 widths); it is built both ways, run on the
    same inputs (outputs equal: the same sums in the same order) and timed each round; a
    switch set to its current value changes nothing and times nothing."""
    import kernel_switch_ab

    from hetpart.bench.cpu_layers import LAYERS
    from hetpart.kernels.rules import cpu_depthwise

    rows = kernel_switch_ab.ab_kernels(LAYERS["mb_dw_56"](), ["hetpart.kernels.rules.cpu_depthwise.REGISTER_ROWS=0"],
                                       calls=1, rounds=2)
    assert len(rows) == 1 and rows[0]["calls"] == 1 and rows[0]["diff"] == 0.0
    assert len(rows[0]["before"]) == 2 and all(t > 0 for t in rows[0]["before"] + rows[0]["after"])
    assert cpu_depthwise.REGISTER_ROWS is True
    assert kernel_switch_ab.ab_kernels(LAYERS["mb_dw_56"](), ["hetpart.kernels.rules.cpu_depthwise.REGISTER_ROWS=1"],
                                       calls=1, rounds=1) == []


def test_after_and_cores_build_the_after_side_forced_for_a_target_of_n_cores(monkeypatch):
    """``--after`` sets a switch for the after side only (restored after), ``--cores`` builds both
    sides for that many cores: the split forced at 16 cores on mobilenet_v2's 7x7 projection
    changes its kernel (outputs equal to ORT's), where at 2 and the default margin it would not."""
    seen = []
    real = cpu_rule_ab.switched

    def spy(assignments):
        seen.append((list(assignments), register_tile.SMALL_SPLIT_MARGIN))
        return real(assignments)

    monkeypatch.setattr(cpu_rule_ab, "switched", spy)
    r = cpu_rule_ab.ab("mb_proj_7add", 1, ["hetpart.kernels.register_tile.SMALL_SPLIT=0"], threads=1, calls=1,
                       rounds=1, cores=16, after=("hetpart.kernels.register_tile.SMALL_SPLIT_MARGIN=10",))
    assert [a for a, _ in seen] == [["hetpart.kernels.register_tile.SMALL_SPLIT=0"],
                                    ["hetpart.kernels.register_tile.SMALL_SPLIT_MARGIN=10"]]
    assert r["err_ort"] < 1e-5
    assert register_tile.SMALL_SPLIT is True and register_tile.SMALL_SPLIT_MARGIN == 0.9


def test_model_ratio_times_hetpart_and_ort_with_a_switch_restored():
    """tools/cpu_model_ratio.py: one build (here with the broadcast-rows switch off) and ONNX
    Runtime, each timed per round, outputs compared with ORT's; the switch restored after."""
    import cpu_model_ratio

    from hetpart.kernels import analysis

    r = cpu_model_ratio.measure("dn_bn_7", 2, threads=1, calls=1, rounds=2,
                                assignments=("hetpart.kernels.analysis.BROADCAST_ROWS_PAST_SUFFIX=0",))
    assert len(r["hetpart"]) == 2 and len(r["ort"]) == 2 and all(t > 0 for t in r["hetpart"] + r["ort"])
    assert r["err_ort"] < 1e-5
    assert analysis.BROADCAST_ROWS_PAST_SUFFIX is True


def test_ab_precision_after_stores_the_after_sides_weights_in_bf16():
    """``precisions=("fp32", "bf16")``: the after side's weights rounded to bfloat16 (outputs
    differ a little), each side's error against ORT float32 reported; fp32 stays exact."""
    r = cpu_rule_ab.ab("r50_1x1_56d", 1, [], threads=1, calls=1, rounds=1, precisions=("fp32", "bf16"))
    assert len(r["best"]) == 3 and len(r["err_sides"]) == 2
    assert r["err_sides"][0] < 1e-5 < r["err_sides"][1] < 2e-2
    assert r["diff_ab"] > 0 and r["err_ort"] == r["err_sides"][1]
