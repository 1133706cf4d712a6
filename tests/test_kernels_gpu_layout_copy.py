"""Tests of ``gpu_layout_copy`` (``LAYOUT_COPY``, issue 17's batch-32 kernel profiles: ViT's head split
and merge, DistilBERT's head splits, the K^T slices and bf16 narrowings flash attention reads, all
dlight ``Fallback`` scalar copies): layout copies as vectorised copies or tiled transposes.

Without a GPU: the recogniser takes small ONNX graphs shaped like the exports' head split / merge
(torchvision's ViT: ``Reshape, Unsqueeze, Transpose, Squeeze``; ``Reshape, Transpose, Add``; the
``Gather``-ed K heads transposed and scaled; BERT's ``Reshape, Transpose`` both ways; batch 1, a
half-wide tile, a multiply-add epilogue) and the bf16 narrowings flash attention and the
activation pass add, each as the plan it should be (``vector`` where the input's innermost axis is
the output's, ``tile`` where it is another), and declines element-wise kernels, a pure cast, a
reduction, a gather, a concatenation, a matmul, a transpose into a 3-wide innermost axis, an int64
transpose and a slice whose vectors would be misaligned (``access.run_kind``'s proofs: aligned
runs, broadcasts; ``access.steps_along``); with the switch off every function is ``Fallback``'s as
before; the scheduled functions, run serially on the CPU (``llvm``), give the unscheduled
function's bits exactly on inputs with ±0, ±Inf, NaN and negatives (but a multiply-add epilogue,
:data:`MULTIPLY_ADD`), and ``Fallback``'s schedule's bits in every case; their CUDA C is the plan
(a padded shared tile and a barrier, or 16-byte vectors) and compiles with nvcc for sm_90a (no
spills); a ViT-style block builds all-CUDA in bf16 with the switch on, the rule taking the head
split and merge, the three slices of the packed qkv and the bf16 narrowings but the pure casts.
With a GPU (``cuda`` mark): the float32 layout copies equal numpy's exactly; the bf16 ones numpy's
values and the CPU's bits.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import te, tirx

from onnx_cases import model, special_tensor, torchvision_attention
from tir_loops import serial_everywhere

from hetpart import kernels, load
from hetpart.kernels import RULE_ATTR
from hetpart.kernels.rules import gpu_layout_copy as glc
from hetpart.targets import cpu_tvm_target, cuda_tvm_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

SM90 = cuda_tvm_target("sm_90")
node = helper.make_node


@pytest.fixture
def switch_on(monkeypatch):
    monkeypatch.setattr(glc, "LAYOUT_COPY", True)


def _i64(*values):
    return np.array(values, np.int64)


# --- the graphs ------------------------------------------------------------------------------------
def vit_head_split(b=4, tokens=37, width=64):
    """torchvision's packed in-projection split: ``[L, B, 3E] -> [3, L, B, E]`` (``unflatten,
    unsqueeze(0), transpose(0, -2), squeeze(-2)``): ViT's ``fused_reshape1_expand_dims_transpose2_squeeze``."""
    return model([node("Reshape", ["x", "s"], ["r"]), node("Unsqueeze", ["r", "ax0"], ["u"]),
                  node("Transpose", ["u"], ["t"], perm=[3, 1, 2, 0, 4]), node("Squeeze", ["t", "axm2"], ["y"])],
                 [("x", (tokens, b, 3 * width), np.float32)], [("y", (3, tokens, b, width), np.float32)],
                 {"s": _i64(tokens, b, 3, width), "ax0": _i64(0), "axm2": _i64(-2)})


def vit_head_merge(b=4, tokens=37, width=64):
    """The out-projection's ``[L*B, E]`` back to ``[B, L, E]`` plus the residual:
    ViT's ``fused_reshape5_transpose6_add4``."""
    return model([node("Reshape", ["o", "s"], ["r"]), node("Transpose", ["r"], ["t"], perm=[1, 0, 2]),
                  node("Add", ["x", "t"], ["y"])],
                 [("o", (tokens * b, width), np.float32), ("x", (b, tokens, width), np.float32)],
                 [("y", (b, tokens, width), np.float32)], {"s": _i64(tokens, b, width)})


def vit_k_heads(b=4, tokens=37, width=128, heads=2):
    """K from the packed ``[3, L, B, E]``: ``Gather`` 1, per-head views, ``K^T`` scaled (the
    export's ``fused_strided_slice1_squeeze1_reshape2_transpose3_reshape3_transpose4_multiply1``)."""
    d = width // heads
    return model([node("Gather", ["p", "i"], ["k"], axis=0), node("Reshape", ["k", "s1"], ["r1"]),
                  node("Transpose", ["r1"], ["t1"], perm=[1, 0, 2]), node("Reshape", ["t1", "s2"], ["r2"]),
                  node("Transpose", ["r2"], ["t2"], perm=[0, 1, 3, 2]), node("Mul", ["t2", "c"], ["y"])],
                 [("p", (3, tokens, b, width), np.float32)], [("y", (b, heads, d, tokens), np.float32)],
                 {"i": np.array(1, np.int64), "s1": _i64(tokens, b * heads, d), "s2": _i64(b, heads, tokens, d),
                  "c": np.array(-0.125, np.float32)})


def bert_heads(perm, b=4, seq=48, width=128, heads=2):
    """BERT/DistilBERT's ``[B, S, E] -> [B, S, H, D]`` then ``perm``: ``(0, 2, 1, 3)`` Q and V
    (``fused_reshape3_transpose``), ``(0, 2, 3, 1)`` K^T (``fused_reshape3_transpose1``)."""
    shape = [b, seq, heads, width // heads]
    return model([node("Reshape", ["x", "s"], ["r"]), node("Transpose", ["r"], ["y"], perm=list(perm))],
                 [("x", (b, seq, width), np.float32)], [("y", tuple(shape[p] for p in perm), np.float32)],
                 {"s": _i64(*shape)})


def scaled_heads_plus_bias(b=4, seq=48, width=128, heads=2):
    """Q's heads scaled and a ``[S, D]`` table added (a position term, as zoo:moe's
    ``fused_reshape3_multiply4_add4``): a multiply-add epilogue."""
    d = width // heads
    rng = np.random.default_rng(0)
    return model([node("Reshape", ["x", "s"], ["r"]), node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
                  node("Mul", ["t", "c"], ["m"]), node("Add", ["m", "p"], ["y"])],
                 [("x", (b, seq, width), np.float32)], [("y", (b, heads, seq, d), np.float32)],
                 {"s": _i64(b, seq, heads, d), "c": np.array(0.125, np.float32),
                  "p": rng.standard_normal((seq, d)).astype(np.float32)})


GRAPHS = {
    "vit head split": (vit_head_split, "vector"),
    "vit head merge + residual": (vit_head_merge, "vector"),
    "vit K^T heads * scale": (vit_k_heads, "tile"),
    "bert Q/V heads": (lambda: bert_heads((0, 2, 1, 3)), "vector"),
    "bert K^T heads": (lambda: bert_heads((0, 2, 3, 1)), "tile"),
    "vit head split, batch 1": (lambda: vit_head_split(b=1), "vector"),  # unit axes: simplified to 0
    "bert K^T heads, batch 1": (lambda: bert_heads((0, 2, 3, 1), b=1), "tile"),
    "bert K^T heads, 16 tokens": (lambda: bert_heads((0, 2, 3, 1), seq=16), "tile"),  # half a tile wide
    "scaled heads + bias": (scaled_heads_plus_bias, "vector"),
}

MULTIPLY_ADD = {"scaled heads + bias"}
"""Cases whose epilogue is ``x * c + p``: inlined into one expression (by this rule and by dlight's
``Fallback`` alike) LLVM contracts it into an FMA, which the unscheduled function, storing ``x * c``
between its blocks, does not -- compared with ``Fallback``'s schedule only."""


def narrow_transposed(b=2, h=3, d=64, n=37, dtype="float32"):
    """flash attention's K narrowing (``flash_substitute._narrow_transposed``): ``[b,h,d,n]`` to
    bf16 ``[b,h,n,d]``."""
    kt = te.placeholder((b, h, d, n), dtype, name="kt")
    out = te.compute((b, h, n, d), lambda i, j, k, m: kt[i, j, m, k].astype("bfloat16"), name="flash_in")
    return te.create_prim_func([kt, out])


def narrow_merge(b=2, h=3, n=37, d=64, dtype="float32"):
    """The context's head merge narrowed for the out-projection (``fused_transpose5_reshape4_bf16a``):
    ``[b,h,n,d]`` to bf16 ``[n*b, h*d]``, as the activation pass leaves it."""
    o = te.placeholder((b, h, n, d), dtype, name="o")
    out = te.compute((n * b, h * d), lambda r, c: o[r % b, c // d, r // b, c % d].astype("bfloat16"), name="narrow")
    return te.create_prim_func([o, out])


def bf16_heads(b=2, s=40, h=4, d=64):
    """A bf16 activation's head split, bf16 in and out (8 lanes a 16-byte vector)."""
    x = te.placeholder((b, s, h * d), "bfloat16", name="x")
    out = te.compute((b, h, s, d), lambda i, j, k, m: x[i, k, j * d + m], name="heads")
    return te.create_prim_func([x, out])


FUNCS = {
    "flash K narrowing": (narrow_transposed, "tile"),
    "bf16a head merge": (narrow_merge, "vector"),
    "bf16 head split": (bf16_heads, "vector"),
}


def _func(m) -> tirx.PrimFunc:
    """The one fused PrimFunc of ``m``."""
    (func,) = [f for _, f in load(m).module.functions_items() if isinstance(f, tirx.PrimFunc)]
    return func


def _all_cases():
    out = {name: (lambda build=build: _func(build()), kind) for name, (build, kind) in GRAPHS.items()}
    out.update({name: (build, kind) for name, (build, kind) in FUNCS.items()})
    return out


CASES = _all_cases()


# --- the recogniser --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_takes_layout_copies_as_their_plan(case):
    build, kind = CASES[case]
    found = glc.match(build())
    assert found is not None
    assert found[2].kind == kind


def test_lanes_follow_the_widest_dtype():
    assert glc.match(_func(vit_head_split()))[2].lanes == 4  # float32: float4
    assert glc.match(narrow_merge())[2].lanes == 4  # float32 in, bf16 out: the float32 load's 4
    assert glc.match(bf16_heads())[2].lanes == 8  # bf16 in and out: 16 bytes


def _elementwise():
    return model([node("Add", ["x", "b"], ["y"])], [("x", (4, 37, 64), np.float32)],
                 [("y", (4, 37, 64), np.float32)], {"b": np.ones(64, np.float32)})


def _softmax():
    return model([node("Softmax", ["x"], ["y"], axis=-1)], [("x", (4, 37, 64), np.float32)],
                 [("y", (4, 37, 64), np.float32)])


def _embedding():
    return model([node("Gather", ["w", "ids"], ["y"], axis=0)], [("ids", (4, 37), np.int64)],
                 [("y", (4, 37, 64), np.float32)], {"w": np.ones((100, 64), np.float32)})


def _concat():
    return model([node("Concat", ["a", "b"], ["y"], axis=1)], [("a", (4, 1, 64), np.float32),
                                                              ("b", (4, 36, 64), np.float32)],
                 [("y", (4, 37, 64), np.float32)])


def _matmul():
    return model([node("MatMul", ["x", "w"], ["y"])], [("x", (4, 37, 64), np.float32)],
                 [("y", (4, 37, 32), np.float32)], {"w": np.ones((64, 32), np.float32)})


def _to_channels_last():
    return model([node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], [("x", (2, 3, 32, 32), np.float32)],
                 [("y", (2, 32, 32, 3), np.float32)])


def _int64_heads():
    return model([node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3])], [("x", (4, 48, 2, 64), np.int64)],
                 [("y", (4, 2, 48, 64), np.int64)])


def _pure_cast():
    x = te.placeholder((2, 3, 37, 64), "float32", name="x")
    return te.create_prim_func([x, te.compute(x.shape, lambda *i: x(*i).astype("bfloat16"), name="flash_in")])


def _funcs(m) -> list[tirx.PrimFunc]:
    return [f for _, f in load(m).module.functions_items() if isinstance(f, tirx.PrimFunc)]


OTHERS = {
    "element-wise add": lambda: _funcs(_elementwise()),
    "softmax": lambda: _funcs(_softmax()),
    "embedding gather": lambda: _funcs(_embedding()),  # the ids' wrap-around and the take
    "concat": lambda: _funcs(_concat()),
    "matmul": lambda: _funcs(_matmul()),
    "NCHW to NHWC, 3 channels": lambda: _funcs(_to_channels_last()),
    "pure cast": lambda: [_pure_cast()],
    "int64 head split": lambda: _funcs(_int64_heads()),  # not a float activation
}


@pytest.mark.parametrize("case", sorted(OTHERS))
def test_declines_other_kernels(case):
    funcs = OTHERS[case]()
    assert funcs
    for func in funcs:
        assert glc.match(func) is None


def _unaligned_slice():
    """``y[i, j] = x[i, j + 1]`` over rows of 65: each row's run starts one float past a 16-byte
    boundary, so no vector load is aligned -- and the input's innermost axis is the output's."""
    x = te.placeholder((4, 65), "float32", name="x")
    return te.create_prim_func([x, te.compute((4, 64), lambda i, j: x[i, j + 1] * 2.0, name="y")])


def test_declines_a_copy_whose_vectors_would_be_misaligned():
    assert glc.match(_unaligned_slice()) is None


def _block(func):
    sch, blk = glc._single_block(func)
    return sch.get(blk)


def test_run_kind_proves_aligned_runs_and_broadcasts():
    from hetpart.kernels import access

    block = _block(_func(vit_head_merge()))
    inner = block.iter_vars[-1].var
    loads = glc._loads(block.body.value)
    assert {access.run_kind(block, ld, inner, 4) for ld in loads} == {"run"}  # x and the moved [L*B, E]
    assert access.run_kind(block, block.body, inner, 4) == "run"
    assert access.run_kind(block, block.body, inner, 3) is None  # 64 is no multiple of 3
    bias = _block(_func(_elementwise()))
    (b,) = [ld for ld in glc._loads(bias.body.value) if len(ld.indices) == 1]
    assert access.run_kind(bias, b, bias.iter_vars[0].var, 4) == "still"  # b[k] along the batch
    slice_ = _block(_unaligned_slice())
    (ld,) = glc._loads(slice_.body.value)
    assert access.run_kind(slice_, ld, slice_.iter_vars[-1].var, 2) is None


def test_steps_along_finds_the_transposed_inputs_axis():
    from hetpart.kernels import access

    block = _block(_func(bert_heads((0, 2, 3, 1))))  # y[b, h, d, s] = x[b, s, h * 64 + d]
    (ld,) = glc._loads(block.body.value)
    ivs = block.iter_vars
    assert access.steps_along(block, ld, ivs[2].var, 4) == [1, 1, 1]  # d: contiguous
    assert access.steps_along(block, ld, ivs[3].var, 3) == [128, 128]  # s: a row of the input per step


# --- the schedule ----------------------------------------------------------------------------------
def test_switch_off_leaves_fallback():
    for build, _ in CASES.values():
        func = kernels.schedule_primfunc(build(), SM90)
        assert str(func.attrs[RULE_ATTR]) == "Fallback"


def _scheduled(build) -> tirx.PrimFunc:
    func = kernels.schedule_primfunc(build(), SM90)
    assert str(func.attrs[RULE_ATTR]) == "GpuLayoutCopy"
    return func


def _cuda_c(func: tirx.PrimFunc) -> str:
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=SM90)
    return lib.imports[0].inspect_source()


@pytest.mark.parametrize("case", sorted(CASES))
def test_cuda_c_is_the_plan(switch_on, case):
    build, kind = CASES[case]
    src = _cuda_c(_scheduled(build))
    if kind == "tile":
        (size,) = re.findall(r"__shared__ alignas\(\d+\) float \w+\[(\d+)\]", src)  # one padded tile
        assert int(size) % (glc.TILE + 1) == 0 and int(size) <= glc.TILE * (glc.TILE + 1)
        assert "__syncthreads()" in src
    else:
        assert "__shared__" not in src
        assert "*(float4*)" in src or "*(uint4*)" in src  # 16-byte loads


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("case", ["vit head split", "vit K^T heads * scale", "flash K narrowing", "bf16a head merge",
                                  "bf16 head split"])
def test_cuda_c_compiles_for_sm90a(switch_on, case, tmp_path):
    from nvcc_cases import assert_no_spills

    assert_no_spills(_cuda_c(_scheduled(CASES[case][0])), "90a", tmp_path)


def _inputs(func: tirx.PrimFunc, seed: int) -> list[np.ndarray]:
    """Arrays for every parameter but the output, in its dtype (float32 or bfloat16), each holding
    ±0, ±Inf, NaN and negatives."""
    import ml_dtypes

    out = []
    for k, p in enumerate(func.params[:-1]):
        x = special_tensor([int(d) for d in p.ty.shape], seed + k)
        out.append(x.astype(ml_dtypes.bfloat16) if str(p.ty.dtype) == "bfloat16" else x)
    return out


def _run_cpu(func: tirx.PrimFunc, arrays) -> np.ndarray:
    """``func`` built for the CPU (``llvm``) and run on ``arrays``: its output's raw bytes."""
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=cpu_tvm_target())
    out = func.params[-1]
    args = [tvm.runtime.tensor(a) for a in arrays]
    args.append(tvm.runtime.empty([int(d) for d in out.ty.shape], str(out.ty.dtype)))
    lib["main"](*args)
    return np.ascontiguousarray(args[-1].numpy()).view(np.uint8)


@pytest.mark.parametrize("case", sorted(set(CASES) - MULTIPLY_ADD))
def test_scheduled_function_gives_the_same_bits_on_the_cpu(switch_on, case):
    build, _ = CASES[case]
    func = build()
    arrays = _inputs(func, seed=3)
    want = _run_cpu(func, arrays)
    got = _run_cpu(serial_everywhere(_scheduled(build)), arrays)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduled_function_gives_fallbacks_bits_on_the_cpu(monkeypatch, case):
    """Against the schedule it replaces (dlight's ``Fallback``, also serial on the CPU): the same
    bits, a multiply-add epilogue included."""
    build, _ = CASES[case]
    func = build()
    arrays = _inputs(func, seed=4)
    want = _run_cpu(serial_everywhere(kernels.schedule_primfunc(func, SM90)), arrays)
    monkeypatch.setattr(glc, "LAYOUT_COPY", True)
    got = _run_cpu(serial_everywhere(_scheduled(build)), arrays)
    np.testing.assert_array_equal(got, want)


def test_vit_block_builds_all_cuda_in_bf16_with_the_rule(switch_on, monkeypatch):
    import gpu_model_switch_ab as ab

    seen = {}
    schedule = kernels.schedule

    def spy(mod, target, options=kernels.DEFAULT):
        out = schedule(mod, target, options)
        seen.update(kernels.rules_applied(out))
        return out

    monkeypatch.setattr(kernels, "schedule", spy)
    graph = load(torchvision_attention(37, 128, 2, block=True, batch=4))
    ab.build(graph, "bf16", [], cuda_arch="sm_90")
    taken = {name for name, rule in seen.items() if rule == "GpuLayoutCopy"}
    assert any("expand_dims" in name for name in taken)  # the head split
    assert any(name.startswith("fused_reshape") and "transpose" in name and "_add" in name for name in taken)  # merge
    assert len([name for name in taken if name.startswith("fused_strided_slice")]) == 3  # Q, K^T, V from the packed qkv
    assert {"transpose_bf16a", "flash_in1"} <= taken  # the bf16 narrowings: x for the in-projection, K for flash
    assert any(name.startswith("fused_transpose") and name.endswith("_bf16a") for name in taken)  # the context's
    assert seen["flash_in"] == "Fallback"  # Q's and V's narrowing: a pure cast, not a layout copy


# --- on the GPU ------------------------------------------------------------------------------------
NUMPY = {
    "vit head split": lambda x: np.squeeze(np.transpose(x["x"].reshape(37, 4, 3, 64)[None], (3, 1, 2, 0, 4)), -2),
    "vit head merge + residual": lambda x: x["x"] + np.transpose(x["o"].reshape(37, 4, 64), (1, 0, 2)),
    "vit K^T heads * scale": lambda x: np.transpose(np.transpose(x["p"][1].reshape(37, 8, 64), (1, 0, 2))
                                                    .reshape(4, 2, 37, 64), (0, 1, 3, 2)) * np.float32(-0.125),
    "bert Q/V heads": lambda x: np.transpose(x["x"].reshape(4, 48, 2, 64), (0, 2, 1, 3)),
    "bert K^T heads": lambda x: np.transpose(x["x"].reshape(4, 48, 2, 64), (0, 2, 3, 1)),
}


@pytest.mark.cuda
@pytest.mark.parametrize("case", sorted(NUMPY))
def test_layout_copies_equal_numpy_on_gpu(switch_on, case):
    from onnx_cases import run_on

    m = GRAPHS[case][0]()
    feeds = {i.name: special_tensor([d.dim_value for d in i.type.tensor_type.shape.dim], seed=5 + k)
             for k, i in enumerate(m.graph.input)}
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    np.testing.assert_array_equal(got, NUMPY[case](feeds))


def _bf16_numpy(x: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return x.astype(ml_dtypes.bfloat16)


FUNCS_NUMPY = {
    "flash K narrowing": lambda kt: _bf16_numpy(np.transpose(kt, (0, 1, 3, 2))),
    "bf16a head merge": lambda o: _bf16_numpy(np.transpose(o, (2, 0, 1, 3)).reshape(37 * 2, 3 * 64)),
    "bf16 head split": lambda x: np.transpose(x.reshape(2, 40, 4, 64), (0, 2, 1, 3)),
}


@pytest.mark.cuda
@pytest.mark.parametrize("case", sorted(FUNCS_NUMPY))
def test_bf16_layout_copies_on_gpu_equal_numpy_and_the_cpu_bits(switch_on, case):
    """The bf16 narrowings (vector bf16 stores, the tiled transpose's) run on the GPU: numpy's values
    (NaN where numpy has NaN), and the unscheduled function's bits on the CPU."""
    build = FUNCS[case][0]
    func = build()
    arrays = _inputs(func, seed=7)
    want_bits = _run_cpu(func, arrays)
    sched = _scheduled(build)
    lib = tvm.tirx.build(tvm.IRModule({"main": sched.with_attr("global_symbol", "main")}), target=cuda_tvm_target())
    dev = tvm.cuda(0)
    out = func.params[-1]
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    args.append(tvm.runtime.empty([int(d) for d in out.ty.shape], str(out.ty.dtype), dev))
    lib["main"](*args)
    got = args[-1].numpy()
    assert_bf16_bits_equal(np.ascontiguousarray(got).view(np.uint8), want_bits)
    np.testing.assert_array_equal(got.astype(np.float32), FUNCS_NUMPY[case](arrays[0]).astype(np.float32))


def _bf16_nan(bits: np.ndarray) -> np.ndarray:
    return ((bits & 0x7F80) == 0x7F80) & ((bits & 0x7F) != 0)


def assert_bf16_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    """``got`` and ``want`` (raw bytes of bfloat16 arrays) hold the same bits, except that a NaN
    may be any NaN.  Why: CUDA's ``__float2bfloat16`` writes a NaN as 0x7FFF and LLVM's CPU
    narrowing as 0x7FC0 (device step 173); a NaN's payload is not part of the contract."""
    g, w = got.view(np.uint16).ravel(), want.view(np.uint16).ravel()
    nan = _bf16_nan(w)
    np.testing.assert_array_equal(_bf16_nan(g), nan)
    np.testing.assert_array_equal(g[~nan], w[~nan])


def test_bf16_bits_compare_nans_by_class_and_everything_else_exactly():
    want = np.array([0x3F80, 0x7FC0, 0xFFC0, 0x7F80, 0x0000], dtype=np.uint16)  # 1, NaN, -NaN, +Inf, 0
    assert_bf16_bits_equal(np.array([0x3F80, 0x7FFF, 0xFFFF, 0x7F80, 0x0000], np.uint16).view(np.uint8),
                           want.view(np.uint8))
    for wrong in ([0x3F81, 0x7FC0, 0xFFC0, 0x7F80, 0], [0x3F80, 0x7F80, 0xFFC0, 0x7F80, 0],
                  [0x3F80, 0x7FC0, 0xFFC0, 0x7FC0, 0], [0x3F80, 0x7FC0, 0xFFC0, 0x7F80, 0x8000]):
        with pytest.raises(AssertionError):
            assert_bf16_bits_equal(np.array(wrong, np.uint16).view(np.uint8), want.view(np.uint8))


# --- VECTOR_ELEMENTWISE: element-wise functions (a cast) as vector copies too ---------------------------
def _flash_q_narrowing():
    """flash attention's Q / V narrowing (``flash_substitute._narrow``): a pure cast to bf16."""
    return _pure_cast()


ELEMENTWISE = {
    "flash Q narrowing (cast)": (_flash_q_narrowing, 4),
    "element-wise add of a bias": (lambda: _func(_elementwise()), 4),
}


@pytest.mark.parametrize("case", sorted(ELEMENTWISE))
def test_elementwise_only_with_its_switch(monkeypatch, case):
    build, lanes = ELEMENTWISE[case]
    assert glc.match(build()) is None  # off: not a layout copy
    monkeypatch.setattr(glc, "VECTOR_ELEMENTWISE", True)
    found = glc.match(build())
    assert found is not None and (found[2].kind, found[2].lanes) == ("vector", lanes)


@pytest.mark.parametrize("case", sorted(ELEMENTWISE))
def test_elementwise_vector_copy_gives_the_same_bits_and_compiles(switch_on, monkeypatch, case, tmp_path):
    monkeypatch.setattr(glc, "VECTOR_ELEMENTWISE", True)
    build, _ = ELEMENTWISE[case]
    func = build()
    arrays = _inputs(func, seed=9)
    sched = _scheduled(build)
    np.testing.assert_array_equal(_run_cpu(serial_everywhere(sched), arrays), _run_cpu(func, arrays))
    src = _cuda_c(sched)
    assert "*(float4*)" in src
    if shutil.which("nvcc"):
        from nvcc_cases import assert_no_spills

        assert_no_spills(src, "90a", tmp_path)


def test_elementwise_switch_keeps_other_kernels(monkeypatch):
    """Still no reductions, gathers, selects, integer kernels or misaligned vectors."""
    monkeypatch.setattr(glc, "VECTOR_ELEMENTWISE", True)
    for case in ("softmax", "embedding gather", "concat", "matmul", "int64 head split"):
        for func in OTHERS[case]():
            assert glc.match(func) is None, case
    assert glc.match(_unaligned_slice()) is None


@pytest.mark.parametrize("case", sorted(CASES) + sorted(ELEMENTWISE))
def test_leaves_the_function_it_schedules_as_it_was(switch_on, monkeypatch, case):
    """The rule schedules a copy: the caller's PrimFunc is unchanged (a schedule of the simplified
    module once mutated a single-block function in place)."""
    monkeypatch.setattr(glc, "VECTOR_ELEMENTWISE", True)
    build = CASES[case][0] if case in CASES else ELEMENTWISE[case][0]
    func = build()
    before = func.script()
    assert str(kernels.schedule_primfunc(func, SM90).attrs[RULE_ATTR]) == "GpuLayoutCopy"
    assert func.script() == before
    tvm.ir.assert_structural_equal(func, build())
