"""``hetpart.importer.concat_projections``: Q, K, V projections of one input as one GEMM (issue 17).

An attention block (Q and V with a bias, K without one as Whisper's ``k_proj``; heads reshaped
and transposed as HF exports them) imported with :data:`CONCAT_PROJECTIONS` on computes what ONNX
Runtime and onnx.reference compute, on inputs with negatives and zeros, built for the CPU; the
three projections become one ``matmul`` (+ bias) kernel and the slices fuse into the head
transposes (two kernels fewer than off); projections of other inputs, of another K, and a matmul
read elsewhere too are handled; no group where a slice would be a kernel of its own; off, the import is unchanged.  The fused kernels, scheduled for
sm_90, build to CUDA with the GEMM on tensor cores (``mma.sync``).  With a GPU (``cuda`` mark):
the block all-CUDA in TF32 with the switch on against ONNX Runtime.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

from onnx_cases import cuda_source, model, onnxruntime_outputs, reference, run_on

from hetpart import importer, kernels
from hetpart.importer import concat_projections as cp
from hetpart.targets import cuda_available, cuda_tvm_target

T, D, H = 64, 128, 4  # tokens, width, heads
HD = D // H


def _attention(bias_k: bool = False, extra_use: bool = False, seed: int = 0):
    """``softmax(Q K^T / sqrt(hd)) V`` over heads, Q = x Wq + bq, K = x Wk (+ bk), V = x Wv + bv;
    also ``z = u Wz`` (another input: not grouped); ``extra_use``: ``q_mm`` read by a second node."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    inits = {"wq": w(D, D), "wk": w(D, D), "wv": w(D, D), "wz": w(D, D),
             "bq": rng.standard_normal(D).astype(np.float32), "bv": rng.standard_normal(D).astype(np.float32),
             "shape": np.array([1, T, H, HD], np.int64), "back": np.array([1, T, D], np.int64),
             "scale": np.array(1 / np.sqrt(HD), np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q_mm"]), helper.make_node("Add", ["q_mm", "bq"], ["q"]),
             helper.make_node("MatMul", ["x", "wk"], ["k_mm"]),
             helper.make_node("MatMul", ["x", "wv"], ["v_mm"]), helper.make_node("Add", ["v_mm", "bv"], ["v"])]
    k = "k_mm"
    if bias_k:
        inits["bk"] = rng.standard_normal(D).astype(np.float32)
        nodes.append(helper.make_node("Add", ["k_mm", "bk"], ["k"]))
        k = "k"
    for name, src, perm in (("qh", "q", [0, 2, 1, 3]), ("kh", k, [0, 2, 3, 1]), ("vh", "v", [0, 2, 1, 3])):
        nodes += [helper.make_node("Reshape", [src, "shape"], [name + "_r"]),
                  helper.make_node("Transpose", [name + "_r"], [name], perm=perm)]
    nodes += [helper.make_node("MatMul", ["qh", "kh"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["s2"]),
              helper.make_node("Softmax", ["s2"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "vh"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "back"], ["a"]),
              helper.make_node("MatMul", ["u", "wz"], ["z"]), helper.make_node("Add", ["a", "z"], ["y"])]
    outputs = [("y", (1, T, D), np.float32)]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["q_mm"], ["r"]))
        outputs.append(("r", (1, T, D), np.float32))
    return model(nodes, [("x", (1, T, D), np.float32), ("u", (1, T, D), np.float32)], outputs, inits)


def _feeds(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, T, D)).astype(np.float32)
    x.flat[::5] = 0.0  # zeros, and negatives from the normal draw
    x[0, 3] = 0.0  # a whole zero token
    return {"x": x, "u": -np.abs(rng.standard_normal((1, T, D))).astype(np.float32)}


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(cp, "CONCAT_PROJECTIONS", True)


def _kernel_ops(m) -> list[tuple[str, ...]]:
    return [k.ops for k in importer.load(m).kernels.values()]


@pytest.mark.parametrize("bias_k", [False, True])
@pytest.mark.parametrize("extra_use", [False, True])
def test_outputs_match_onnxruntime_and_reference_on_cpu(on, bias_k, extra_use):
    m, feeds = _attention(bias_k, extra_use), _feeds()
    got = run_on(m, "cpu", feeds)
    want = dict(zip([o.name for o in m.graph.output], onnxruntime_outputs(m, feeds)))
    ref = reference(m, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_one_gemm_and_two_kernels_fewer(monkeypatch):
    m = _attention()
    before = _kernel_ops(m)
    monkeypatch.setattr(cp, "CONCAT_PROJECTIONS", True)
    after = _kernel_ops(m)
    assert sum("matmul" in ops for ops in before) == 6  # q, k, v, QK^T, PV, z
    assert sum("matmul" in ops for ops in after) == 4  # qkv, QK^T, PV, z
    assert len(after) == len(before) - 2
    # each slice fused into its head transpose: no kernel is a lone strided_slice
    assert all(ops != ("strided_slice",) for ops in after)
    assert sum("strided_slice" in ops for ops in after) == 3


def test_off_leaves_the_import_unchanged():
    from hetpart.importer.onnx_source import read_model
    from hetpart.importer.relax_import import to_relax

    m = _attention(bias_k=True)
    assert not cp.CONCAT_PROJECTIONS
    relax_mod = to_relax(read_model(m, None))
    assert cp.concat_projections(relax_mod) is relax_mod
    assert "strided_slice" not in importer.load(m).module.script()


def test_groups_need_the_same_input_and_rows(on):
    """Projections of one input and K but different widths group (p: D, q: 2D, read by an add and
    a relu); one of another K (c, read after q) does not."""
    rng = np.random.default_rng(0)
    inits = {"a": rng.standard_normal((D, D)).astype(np.float32),
             "b": rng.standard_normal((D, 2 * D)).astype(np.float32),
             "c": rng.standard_normal((2 * D, D)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "a"], ["p"]), helper.make_node("MatMul", ["x", "b"], ["q"]),
             helper.make_node("Relu", ["q"], ["qr"]), helper.make_node("MatMul", ["qr", "c"], ["r"]),
             helper.make_node("Add", ["p", "r"], ["y"])]
    m = model(nodes, [("x", (1, T, D), np.float32)], [("y", (1, T, D), np.float32)], inits)
    ops = _kernel_ops(m)
    assert sum("strided_slice" in o for o in ops) == 2 and sum("matmul" in o for o in ops) == 2
    x = _feeds()["x"]
    got = run_on(m, "cpu", {"x": x})["y"]
    np.testing.assert_allclose(got, onnxruntime_outputs(m, {"x": x})[0], rtol=1e-4, atol=1e-3)


def test_no_group_where_a_slice_would_be_a_kernel_of_its_own(on):
    """Projections that are model outputs, or read by a matmul, stay apart (a lone slice kernel
    would add the launch the concatenation saves)."""
    rng = np.random.default_rng(0)
    inits = {n: rng.standard_normal((D, D)).astype(np.float32) for n in ("a", "b", "c")}
    nodes = [helper.make_node("MatMul", ["x", "a"], ["q"]), helper.make_node("MatMul", ["x", "b"], ["k"]),
             helper.make_node("MatMul", ["x", "c"], ["v"]), helper.make_node("MatMul", ["v", "a"], ["w"])]
    m = model(nodes, [("x", (1, T, D), np.float32)],
              [("q", (1, T, D), np.float32), ("k", (1, T, D), np.float32), ("w", (1, T, D), np.float32)], inits)
    assert not any("strided_slice" in o for o in _kernel_ops(m))


def test_fused_kernels_build_for_sm90_on_tensor_cores(on):
    """The concatenated GEMM (64 x 384 x 128) and the slice-transposes, scheduled for sm_90."""
    graph = importer.load(_attention())
    assert [k.ops for k in graph.kernels.values()][0] == ("matmul", "add")
    src = cuda_source(kernels.build(graph.module, cuda_tvm_target("sm_90"), cuda_graph=False))
    parts = re.split(r'(?=extern "C" __global__)', src)
    qkv = [p for p in parts if re.search(r"void (?:__launch_bounds__\(\d+\) )?fused_matmul_add_\w*kernel\(", p)]
    assert any("mma.sync" in p for p in qkv)  # the GEMM (a split-K sum kernel beside it, if split)
    assert len(set(re.findall(r"void (?:__launch_bounds__\(\d+\) )?(fused_strided_slice\w*)\(", src))) == 3


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("bias_k", [False, True])
def test_outputs_match_onnxruntime_on_gpu(on, bias_k):
    """All-CUDA (TF32) with the switch on, against ONNX Runtime's float32."""
    m, feeds = _attention(bias_k), _feeds()
    got = run_on(m, "cuda", feeds, simulate=False)["y"]
    want = onnxruntime_outputs(m, feeds)[0]
    assert float(np.abs(got - want).max() / np.abs(want).max()) < 5e-3
