"""Tests of the TF32 tensor-core GPU rule (hetpart.kernels.rules.gpu_tensor_core) and
the pieces it stands on (hetpart.kernels.tf32, hetpart.kernels.cuda_pipeline).

Without a GPU: the fragment layouts are the PTX ISA's m16n8k8 TF32 layouts (each tile
element in exactly one lane and register); the rule takes float32 matmuls and
convolutions whose grid fills the GPU and declines the rest (small grids, pre-Ampere
targets, ``HETPART_TF32=0``); what it builds for sm_90 issues TF32 ``mma.sync`` with
every warp buffer lowered to a handful of registers; a convolution's weight is packed at
compile time into the ``[1, N, K]`` matrix the kernel reads (K ordered ky, kx, channel,
padded to whole tiles); the K loop is software-pipelined with ``cp.async`` except for
bounds-tested loads on large grids; a convolution whose grid is small has its K split
at window offsets into chunks (partial products, then a sum kernel); its result is written out along its
pixels (contiguous in NCHW), 4 at a time where its images' pixel count allows; every
operand element is rounded to the nearest TF32 value (``cvt.rna``) as it enters a
fragment; at batch 32 ONNX ``Clip``-ended (ReLU6) convolutions get the same grid as
ReLU-ended ones (batch 1 keeps its rule), and Inception-v3's 1x7/7x1/1x3 and valid
stride-2 convolutions run on the tensor cores with the batch folded into the grid.
With a GPU (``cuda`` mark): the built kernels
match the CPU build within TF32's precision, pipelined or not, with weights folded at
compile time or packed by ``main_transform_params`` (the cost model's benchmarks); a
product of operands 0.75 TF32 ulp above a TF32 value comes out rounded up, exactly; the
Clip-ended and Inception convolutions at batch 32 match ONNX Runtime (CPU) within TF32's
precision.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, te, tirx

from onnx_cases import cuda_source

from hetpart import kernels
from hetpart.importer.fusion import fuse
from hetpart.costmodel import kernel_bench
from hetpart.kernels import access, tf32, weight_prepack
from hetpart.kernels.rules import GpuTensorCoreGemm
from hetpart.kernels.rules.gpu_tensor_core import (
    CONV_TILES, MATMUL_TILES, PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED, SIDE_INPUTS_MIN_BATCH, split_factor,
)
from hetpart.kernels.options import DEFAULT_SM_COUNT, KernelOptions
from hetpart.targets import cpu_tvm_target, cuda_available, cuda_tvm_target

op = relax.op
SM90 = cuda_tvm_target("sm_90")
SM75 = cuda_tvm_target("sm_75")

TF32_RTOL = 5e-3
"""Error bound relative to the output's magnitude: TF32 keeps 10 mantissa bits of each
operand (2^-11 ~ 5e-4 relative per product) and random-sign sums grow it by ~sqrt(K)."""


# --- the layouts -----------------------------------------------------------------------
@pytest.mark.parametrize("layout, rows, cols, regs", [
    (tf32.a_layout, 16, 8, 4), (tf32.b_layout, 16, 8, 4), (tf32.c_layout, 16, 16, 8),
])
def test_fragment_layouts_cover_each_element_once(layout, rows, cols, regs):
    slots = {layout(i, j) for i in range(rows) for j in range(cols)}
    assert slots == {(lane, r) for lane in range(32) for r in range(regs)}


def test_fragment_layouts_are_the_ptx_isa_ones():
    # mma.m16n8k8 .tf32 (PTX ISA, "Matrix Fragments for mma.m16n8k8"): group g = lane/4,
    # thread-in-group t = lane%4; A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
    # B (K x N): b0 (k=t, n=g), b1 (k=t+4, n=g); C: c0 (g, 2t), c1 (g, 2t+1), c2/c3 rows g+8.
    for lane in range(32):
        g, t = lane // 4, lane % 4
        assert [tf32.a_layout(i, k) for i, k in [(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)]] == \
            [(lane, r) for r in range(4)]
        assert [tf32.b_layout(n, k) for n, k in [(g, t), (g, t + 4)]] == [(lane, 0), (lane, 1)]
        assert [tf32.c_layout(i, j) for i, j in [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]] \
            == [(lane, r) for r in range(4)]


# --- modules -----------------------------------------------------------------------------
def _matmul_module(m, k, n, *, transposed=False, batch=None, seed=0):
    """Fused ``relu(x @ W + b)`` (``W`` given as [n, k] when ``transposed``; a batched
    ``x @ y`` of two inputs when ``batch``) and random inputs."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    if batch:
        x = relax.Var("x", relax.TensorType((batch, m, k), "float32"))
        y = relax.Var("y", relax.TensorType((batch, k, n), "float32"))
        params = [x, y]
        with bb.function("main", params):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(op.matmul(x, y)))
            bb.emit_func_output(out)
    else:
        w = (rng.standard_normal((n, k) if transposed else (k, n)) * 0.05).astype("float32")
        b = relax.const(rng.standard_normal(n).astype("float32"))
        x = relax.Var("x", relax.TensorType((m, k), "float32"))
        params = [x]
        with bb.function("main", params):
            with bb.dataflow():
                wt = op.permute_dims(relax.const(w)) if transposed else relax.const(w)
                y = bb.emit(op.add(bb.emit(op.matmul(x, wt)), b))
                out = bb.emit_output(bb.emit(op.nn.relu(y)))
            bb.emit_func_output(out)
    args = [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32") for p in params]
    return fuse(bb.get()), args


def _conv_module(batch, cin, size, cout, k=3, stride=1, seed=0, weights=None):
    """Fused ``relu(conv(x, w) + b)`` (padding k//2) and random inputs (``weights``:
    an array for ``w``)."""
    rng = np.random.default_rng(seed)
    w = relax.const(weights if weights is not None else (rng.standard_normal((cout, cin, k, k)) * 0.05).astype("float32"))
    b = relax.const(rng.standard_normal((1, cout, 1, 1)).astype("float32"))
    x = relax.Var("x", relax.TensorType((batch, cin, size, size), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(op.add(bb.emit(op.nn.conv2d(x, w, strides=stride, padding=k // 2)), b))
            out = bb.emit_output(bb.emit(op.nn.relu(y)))
        bb.emit_func_output(out)
    return fuse(bb.get()), [rng.standard_normal((batch, cin, size, size)).astype("float32")]


def _contraction(mod) -> tirx.PrimFunc:
    (func,) = [f for gv, f in mod.functions_items()
               if isinstance(f, tirx.PrimFunc) and ("conv" in gv.name_hint or "matmul" in gv.name_hint)]
    return func


def _apply(func, target=SM90, options=KernelOptions()):
    with target:
        return GpuTensorCoreGemm(options).apply(func, target)


FILLING = {  # grids of at least one 64x128 tile per SM
    "bert_b32_qkv": lambda: _matmul_module(4096, 768, 768),
    "bert_b32_ffn_down_transposed": lambda: _matmul_module(4096, 3072, 768, transposed=True),
    "attention_scores_batched": lambda: _matmul_module(128, 64, 128, batch=384),
    "resnet_b32_3x3": lambda: _conv_module(32, 64, 56, 64),
    "resnet_b32_1x1_s2": lambda: _conv_module(32, 256, 56, 512, k=1, stride=2),
    "resnet_b32_3x3_7x7_small_grid": lambda: _conv_module(32, 64, 7, 512),  # pipelined, bounds-tested
    "resnet_b32_3x3_7x7_split": lambda: _conv_module(32, 512, 7, 512),  # K in 3 chunks
}


# --- selection -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(FILLING))
def test_rule_takes_contractions_that_fill_the_gpu(case):
    mod, _ = FILLING[case]()
    assert _apply(_contraction(mod)) is not None


def test_rule_declines_small_grids_old_gpus_and_the_switch():
    small, _ = _matmul_module(128, 768, 768)  # BERT at batch 1: 12 tiles
    assert _apply(_contraction(small)) is None
    big, _ = _matmul_module(4096, 768, 768)
    assert _apply(_contraction(big), SM75) is None  # no TF32 before sm_80
    assert _apply(_contraction(big), options=KernelOptions(tf32=False)) is None
    # At most 1536 blocks (32x64 tiles): too few to fill a GPU of 4000 SMs.
    assert _apply(_contraction(big), options=KernelOptions(sm_count=4000)) is None


def test_built_kernel_issues_tf32_mma_with_warp_buffers_in_registers():
    mod, _ = _matmul_module(4096, 768, 768)
    assert set(kernels.rules_applied(kernels.schedule(mod, SM90)).values()) == {"GpuTensorCoreGemm"}
    exe = kernels.build(mod, SM90, cuda_graph=False)
    source = cuda_source(exe)
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in source
    # Each warp buffer lowered to its lane's registers -- A: 4 per fragment, B: 4, C: 8
    # (TVM alone lowers only the first of them; the rest stay 32x larger).
    t = MATMUL_TILES[0]
    sizes = sorted(int(n) for n in re.findall(r"float \w+_warp_ptr\[(\d+)\];", source))
    assert sizes == sorted([4 * t.frags_m, 4 * t.frags_n, 8 * t.frags_m * t.frags_n])


def test_fragment_loads_round_operands_to_nearest_tf32():
    # The tensor core truncates a float32 operand to TF32 (drops 13 mantissa bits):
    # every A and B element goes through cvt.rna.tf32.f32 on its way into a fragment.
    mod, _ = FILLING["resnet_b32_3x3"]()
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=False))
    loads = re.findall(r"(\w+_warp_ptr)\[[^\n]*\] = ([^\n]*buf_dyn_shmem_ptr)", source)
    assert {name for name, _ in loads} >= {"pad_temp_reindex_reindex_shared_dyn_warp_ptr", "param_0_reindex_shared_dyn_warp_ptr"}
    assert all(value.startswith(tf32.ROUND + "(") for _, value in loads), loads


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_rounding_compiles_to_one_cvt_rna_per_loaded_element():
    from hetpart.kernels import cuda_compile

    mod, _ = FILLING["resnet_b32_3x3"]()
    ptx = cuda_compile.compile_source(cuda_source(kernels.build(mod, SM90, cuda_graph=False)),
                                      arch="90", fmt="ptx", compiler="nvcc").decode()
    t = CONV_TILES[0]
    per_k_slice = (t.frags_m + t.frags_n) * 4  # A and B fragments, 4 registers each
    assert ptx.count("cvt.rna.tf32.f32") == per_k_slice * t.k_frags  # the K-slice loop unrolled


# --- ONNX Clip (ReLU6) epilogues -------------------------------------------------------------
CLIP_CONVS = {  # name -> (cin, image, cout, kernel, stride, pad); MobileNet-v2's, at batch 32
    "mnv2 expand 1x1 24->144 @56": (24, 56, 144, 1, 1, 0),
    "mnv2 expand 1x1 160->960 @7": (160, 7, 960, 1, 1, 0),
    "mnv2 stem 3x3 s2 3->32 @224": (3, 224, 32, 3, 2, 1),
}


def _onnx_conv(n, cin, size, cout, k, stride, pad, act, seed=0):
    """ONNX ``act(Conv(x, w, b))`` as torchvision exports it: ReLU6 is ``Clip`` with
    its bounds as (constant) inputs, which hetpart's NaN semantics test with isnan."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.5).astype("float32"), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype("float32"), "b"),
             numpy_helper.from_array(np.array(0, "float32"), "lo"), numpy_helper.from_array(np.array(6, "float32"), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)]
    nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]) if act == "clip" else helper.make_node("Relu", ["c"], ["y"]))
    o = (size + 2 * pad - k) // stride + 1
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, cin, size, size])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, cout, o, o])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _onnx_kernel(m) -> tirx.PrimFunc:
    from hetpart import load

    (func,) = [f for f in load(m).module.functions.values() if isinstance(f, tirx.PrimFunc)]
    return func


def _bound(func) -> dict[str, list[int]]:
    import tvm_ffi

    out: dict[str, list[int]] = {}
    tvm_ffi.structural_walk(func.body, (tirx.For, lambda f: out.setdefault(str(f.thread_binding.thread_tag), []).append(
        int(f.extent)) if f.thread_binding is not None else None), order="post")
    return {tag: sorted(v) for tag, v in out.items()}


@pytest.mark.parametrize("case", sorted(CLIP_CONVS))
def test_clip_epilogue_convolutions_at_batch_32_on_tensor_cores_as_relu_ones(case):
    # Clip's isnan tests of its bounds are blocks of their own (scalars read by the
    # epilogue); they kept the epilogue from fusing, so the rule declined and these
    # convolutions ran as SIMT float32 (dlight's Matmul).  Now the same grid and
    # threads as the ReLU-ended convolution of that shape.
    clip = kernels.schedule_primfunc(_onnx_kernel(_onnx_conv(32, *CLIP_CONVS[case], "clip")), SM90)
    relu = kernels.schedule_primfunc(_onnx_kernel(_onnx_conv(32, *CLIP_CONVS[case], "relu")), SM90)
    assert str(clip.attrs["hetpart.rule"]) == str(relu.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    assert _bound(clip) == _bound(relu)


@pytest.mark.parametrize("case, rule", [("mnv2 expand 1x1 24->144 @56", "Matmul"),
                                        ("mnv2 stem 3x3 s2 3->32 @224", "GpuConv2dImplicitGemm")])
def test_clip_epilogue_convolutions_at_batch_1_keep_their_rule(case, rule):
    assert SIDE_INPUTS_MIN_BATCH > 1
    func = kernels.schedule_primfunc(_onnx_kernel(_onnx_conv(1, *CLIP_CONVS[case], "clip")), SM90)
    assert str(func.attrs["hetpart.rule"]) == rule


INCEPTION_CONVS = {  # Inception-v3's asymmetric and valid (unpadded) convolutions: (cin, image, cout, kh, kw, stride, pads)
    "1x7 128->128 @17": (128, 17, 128, 1, 7, 1, (0, 3, 0, 3)),
    "7x1 128->192 @17": (128, 17, 192, 7, 1, 1, (3, 0, 3, 0)),
    "1x3 384->384 @8": (384, 8, 384, 1, 3, 1, (0, 1, 0, 1)),
    "3x3 s2 valid 3->32 @299": (3, 299, 32, 3, 3, 2, (0, 0, 0, 0)),
    "3x3 s2 valid 288->384 @35": (288, 35, 384, 3, 3, 2, (0, 0, 0, 0)),
}


def _onnx_conv2(n, cin, size, cout, kh, kw, stride, pads, seed=0):
    """ONNX ``relu(Conv(x, w, b))`` with a ``kh x kw`` kernel and ``pads`` (top, left, bottom, right)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, kh, kw)) * 0.1).astype("float32"), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype("float32"), "b")]
    top, left, bottom, right = pads
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kh, kw], strides=[stride] * 2,
                              pads=[top, left, bottom, right]), helper.make_node("Relu", ["c"], ["y"])]
    oh, ow = (size + top + bottom - kh) // stride + 1, (size + left + right - kw) // stride + 1
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, cin, size, size])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, cout, oh, ow])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), oh * ow


@pytest.mark.parametrize("case", sorted(INCEPTION_CONVS))
def test_asymmetric_and_valid_convolutions_at_batch_32_on_tensor_cores_with_the_batch_in_the_grid(case):
    # M = batch x output pixels: the batch folded into the grid's rows (blockIdx.y).
    cin, size, cout, kh, kw, stride, pads = INCEPTION_CONVS[case]
    m, pixels = _onnx_conv2(32, cin, size, cout, kh, kw, stride, pads)
    func = kernels.schedule_primfunc(_onnx_kernel(m), SM90)
    assert str(func.attrs["hetpart.rule"]) == "GpuTensorCoreGemm"
    t = CONV_TILES[0]
    bound = _bound(func)
    assert bound["blockIdx.y"] == [-(-32 * pixels // t.m)] and bound["blockIdx.x"] == [-(-cout // t.n)]
    assert bound["blockIdx.z"] == [1] and set(bound["threadIdx.y"]) == {t.warps}


# --- weight packing, staging, pipelining ---------------------------------------------------
def test_conv_weight_packed_at_compile_time_as_ky_kx_channel_rows_padded_to_tiles():
    cin, cout, k = 3, 64, 7  # K = 147, padded to whole K tiles
    w = np.random.default_rng(4).standard_normal((cout, cin, k, k)).astype("float32")
    mod, _ = _conv_module(32, cin, 64, cout, k=k, stride=2, weights=w)
    scheduled = kernels.schedule(weight_prepack.mark_weights(mod), SM90)
    assert set(kernels.rules_applied(scheduled).values()) == {"GpuTensorCoreGemm"}
    folded = weight_prepack.split_and_fold(scheduled, tvm.target.Target(weight_prepack.HOST_TARGET))
    names = [gv.name_hint for gv in folded.get_global_vars()]
    assert not any(n.endswith(weight_prepack.PREPACK_SUFFIX) for n in names), names
    consts = []
    relax.analysis.post_order_visit(folded["main"].body,
                                    lambda e: consts.append(e.value.numpy()) if isinstance(e, tvm.ir.GenericConst) else None)
    (packed,) = [c for c in consts if c.ndim == 3]
    k_tile = CONV_TILES[0].k
    assert packed.shape == (1, cout, -(-cin * k * k // k_tile) * k_tile)
    want = w.transpose(0, 2, 3, 1).reshape(cout, -1)  # K = (ky, kx, channel)
    np.testing.assert_array_equal(packed[0, :, : want.shape[1]], want)
    assert not packed[0, :, want.shape[1]:].any()


def test_windowed_input_reads_are_contiguous_along_rows_not_k():
    # The facts the rule's staging choice rests on, for an NCHW 3x3 convolution in
    # normal form with K = (ky, kx, channel): the input copy moves by one element per
    # output pixel (row) and by a whole plane per K step.
    from hetpart.kernels.rules.gpu_gemm import as_normal_gemm, inline_producers

    mod, _ = FILLING["resnet_b32_3x3"]()
    gemm = as_normal_gemm(_contraction(mod), channels_last=True)
    sch, main = gemm.sch, gemm.block
    staged = sch.cache_read(main, 0, tf32.SCOPE)  # as the rule stages operand A
    inline_producers(sch, staged)
    blk = sch.get(staged)
    _, rows, ks = blk.iter_vars
    assert access.strides_along(blk, rows.var) == [1]
    assert access.strides_along(blk, ks.var) == [56 * 56]
    assert access.unit_run(blk, rows.var, 8) == 8 and access.unit_run(blk, ks.var, 4) == 1


@pytest.mark.parametrize("case, pipelined", [
    ("bert_b32_qkv", True),  # no bounds tests
    ("resnet_b32_1x1_s2", True),  # windowed, no padding
    ("resnet_b32_3x3", False),  # padded, 1568 blocks
    ("resnet_b32_3x3_7x7_small_grid", True),  # padded, 200 blocks
    ("resnet_b32_3x3_7x7_split", False),  # padded, 600 blocks once K is split in 3
])
def test_k_loop_pipelined_with_cp_async_unless_bounds_tested_on_a_large_grid(case, pipelined):
    mod, _ = FILLING[case]()
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=False))
    assert ("cp.async.wait_group" in source) == pipelined
    assert 200 <= PIPELINE_MAX_BLOCKS_PER_SM_PREDICATED * DEFAULT_SM_COUNT < 1568


def _gemm_rows_into_nchw(n, c, h, w):
    """The rule's write-out block in miniature: a ``[1, rows, channels]`` GEMM result
    copied into an NCHW output, the copy inlined into the block computing the result
    (which then writes ``out[r // hw, c, r % hw // w, r % w]``)."""
    a = te.placeholder((1, n * h * w, c), "float32", name="a")
    g = te.compute((1, n * h * w, c), lambda b, r, ch: a[b, r, ch] * 2.0, name="g")
    out = te.compute((n, c, h, w), lambda b, ch, y, x: g[0, b * h * w + y * w + x, ch], name="out")
    sch = s_tir.Schedule(te.create_prim_func([a, out]))
    sch.reverse_compute_inline(sch.get_sblock("out"))
    return sch.get(sch.get_sblock("g"))


@pytest.mark.parametrize("size, in_runs_of_4", [(56, True), (14, True), (7, False)])
def test_nchw_output_is_written_along_rows_in_runs_the_image_size_allows(size, in_runs_of_4):
    # The facts the write-out's direction and width rest on: one element per row
    # (pixel), a plane per column (channel); runs of 4 rows from any multiple of 4
    # stay inside one image when 4 divides its pixel count (56*56, 14*14; not 7*7).
    blk = _gemm_rows_into_nchw(4, 8, size, size)
    _, rows, cols = blk.iter_vars
    assert access.write_strides_along(blk, rows.var) == [1]
    assert access.write_strides_along(blk, cols.var) == [size * size]
    assert access.writes_in_runs(blk, rows.var, 4) == in_runs_of_4
    assert access.writes_in_runs(blk, rows.var, 1)


@pytest.mark.parametrize("case, store", [
    ("bert_b32_qkv", "float4"),  # [tokens, features]: along the columns, as before
    ("resnet_b32_3x3", "float4"),  # NCHW, 56x56 images: 4 pixels per store
    ("resnet_b32_3x3_7x7_small_grid", "float"),  # 7x7 images: one pixel per store
])
def test_result_written_with_whole_vectors_not_scattered(case, store):
    # Written along the columns, an NCHW result took four scalar stores a plane apart
    # per thread (an int4 of indices); along the pixels each store is one vector.
    mod, _ = FILLING[case]()
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=False))
    assert not re.search(r"compute\w*_ptr\[v_\w*\.[xyzw]\]", source)
    vector = re.search(r"\*\(float4\*\)\(compute\w*_ptr \+", source)
    assert bool(vector) == (store == "float4")
    if case.startswith("resnet"):  # accumulators staged [channel, pixel] for that
        assert tf32.NAMES["store_cols"] in str(_apply(_contraction(mod)).trace)


@pytest.mark.parametrize("blocks, k, k_run, want", [
    (200, 4608, 512, 3),  # ResNet-50's 3x3 512ch at 7x7: chunks of 3 whole windows
    (200, 2304, 256, 3),
    (392, 4608, 512, 1),  # grid already 2 blocks per SM
    (200, 2048, 2048, 1),  # a 1x1 convolution / matmul (one window): not split
    (196, 1152, 128, 1),  # 3 chunks would be shorter than MIN_K_CHUNK, 2 start mid-window
    (140, 4 * 4 * 512, 512, 2),  # a 4x4 window: 2 chunks of 8 offsets reach 280 blocks
    (140, 5 * 5 * 256, 256, 1),  # a 5x5 window: no factor of 2..4 cuts at window offsets
])
def test_split_factor_cuts_k_at_window_offsets_for_small_grids(blocks, k, k_run, want):
    assert split_factor(blocks, k, k_run, CONV_TILES[0]) == want


def test_split_factor_off_by_switch_and_scaled_by_sm_count():
    assert split_factor(200, 4608, 512, CONV_TILES[0], KernelOptions(split_k="off")) == 1
    assert split_factor(200, 4608, 512, CONV_TILES[0], KernelOptions(sm_count=66)) == 1  # 200 >= 2 x 66
    assert split_factor(200, 4608, 512, CONV_TILES[0], KernelOptions(sm_count=264)) == 3


def test_split_convolution_writes_partials_then_sums_them_through_the_epilogue():
    mod, _ = FILLING["resnet_b32_3x3_7x7_split"]()
    sch = _apply(_contraction(mod))
    assert "rfactor" in str(sch.trace)
    source = cuda_source(kernels.build(mod, SM90, cuda_graph=False))
    kernels_ = re.findall(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)\(', source)
    assert len(set(kernels_)) == 2, kernels_  # partial products, then sum + bias + relu
    # The partials land as [chunk, channel, pixel]: written 4 pixels at a time.
    assert re.search(r"\*\(float4\*\)\(\w*_rf_ptr \+", source)


def test_benchmark_module_packs_a_weight_parameter_on_the_gpu():
    # The cost model times single kernels with weights as parameters: the packing is
    # lifted into main_transform_params, built for the GPU like the kernel.
    km = _conv_kernel_module()
    scheduled = kernels.schedule(weight_prepack.mark_weights(km.mod), SM90)
    split = weight_prepack.split_and_fold(scheduled, tvm.target.Target(weight_prepack.HOST_TARGET))
    assert weight_prepack.TRANSFORM_PARAMS in [gv.name_hint for gv in split.get_global_vars()]
    source = cuda_source(kernels.build(km.mod, SM90, cuda_graph=False))
    assert re.search(r"__global__ .*weight_prepack_kernel", source)


def _conv_kernel_module():
    from hetpart.importer.fusion import fuse_with_ops
    from hetpart.importer.op_graph_builder import build_op_graph

    rng = np.random.default_rng(0)
    w = relax.const((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype("float32"))
    x = relax.Var("x", relax.TensorType((32, 64, 56, 56), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op.nn.relu(bb.emit(op.nn.conv2d(x, w, padding=1)))))
        bb.emit_func_output(out)
    graph = build_op_graph("conv", *fuse_with_ops(bb.get()))
    (kernel,) = [kk for kk in graph.nodes if "conv" in kk.func]
    return kernel_bench.single_kernel_module(graph, kernel)


# --- on the GPU ----------------------------------------------------------------------------
def _reference(mod, args) -> np.ndarray:
    """The module's float32 result on the CPU (hetpart's CPU build, itself checked
    against the unscheduled functions in test_kernels)."""
    exe = kernels.build(mod, cpu_tvm_target())
    return relax.VirtualMachine(exe, tvm.cpu())["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", sorted(FILLING))
def test_tensor_core_kernels_correct_on_gpu(case):
    mod, args = FILLING[case]()
    assert "GpuTensorCoreGemm" in kernels.rules_applied(kernels.schedule(mod, cuda_tvm_target())).values()
    want = _reference(mod, args)
    dev = tvm.cuda(0)
    for graph in (False, True):
        vm = relax.VirtualMachine(kernels.build(mod, cuda_tvm_target(), cuda_graph=graph), dev)
        got = vm["main"](*[tvm.runtime.tensor(a, dev) for a in args]).numpy()
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < TF32_RTOL, f"{case}: max error {err:.2e} of the output's magnitude"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_benchmark_module_with_weight_parameter_correct_on_gpu():
    km = _conv_kernel_module()
    cpu_exe = kernels.build(km.mod, cpu_tvm_target())
    cpu_in = kernel_bench.prepared_inputs(km, cpu_exe, tvm.cpu())
    want = relax.VirtualMachine(cpu_exe, tvm.cpu())["main"](*cpu_in).numpy()
    dev = tvm.cuda(0)
    exe = kernels.build(km.mod, cuda_tvm_target(), cuda_graph=False)
    got = relax.VirtualMachine(exe, dev)["main"](*kernel_bench.prepared_inputs(km, exe, dev)).numpy()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < TF32_RTOL, f"max error {err:.2e} of the output's magnitude"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_tf32_operands_rounded_to_nearest_not_truncated_on_gpu():
    # x = +-(1 + 0.75 * 2^-10): TF32 keeps 10 mantissa bits, so the nearest TF32 value
    # is 1 + 2^-10; truncation (the tensor core's own reading of a float32) gives 1.
    # Every product and partial sum is exact in float32, so the result is exact too:
    # 768 * (1 + 2^-10) = 768.75 rounded, 768.0 truncated (the true value 768.5625).
    m, k, n = 4096, 768, 768
    x = np.full((m, k), 1 + 0.75 * 2.0 ** -10, "float32")
    x[1::2] *= -1
    w = np.ones((k, n), "float32")
    w[:, 1::2] = -1
    xv = relax.Var("x", relax.TensorType((m, k), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op.matmul(xv, relax.const(w))))
        bb.emit_func_output(out)
    mod = fuse(bb.get())
    assert set(kernels.rules_applied(kernels.schedule(mod, cuda_tvm_target())).values()) == {"GpuTensorCoreGemm"}
    dev = tvm.cuda(0)
    got = relax.VirtualMachine(kernels.build(mod, cuda_tvm_target(), cuda_graph=False), dev)["main"](
        tvm.runtime.tensor(x, dev)).numpy()
    want = np.where((np.arange(m)[:, None] % 2) == (np.arange(n)[None, :] % 2), 768.75, -768.75).astype("float32")
    np.testing.assert_array_equal(got, want)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", sorted(CLIP_CONVS))
def test_clip_epilogue_convolutions_at_batch_32_match_onnxruntime_on_gpu(case):
    from onnx_cases import onnxruntime_outputs, run_on

    cin, size = CLIP_CONVS[case][:2]
    m = _onnx_conv(32, *CLIP_CONVS[case], "clip")
    x = np.random.default_rng(1).standard_normal((32, cin, size, size)).astype("float32")
    x.flat[::7] = 0.0  # negatives and zeros
    got = run_on(m, "cuda", {"x": x}, simulate=False)["y"]
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert want.min() == 0 and want.max() == 6, "the case must clip at both bounds"
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < TF32_RTOL, f"{case}: max error {err:.2e} of the output's magnitude"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", sorted(INCEPTION_CONVS))
def test_asymmetric_and_valid_convolutions_at_batch_32_match_onnxruntime_on_gpu(case):
    from onnx_cases import relative_error_on_cuda

    cin, size, cout, kh, kw, stride, pads = INCEPTION_CONVS[case]
    m, _ = _onnx_conv2(32, cin, size, cout, kh, kw, stride, pads)
    x = np.random.default_rng(1).standard_normal((32, cin, size, size)).astype("float32")
    x.flat[::7] = 0.0  # negatives and zeros
    err = relative_error_on_cuda(m, {"x": x})
    assert err < TF32_RTOL, f"{case}: max error {err:.2e} of the output's magnitude"
