"""The GPU kernel tools (tools/gpu_kernel_categories.py, gpu_static_kernels.py,
gpu_kernel_profile.py): what runs without a GPU or torch -- the categories on both
sides, reading a hetpart profile, the per-category table, the launch shape read from
scheduled TIR and the CUDA source.  The tools' GPU/torch parts (``hetpart profile``
on the device, ``torch.profiler``) run in the ``cuda`` (and ``slow``) test at the end:

    PYTHONPATH=. python3 -m pytest tests/test_tools_gpu_kernels.py -q -m cuda
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import gpu_kernel_categories as cats  # noqa: E402
import gpu_kernel_profile as prof  # noqa: E402
import gpu_static_kernels as static  # noqa: E402


# --- categories -------------------------------------------------------------------------------
@pytest.mark.parametrize("weight, image, want", [
    ((32, 1, 3, 3), (1, 32, 112, 112), "depthwise conv"),
    ((672, 1, 5, 5), (1, 672, 14, 14), "depthwise conv"),
    ((96, 32, 1, 1), (1, 32, 112, 112), "pointwise conv"),
    ((8, 32, 1, 1), (1, 32, 1, 1), "squeeze-excite"),
    ((32, 3, 3, 3), (1, 3, 224, 224), "conv"),
    ((96, 3, 4, 4), (1, 3, 224, 224), "conv"),
    ((64, 8, 3, 3), (1, 64, 56, 56), "conv"),  # grouped, not depthwise
])
def test_conv_category(weight, image, want):
    assert cats.conv_category(weight, image) == want


def test_hetpart_categories_of_fused_kernels():
    img, gate = (1, 32, 112, 112), (1, 32, 1, 1)
    # An SE FC fused with its sigmoid and the gate multiply stays squeeze-excite (conv wins).
    assert cats.hetpart_category(["conv2d", "add", "sigmoid", "multiply"], "conv2d", [(1, 8, 1, 1), img],
                                 [(32, 8, 1, 1), (1, 32, 1, 1)]) == "squeeze-excite"
    assert cats.hetpart_category(["multiply"], "injective", [gate, img], []) == "squeeze-excite"
    assert cats.hetpart_category(["multiply"], "injective", [img, img], []) == "elementwise"
    assert cats.hetpart_category(["mean"], "reduce", [img], [], se_pool=True) == "squeeze-excite"
    assert cats.hetpart_category(["mean"], "reduce", [img], []) == "pool"
    assert cats.hetpart_category(["layer_norm"], "norm", [(1, 56, 56, 96)], [(96,), (96,)]) == "norm"
    assert cats.hetpart_category(["matmul", "add"], "matmul", [(1, 3136, 96)], [(96, 384)]) == "matmul"
    assert cats.hetpart_category(["softmax"], "softmax", [(1, 12, 197, 197)], []) == "softmax"
    assert cats.hetpart_category(["transpose"], "injective", [(1, 96, 56, 56)], []) == "elementwise"


def test_torch_category_follows_the_outermost_group():
    conv = ("Conv2d", "depthwise conv")
    group = ("Conv2dNormActivation", "depthwise conv")
    # BN and SiLU inside a conv-norm-activation group count with its convolution.
    assert cats.torch_category([("EfficientNet", "elementwise"), group, ("BatchNorm2d", "norm")]) == "depthwise conv"
    assert cats.torch_category([group, ("SiLU", "elementwise")]) == "depthwise conv"
    # Everything in an SE block is squeeze-excite, its convolutions too.
    se = ("SqueezeExcitation", "squeeze-excite")
    assert cats.torch_category([("MBConv", "elementwise"), se, ("Conv2d", "squeeze-excite")]) == "squeeze-excite"
    assert cats.torch_category([("MBConv", "elementwise"), se]) == "squeeze-excite"
    # Otherwise the innermost module's; outside every module: elementwise.
    assert cats.torch_category([("CNBlock", "elementwise"), ("LayerNorm", "norm")]) == "norm"
    assert cats.torch_category([("CNBlock", "elementwise"), conv]) == "depthwise conv"
    assert cats.torch_category([("CNBlock", "elementwise")]) == "elementwise"
    assert cats.torch_category([]) == "elementwise"
    assert cats.torch_module_category("Linear") == "matmul"
    assert cats.torch_module_category("MultiheadAttention") == "matmul"
    assert cats.torch_kernel_category("void at::native::conv_depthwise2d_forward_kernel<float>") == "depthwise conv"
    assert cats.torch_kernel_category("elementwise_kernel") is None
    assert cats.torch_module_category("Conv2dNormActivation", (96, 32, 1, 1), (1, 32, 56, 56)) == "pointwise conv"


# --- hetpart side: a kineto trace ----------------------------------------------------------------
def _x(cat, name, ts, dur, pid=0, tid=7, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _recorded_trace() -> dict:
    """Two forwards of a hetpart session as ``torch.profiler`` exports them (kineto's
    Chrome trace, trimmed): host ranges, the driver's launches, the GPU's kernels, copies
    and its copy of the annotation, flow and metadata events; one warm-up kernel before
    the first forward.  GPU kernels carry TVM's names: ``<func>_kernel``, a split-K
    function's second kernel ``_kernel_1``, ``mean1_kernel`` beside ``mean_kernel``."""
    ev = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}},
          _x("kernel", "fused_conv2d1_add_tir_sigmoid_multiply_kernel", 1699000000050.0, 3.9, correlation=1)]
    for f, t0 in enumerate((1699000000100.0, 1699000000400.0)):
        ev += [
            _x("user_annotation", "hp|forward", t0, 250.0, pid=4321, tid=4321, **{"External id": f}),
            _x("gpu_user_annotation", "hp|forward", t0 + 30.0, 200.0),
            _x("cuda_runtime", "cudaMemcpyAsync", t0 + 10.0, 6.0, pid=4321, tid=4321),
            _x("gpu_memcpy", "Memcpy HtoD (Pageable -> Device)", t0 + 20.0, 20.0, bytes=602112),
            _x("cuda_runtime", "cudaGraphLaunch", t0 + 35.0, 8.0, pid=4321, tid=4321),
            _x("kernel", "fused_conv2d1_add_tir_sigmoid_multiply_kernel", t0 + 45.0, 4.0, grid=[1568, 1, 1]),
            _x("kernel", "mean_kernel", t0 + 52.0, 1.0),
            _x("kernel", "mean1_kernel", t0 + 55.0, 1.5),
            _x("kernel", "fused_conv2d42_add31_add35_kernel", t0 + 60.0, 10.0),
            _x("kernel", "fused_conv2d42_add31_add35_kernel_1", t0 + 72.0, 2.0),
            _x("kernel", "fused_conv2d28_add20_add24_kernel", t0 + 80.0, 5.0),
            _x("kernel", "fused_conv2d28_add20_add24_kernel", t0 + 90.0, 5.0),
            _x("kernel", "copy_kernel_from_elsewhere", t0 + 100.0, 1.0),
            _x("gpu_memcpy", "Memcpy DtoH (Device -> Pageable)", t0 + 110.0, 2.0, bytes=4000),
            {"ph": "f", "id": f, "pid": 0, "tid": 7, "ts": t0 + 45.0, "cat": "ac2g", "name": "ac2g"},
        ]
    return {"schemaVersion": 1, "traceEvents": ev}


_CATS = {"fused_conv2d1_add_tir_sigmoid_multiply": "depthwise conv", "mean": "pool", "mean1": "squeeze-excite",
         "fused_conv2d42_add31_add35": "pointwise conv", "fused_conv2d28_add20_add24": "pointwise conv",
         "fused_conv2d4_add3": "pointwise conv"}


def test_kernel_names_map_to_their_functions_exactly():
    funcs = ["mean", "mean1", "f", "f_kernel", "fused_conv2d42_add31_add35"]
    assert cats.function_of_kernel("mean_kernel", funcs) == "mean"
    assert cats.function_of_kernel("mean1_kernel", funcs) == "mean1"
    assert cats.function_of_kernel("fused_conv2d42_add31_add35_kernel_1", funcs) == "fused_conv2d42_add31_add35"
    assert cats.function_of_kernel("fused_conv2d42_add31_add35_kernel2", funcs) == "fused_conv2d42_add31_add35"
    assert cats.function_of_kernel("mean1_prepacked_kernel", funcs) == "mean1"
    assert cats.function_of_kernel("f_kernel_kernel", funcs) == "f_kernel"  # the longer function
    assert cats.function_of_kernel("mean2_kernel", funcs) is None
    assert cats.function_of_kernel("void at::native::reduce_kernel<512, 1>", funcs) is None


def test_hetpart_kernels_from_a_recorded_trace():
    """The bug this replaces: the cost model's one-kernel VM call, less the empty call,
    read 0 us for every kernel shorter than the call (EfficientNet-B0's 16 depthwise
    convolutions: 0.0 us).  From the trace they get the GPU's own durations."""
    events = prof.trace_events(_recorded_trace())
    rows, unmatched = prof.hetpart_trace_times(events, _CATS, {"mean1": "Reduction"})
    got = {r.name: (r.category, pytest.approx(r.us), pytest.approx(r.count), r.rule) for r in rows}
    assert got == {
        "fused_conv2d1_add_tir_sigmoid_multiply": ("depthwise conv", 4.0, 1, ""),  # not the warm-up's 3.9
        "mean": ("pool", 1.0, 1, ""),
        "mean1": ("squeeze-excite", 1.5, 1, "Reduction"),
        "fused_conv2d42_add31_add35": ("pointwise conv", 12.0, 1, ""),  # both kernels of the function
        "fused_conv2d28_add20_add24": ("pointwise conv", 5.0, 2, ""),  # one function, launched twice
        "copy_kernel_from_elsewhere": ("other", 1.0, 1, ""),
    }
    assert unmatched == ["copy_kernel_from_elsewhere"]
    per = prof.by_category(rows)
    assert per["depthwise conv"] == (pytest.approx(4.0), 1)
    assert per["pointwise conv"] == (pytest.approx(22.0), 3)


def test_where_the_forward_goes():
    t = prof.forward_time(prof.trace_events(_recorded_trace()))
    assert t.forwards == 2 and t.wall == pytest.approx(250.0)
    assert t.kernel_count == 8 and t.kernels == pytest.approx(4 + 1 + 1.5 + 10 + 2 + 5 + 5 + 1)
    assert t.copies == pytest.approx(22.0)
    assert t.span == pytest.approx(112.0 - 20.0)  # HtoD start to DtoH end
    assert t.gpu_idle == pytest.approx(92.0 - 22.0 - 29.5)
    assert t.host_outside == pytest.approx(250.0 - 92.0)
    text = prof.forward_table(t, 0.1, "f")
    assert "| GPU kernels (sum) | 29.5 | 12 % |" in text and "PyTorch CUDA graph (corpus peer): 100.0 us" in text
    assert prof.forward_time(prof.trace_events({"traceEvents": []})) is None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_main_reads_hetpart_side_from_a_trace(tmp_path, precision):
    """The tool end to end without a GPU or torch: a zoo model's export in the export
    directory, a trace of one forward naming each of its functions' kernels, no PyTorch
    side: every function found, its category, the forward's breakdown.  In bf16 the
    build's functions are the lowered graph's (``<func>_bf16w``), and so are the trace's
    kernel names."""
    import json

    from hetpart import load
    from hetpart.models import build

    name = "zoo:efficientnet:small"
    path = tmp_path / "zoo_efficientnet_small-b1.onnx"
    onnx.save(build("efficientnet", small=True), str(path))
    kernels = prof.hetpart_kernel_list(prof.lowered(load(str(path)), precision))
    assert any(f.endswith("_bf16w") for _, f, _, _ in kernels) == (precision == "bf16")
    t0, events = 1000.0, []
    for i, (_, func, _, count) in enumerate(kernels):
        for j in range(count):
            events.append(_x("kernel", f"{func}_kernel", t0 + 10.0 + 5 * (i + j), 2.0))
    events.append(_x("user_annotation", prof.FORWARD, t0, 10.0 + 5 * len(events) + 20.0, pid=1, tid=1))
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    out = tmp_path / "k.json"
    assert prof.main([name, "--export-dir", str(tmp_path), "--trace", str(trace), "--no-torch", "--json", str(out),
                      "--precision", precision]) == 0
    data = json.loads(out.read_text())
    assert data["missing"] == [] and data["unmatched"] == []
    launches = sum(r["count"] for r in data["hetpart"])
    assert launches == sum(k[3] for k in kernels)
    assert {r["category"] for r in data["hetpart"]} >= {"depthwise conv", "pointwise conv", "squeeze-excite"}
    assert data["forward"]["kernels"] == pytest.approx(2.0 * launches)



@pytest.mark.parametrize("on", [False, True])
def test_main_sets_switches_for_the_rules_it_reads(tmp_path, monkeypatch, on):
    """``--set`` (an off-by-default GPU rule switched on): the rule column is the switched build's
    (BERT's head splits ``gpu_layout_copy``'s; scheduled for sm_90 here, without a GPU), the
    switch restored afterwards."""
    import json

    scheduled = prof.scheduled_rules
    monkeypatch.setattr(prof, "scheduled_rules", lambda graph, arch=None: scheduled(graph, "sm_90"))
    from hetpart import load
    from hetpart.kernels.rules import gpu_layout_copy
    from hetpart.models import build

    name = "zoo:bert:small"
    path = tmp_path / "zoo_bert_small-b1.onnx"
    onnx.save(build("bert", small=True), str(path))
    kernels = prof.hetpart_kernel_list(prof.lowered(load(str(path)), "fp32"))
    events = [_x("kernel", f"{func}_kernel", 1010.0 + 5 * i, 2.0) for i, (_, func, _, _) in enumerate(kernels)]
    events.append(_x("user_annotation", prof.FORWARD, 1000.0, 20.0 + 5 * len(events), pid=1, tid=1))
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    out = tmp_path / "k.json"
    switch = [f"--set=hetpart.kernels.rules.gpu_layout_copy.LAYOUT_COPY={int(on)}"]
    assert prof.main([name, "--export-dir", str(tmp_path), "--trace", str(trace), "--no-torch", "--json", str(out),
                      *switch]) == 0
    rules = {r["rule"] for r in json.loads(out.read_text())["hetpart"]}
    assert ("GpuLayoutCopy" in rules) == on
    assert gpu_layout_copy.LAYOUT_COPY is False


def test_rules_of_a_graph_scheduled_for_sm90():
    """Without a profile the rule column comes from scheduling the graph as the build does."""
    from hetpart import load
    from hetpart.models import build

    graph = load(build("efficientnet", small=True))
    rules = prof.scheduled_rules(graph, "sm_90")
    assert set(rules) == {k.func for k in graph.kernels.values()}
    assert "GpuWindowReduction" in rules.values()  # its depthwise convs


def test_a_trace_whose_gpu_clock_disagrees_counts_every_kernel():
    """GPU timestamps nowhere inside the host ranges: every kernel of the trace counts,
    spread over the forwards; span and idle are not measured."""
    trace = _recorded_trace()
    for e in trace["traceEvents"]:
        if e.get("cat") in ("kernel", "gpu_memcpy"):
            e["ts"] += 5e6
    events = prof.trace_events(trace)
    assert not prof.aligned(events) and prof.aligned(prof.trace_events(_recorded_trace()))
    rows, _ = prof.hetpart_trace_times(events, _CATS)
    dw = next(r for r in rows if r.category == "depthwise conv")
    assert dw.count == pytest.approx(1.5) and dw.us == pytest.approx((3.9 + 4.0 + 4.0) / 3)  # the warm-up one too
    t = prof.forward_time(events)
    assert not t.aligned and t.kernels == pytest.approx((3.9 + 2 * 29.5) / 2)
    assert math.isnan(t.span) and math.isnan(t.host_outside)
    assert "clocks not aligned" in prof.forward_table(t, None, "f")


def test_rules_come_from_a_profile_its_times_do_not():
    p = {"schema": "hetpart-profile", "overheads": {"cuda": {"empty_s": 3e-6}},
         "kernels": {"cuda": {"s1": {"status": "ok", "rule": "GpuWindowReduction", "timing": {"median_s": 1e-6}}}}}
    assert prof.profile_rules(p, [("s1", "f1", "depthwise conv", 1), ("s2", "f2", "pool", 1)]) == {
        "f1": "GpuWindowReduction"}


def test_torch_times_per_category_and_the_table():
    label = lambda cls, cat: f"{prof.LABEL}{cls}|{cat}"  # noqa: E731
    runs = 2
    launches = []
    for _ in range(runs):
        launches += [
            (["aten::conv2d", label("Conv2dNormActivation", "depthwise conv"), label("Conv2d", "depthwise conv"),
              "cudaLaunchKernel"], "conv_depthwise2d_forward_kernel", 4.0),
            ([label("Conv2dNormActivation", "depthwise conv"), label("BatchNorm2d", "norm"), "aten::batch_norm"],
             "bn_fw_inf_kernel", 2.0),
            ([label("SqueezeExcitation", "squeeze-excite"), label("Conv2d", "squeeze-excite")], "gemv", 1.0),
            (["aten::add"], "elementwise_kernel", 0.5),
            (["aten::softmax"], "cunn_SoftMaxForward", 0.25),  # outside every module: by its name
        ]
    torch_rows = prof.torch_times(launches)
    for r in torch_rows:
        r.count = r.count / runs
    per = prof.by_category(torch_rows)
    assert per == {"depthwise conv": (pytest.approx(6.0), 2), "squeeze-excite": (pytest.approx(1.0), 1),
                   "elementwise": (pytest.approx(0.5), 1), "softmax": (pytest.approx(0.25), 1)}
    het = [prof.KernelTime("fused_dw", "depthwise conv", 30.0, 1), prof.KernelTime("mean", "squeeze-excite", 2.0, 2)]
    text = prof.category_table(het, torch_rows, "t")
    assert "| depthwise conv | 30.0 | 1 | 6.0 | 2 | 5.00x |" in text
    assert "| squeeze-excite | 4.0 | 2 | 1.0 | 1 | 4.00x |" in text
    assert "| elementwise | 0.0 | 0 | 0.5 | 1 | 0.00x |" in text
    assert "| **total** | 34.0 | 3 | 7.8 | 5 | 4.39x |" in text
    assert text.index("depthwise conv") < text.index("squeeze-excite")  # by hetpart time


def test_top_table_keeps_a_long_names_tail():
    """Device step 161's tables cut names at 70 characters, so the wgmma fc1 + GELU GEMM read as the TVM
    kernel it replaced: a long name keeps its head and its tail (``_wgmma_kernel``), 70 characters in all."""
    wgmma = "fused_matmul4_add5_divide_fast_erf_add6_multiply2_multiply3_bf16w_bf16a_wgmma_kernel"
    short = "fused_matmul5_add7_add4_bf16w_bf16a_wgmma_kernel"
    assert prof.short_name(short) == short
    got = prof.short_name(wgmma)
    assert len(got) == prof.NAME_WIDTH and got.startswith("fused_matmul4_add5_divide_fast_erf")
    assert got.endswith("_bf16w_bf16a_wgmma_kernel"[-prof.NAME_TAIL:]) and "..." in got
    text = prof.top_table([prof.KernelTime(wgmma, "other", 132.6, 12), prof.KernelTime(short, "other", 94.2, 12)],
                          5, "t")
    assert f"| {got} | other |  | 12 | 132.6 | 1591.2 |" in text
    assert text.index(got) < text.index(short)  # by total time


def test_parse_chain_skips_other_ranges():
    assert prof.parse_chain(["ProfilerStep", "hp|Conv2d|conv", "aten::conv2d", "hp|BatchNorm2d|norm"]) == [
        ("Conv2d", "conv"), ("BatchNorm2d", "norm")]


def test_hetpart_kernel_list_of_a_small_efficientnet():
    from hetpart import load
    from hetpart.models import build

    graph = load(build("efficientnet", small=True))
    rows = prof.hetpart_kernel_list(graph)
    assert sum(r[3] for r in rows) == len(graph.kernels)
    found = {r[2] for r in rows}
    assert {"depthwise conv", "pointwise conv", "squeeze-excite", "conv"} <= found
    # Each SE block's global mean is squeeze-excite; only the head's mean is a pool.
    means = [r for r in rows if r[1].startswith("mean")]
    assert sum(r[3] for r in means if r[2] == "pool") == 1


# --- static analysis --------------------------------------------------------------------------
def _depthwise_model(c=672, hw=7, k=5) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((c, 1, k, k), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=c, kernel_shape=[k, k], pads=[k // 2] * 4)
    g = helper.make_graph([node], "dw", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, hw, hw])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def test_launch_shape_of_a_batch_1_depthwise_conv():
    (row,) = static.analyse(_depthwise_model(), source=False)
    outputs = 672 * 7 * 7
    assert row.rule == "GpuWindowReduction" and row.category == "depthwise conv"
    assert row.block == 64 and row.grid == math.ceil(outputs / 64)  # gpu_window's small blocks
    assert row.outputs == outputs
    assert row.serial >= 25  # the 5x5 window in each thread's register
    assert row.serial_memory == 1  # one store to global memory per thread
    assert row.flags == []


def test_flags_and_estimates():
    wide = static.Launch(grid=401408, block=256, serial=3, serial_memory=1)
    assert static.flags("GeneralReduction", "depthwise conv", wide, 401408, 8e6, 132) == ["block/output"]
    roof, est = static.estimates("GeneralReduction", wide, 401408, 3_210_000, 8_000_000)
    assert est == pytest.approx(401408 * static.NS_PER_OUTPUT_BLOCK) and roof < 2e-6 * 1.01
    # SE's gate in a 2-block GEMV: 6272 serial stores to memory per thread.
    narrow = static.Launch(grid=2, block=512, serial=6287, serial_memory=6273)
    assert static.flags("GEMV", "squeeze-excite", narrow, 401408, 4e5, 132) == ["<SMs", f"serial>{static.SERIAL_LIMIT}"]
    _, est = static.estimates("GEMV", narrow, 401408, 3_210_000, 400_000)
    assert est == pytest.approx(6273 * static.SERIAL_STORE_S + 14 * static.SERIAL_REGISTER_S)
    # A function of two kernels (split-K: partials, then their sum) costs two kernel nodes at least.
    two = static.Launch(grid=140, block=128, serial=400, serial_memory=20, kernels=2)
    roof, est = static.estimates("GpuFineSplitK", two, 15680, 1_000_000, 15_000_000)
    assert roof == pytest.approx(2 * static.MIN_KERNEL_S) and est == pytest.approx(2 * static.MIN_KERNEL_S)
    simt = static.Launch(grid=14, block=128, serial=500, serial_memory=50)
    assert "simt-gemm" in static.flags("Matmul", "pointwise conv", simt, 15680, 30e6, 132)
    assert "simt-gemm" not in static.flags("Matmul", "pointwise conv", simt, 15680, 30e6, 132, tf32=False)


def test_h200_rates_charge_serial_work_of_low_occupancy_grids_and_price_both_tc_rules():
    # BERT's 768x768 projection at 128 tokens as SIMT split-K: 144 blocks of 128 threads
    # (~4.4 warps per SM) with 4327 serial stores per thread, 209 to memory.
    simt = static.Launch(grid=144, block=128, serial=4327, serial_memory=209, kernels=2)
    _, before = static.estimates("GpuSplitKGemm", simt, 98304, 3_150_000, 151_100_000)
    assert before == pytest.approx(2 * static.MIN_KERNEL_S)  # default rates: a grid >= the SMs pays no latency
    _, est = static.estimates("GpuSplitKGemm", simt, 98304, 3_150_000, 151_100_000, rates=static.BRIEF_RATES)
    assert est == pytest.approx(209 * static.SERIAL_STORE_S + 4118 * static.SERIAL_REGISTER_S)
    # More than 8 warps per SM: bandwidth / flops / floor only; both tensor-core rules at the TC rate.
    busy = static.Launch(grid=288, block=256, serial=4327, serial_memory=209)
    flops = 1e9
    for rule in ("GpuTensorCoreGemm", "GpuTensorCoreSplitK"):
        _, est = static.estimates(rule, busy, 98304, 0, flops, rates=static.BRIEF_RATES)
        assert est == pytest.approx(flops / static.BRIEF_RATES.tc_flops)
    _, est = static.estimates("GpuSplitKGemm", busy, 98304, 0, flops, rates=static.BRIEF_RATES)
    assert est == pytest.approx(flops / static.BRIEF_RATES.simt_flops)


def test_kernels_in_source_reads_launch_bounds_and_tf32_rounding():
    src = ('extern "C" __global__ void __launch_bounds__(128) f_kernel(float* a) {\n'
           '  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(x) : "f"(y));\n}\n'
           'extern "C" __global__ void __launch_bounds__(256) g_kernel(float* a) { a[0] = 1; }\n'
           'extern "C" __global__ void g_kernel_1(float* a) { a[0] = 2; }\n'
           'extern "C" __global__ void __launch_bounds__(128) k_prepacked_kernel(float* a) {\n'
           '  b[0] = nvcuda::wmma::__float_to_tf32(a[0]);\n}\n')
    found = static.kernels_in_source(src)
    assert found == {"f_kernel": {"threads": 128, "cvt_rna": True, "mma": set()},
                     "g_kernel": {"threads": 256, "cvt_rna": False, "mma": set()},
                     "g_kernel_1": {"threads": None, "cvt_rna": False, "mma": set()},
                     "k_prepacked_kernel": {"threads": 128, "cvt_rna": True, "mma": set()}}
    assert static.cvt_rna_by_function(found, ["f", "g", "h", "k"]) == {"f": True, "g": False, "h": None, "k": True}


def test_kernels_in_source_reads_the_tensor_core_instruction():
    """``mma.sync`` by its A type, ``wgmma`` by its PTX; a function of several kernels lists each kind once,
    one with none runs on CUDA cores, one with no kernel in the source is left out."""
    src = ('extern "C" __global__ void f_kernel(float* a) {\n'
           '  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0}, {%1};" : : );\n}\n'
           'extern "C" __global__ void f_kernel_1(float* a) { a[0] = 1; }\n'
           'extern "C" __global__ void g_kernel(float* a) {\n'
           '  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0}, {%1};" : : );\n}\n'
           'extern "C" __global__ void w_kernel(float* a) {\n'
           '  asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0}, %1, %2;" : : );\n}\n'
           'extern "C" __global__ void e_kernel(float* a) { a[0] = 2; }\n')
    found = static.kernels_in_source(src)
    assert found["f_kernel"]["mma"] == {"mma.sync tf32"} and found["g_kernel"]["mma"] == {"mma.sync bf16"}
    assert found["w_kernel"]["mma"] == {"wgmma"}
    assert static.instruction_by_function(found, ["f", "g", "w", "e", "h"]) == {
        "f": "mma.sync tf32", "g": "mma.sync bf16", "w": "wgmma", "e": static.CUDA_CORES}


def _dense_layer(rows: int, k: int = 256, n: int = 256):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                          "dense", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, rows, k])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, rows, n])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def test_a_bf16_dense_layer_above_one_tile_is_the_wgmma_gemm():
    """With the bf16 defaults (``WGMMA_F32A``: a float32 A narrowed in the kernel) a 197-row dense layer is
    replaced by the wgmma GEMM: rule and instruction say so, the launch is ``wgmma_variant.choose``'s (bn 128,
    two 128-row CTA tiles, 256 threads, K >= N: ``choose_split``'s split and its reduction); 128 rows stay on
    ``mma.sync`` (``ONE_TILE_ROWS``)."""
    from hetpart.kernels import wgmma_variant as wv

    (row,) = static.analyse(_dense_layer(197), source=False, precision="bf16")
    v = wv.choose(197, 256, 256, "f32a")
    assert row.rule == static.WGMMA_RULE and row.instruction == "wgmma f32a" and row.weights == 2  # W and b
    assert (row.grid, row.block, row.kernels) == (256 // v.bn * 2 * v.split, 256, 2 if v.split > 1 else 1)
    (row,) = static.analyse(_dense_layer(128), source=False, precision="bf16")
    assert row.rule != static.WGMMA_RULE and row.instruction == "mma.sync"


def test_tensor_core_kernels_round_to_tf32_in_the_cuda_source():
    """A 1x1 conv big enough for the tensor-core rule: its CUDA C has cvt.rna."""
    c, hw = 256, 56
    w = numpy_helper.from_array(np.ones((c, c, 1, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "pw",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, hw, hw])], [w])
    (row,) = static.analyse(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]))
    assert row.rule == "GpuTensorCoreGemm" and row.cvt_rna is True


# --- on the GPU machine -----------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.slow  # exports, profiles and compiles a whole corpus model: minutes
def test_profile_tool_runs_both_sides_on_a_corpus_model(tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "k.json"
    assert prof.main(["mobilenet_v3_large", "--export-dir", str(tmp_path), "--runs", "3", "--json", str(out)]) == 0
    import json

    data = json.loads(out.read_text())
    het = {r["category"] for r in data["hetpart"]}
    peer = {r["category"] for r in data["pytorch"]}
    assert {"depthwise conv", "pointwise conv", "squeeze-excite"} <= het & peer
    # Every kernel timed on the GPU's clock: none reads 0 us as the VM-call timing did.
    assert all(r["us"] > 0 for r in data["hetpart"])
    assert data["forward"]["kernels"] > 0 and data["forward"]["wall"] >= data["forward"]["span"] > 0


# --- TF32 rounding A/B (tools/tf32_rounding_ab.py) ----------------------------------------------
def test_rounding_ab_builds_one_variant_that_rounds_and_one_that_does_not(tmp_path, capsys):
    import json

    import tf32_rounding_ab as ab

    c, hw = 256, 56  # a 1x1 conv large enough for the tensor-core rule at batch 1
    w = numpy_helper.from_array(np.ones((c, c, 1, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "pw",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, hw, hw])], [w])
    path = tmp_path / "pw.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    assert ab.main([str(path), "--source-only"]) == 0
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(found["round"].values()) == [True]
    assert list(found["truncate"].values()) == [False]
    assert found["round"].keys() == found["truncate"].keys()


def test_rounding_ab_table():
    import tf32_rounding_ab as ab

    r = {"k1": {"flops": 2e9, "count": 2, "seconds": 20e-6, "rounds": True},
         "k2": {"flops": 1e9, "count": 1, "seconds": 10e-6, "rounds": True}}
    t = {"k1": {"flops": 2e9, "count": 2, "seconds": 16e-6, "rounds": False},
         "k2": {"flops": 1e9, "count": 1, "seconds": 10e-6, "rounds": False}}
    text = ab.table(r, t, top=5)
    assert "| k1 | 2 | 2.00 | 20.0 | 16.0 | 1.25 | 100.0 |" in text
    assert "| **total (2 kernels)** | | | 50.0 | 42.0 | 1.19 | |" in text


def test_launch_shape_of_a_split_k_function_is_its_partial_products_kernel():
    """EfficientNet-B0's 1152 -> 192 pointwise conv at 7x7, batch 1, split-K (in 12 by
    gpu_splitk_fine): kernel 1 (partial products, 12x3x2 blocks of 8x16 threads, the
    serial work) is the one shown, not the tags' maxima over both kernels multiplied."""
    ic, oc, hw = 1152, 192, 7
    w = numpy_helper.from_array(np.ones((oc, ic, 1, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "pw",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, ic, hw, hw])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, oc, hw, hw])], [w])
    (row,) = static.analyse(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), source=False)
    assert row.rule == "GpuFineSplitK" and row.kernels == 2
    assert (row.grid, row.block) == (12 * 3 * 2, 8 * 16)
    assert "<SMs" in row.flags


def test_broadcast_epilogue_bytes_are_priced_on_its_wide_kernel():
    """SE's FC + gate (1 block of 32 threads) then the multiply (1568 blocks): the 3.2 MB
    the multiply moves are priced at the bandwidth of a full grid, not of one SM."""
    s, c, hw = 8, 32, 112
    w = numpy_helper.from_array(np.ones((c, s, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["z", "w"], ["f"]), helper.make_node("Sigmoid", ["f"], ["g"]),
             helper.make_node("Mul", ["g", "x"], ["y"])]
    g = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, s, 1, 1]),
                                        helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, hw, hw])], [w])
    (row,) = static.analyse(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), source=False)
    assert row.rule == "GpuBroadcastEpilogue" and row.kernels == 2 and row.grid == 1
    assert row.estimate_us < 5.0  # 3.2 MB at full bandwidth: ~1 us (one SM's share: ~130 us)
