"""tools/gpu_switch_ab.py: which kernels a GPU rule switch changes (no GPU), and its table.

A model of two convolutions at batch 32 -- a 3x3 one at 14x14 (392 tiles: the register
prefetch's) and a 1x1 one at 28x28 (its K loop ``cp.async``-pipelined) --: with
``REGISTER_PREFETCH=0`` as the before, only the first is listed; a switch to its current
value lists none.  The table gives each kernel's least round, the range and the total x count.
With ``--precision``: ViT's layer in bf16 lists the 4 weight-reading tensor-core functions
``WIDEN_IN_FRAGMENTS`` changes, in tf32 none.  tools/gpu_model_switch_ab.py: its variants, and its
build-and-time loop run on a simulated CUDA build.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import gpu_switch_ab as ab  # noqa: E402

from onnx_cases import model  # noqa: E402

SWITCH = "hetpart.kernels.rules.gpu_tensor_core.REGISTER_PREFETCH"


def _graph():
    import hetpart

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((128, 128, 3, 3)) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((128, 128, 1, 1)) * 0.1).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
               helper.make_node("Relu", ["a"], ["b"]),
               helper.make_node("Conv", ["b", "w2"], ["y"], kernel_shape=[1, 1])],
              [("x", [32, 128, 14, 14], np.float32)], [("y", [32, 128, 14, 14], np.float32)], {"w1": w1, "w2": w2})
    return hetpart.load(m)


def test_changed_kernels_are_those_the_switch_schedules_differently():
    graph = _graph()
    changed = ab.changed_kernels(graph, [f"{SWITCH}=0"])
    assert [k.func for k in changed] == [k.func for k in graph.kernels.values() if k.flops > 2e9]
    assert ab.changed_kernels(graph, [f"{SWITCH}=1"]) == []


def test_table_gives_least_round_range_and_total():
    rows = [ab.Row("fused_conv2d16_add9_relu7", 5, 7.4, [110.0, 112.0], [80.0, 84.0], 1e-4)]
    text = ab.table("r50", rows)
    assert "| fused_conv2d16_add9_relu7 | 5 | 7.40 | 110.0 (110.0-112.0) | 80.0 (80.0-84.0) | 1.38 | 92 |" in text
    assert "| **total x count** | 5 | | 550.0 | 400.0 | 1.38 |" in text


def test_whole_model_table_gives_least_round_range_and_ratio():
    text = ab.whole_table("zoo:resnet50 batch 1", {"before_ms": [1.30, 1.32], "after_ms": [0.90, 0.95],
                                                    "rel_diff": 2e-4})
    assert "| 1.300 (1.300-1.320) | 0.900 (0.900-0.950) | 0.69 | 2.0e-04 |" in text


def test_whole_model_compiles_every_kernel_for_the_gpu_with_the_switch_set():
    import gpu_model_switch_ab as mab

    compiled = mab.build(_graph(), "tf32", [f"{SWITCH}=0"], cuda_arch="sm_90")
    assert [p.device for p in compiled.partitions] == ["cuda"]
    assert [t.name for t in compiled.inputs] == ["x"]


# --- --precision and tools/gpu_model_switch_ab.py ---------------------------------------------------
TC = "hetpart.kernels.rules.gpu_tensor_core"


def test_precision_lists_the_bf16_builds_changed_kernels(monkeypatch):
    """ViT's layer in bf16: WIDEN_IN_FRAGMENTS=0 against it on (as ``--after`` sets it) changes
    exactly the 4 weight-reading tensor-core functions; in tf32 it changes none."""
    from model_spec import load_model
    from hetpart.importer import low_precision_activations, low_precision_scores
    from hetpart.kernels.rules import gpu_tensor_core

    monkeypatch.setattr(gpu_tensor_core, "WIDEN_IN_FRAGMENTS", True)
    # float32 activations (the build this test was written for): the bf16 ones rename and retype kernels
    monkeypatch.setattr(low_precision_activations, "STORE_GEMM_INPUTS_BF16", False)
    monkeypatch.setattr(low_precision_scores, "STORE_SCORES_BF16", False)

    graph = load_model("zoo:bert:seq_len=197,layers=1", 1)
    before = [f"{TC}.WIDEN_IN_FRAGMENTS=0"]
    bf16 = ab.changed_kernels(ab.lowered(graph, "bf16"), before, "bf16")
    assert sorted(k.func for k in bf16) == sorted(["fused_matmul_add2_bf16w", "fused_matmul_add2_add3_bf16w",
                                                   "fused_matmul3_add4_divide_fast_erf_add5_multiply1_multiply2_bf16w",
                                                   "fused_matmul4_add2_add3_bf16w"])
    assert ab.changed_kernels(ab.lowered(graph, "tf32"), before, "tf32") == []


def test_model_ab_variants_and_a_simulated_run(monkeypatch):
    """gpu_model_switch_ab: the variants (all set, none, each alone), and its timing loop
    run end to end on a simulated CUDA build (CPU tensors for the GPU's): every variant
    timed each round, outputs equal (the CPU build of a CUDA partition ignores the rules)."""
    import tvm

    import gpu_model_switch_ab as mab
    import hetpart
    from model_spec import load_model

    before = [f"{TC}.DEEP_PIPELINE=0", f"{TC}.WIDEN_IN_FRAGMENTS=0"]
    sets = mab.variants(before, each=True)
    assert sets == {"before": before, "after": [], "-DEEP_PIPELINE": before[:1], "-WIDEN_IN_FRAGMENTS": before[1:]}
    assert list(mab.variants(before[:1], each=True)) == ["before", "after"]
    real = hetpart.compile
    monkeypatch.setattr(hetpart, "compile", lambda *a, **k: real(*a, **{**k, "simulate": True}))
    monkeypatch.setattr(tvm, "cuda", tvm.cpu)
    result = mab.ab(load_model("zoo:bert:small:layers=1", 1), "bf16", sets, rounds=2, repeat=2)
    assert set(result) == set(sets)
    assert all(len(r["ms"]) == 2 and r["rel_diff"] == 0.0 for r in result.values())
    assert "| -DEEP_PIPELINE |" in mab.table("t", result)


def test_after_sets_the_checkout_side_so_an_off_switch_is_ab_d_as_on(capsys):
    """--after: DEEP_PIPELINE is off by default, so --before ...=0 alone changes no kernel;
    with --after ...=1 the 6 batch-1 matmuls on starved grids differ (the 4 weight-reading
    projections and attention's 2; --list, no GPU)."""
    deep = f"{TC}.DEEP_PIPELINE"
    common = ["zoo:bert:seq_len=197,layers=1", "--precision", "bf16", "--before", f"{deep}=0", "--list"]
    assert ab.main(common) == 0
    assert capsys.readouterr().out.strip() == ""
    assert ab.main(common + ["--after", f"{deep}=1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 6
