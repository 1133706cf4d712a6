"""The CPU matmul rule's fused image plane for 1x1 NCHW convolutions
(hetpart/kernels/rules/cpu_matmul.py, ``_fuse_plane``): where the image rows are not
whole 16-lane vectors but the plane is (56x56 = 196 vectors, 28x28 = 49), the conv is
tiled as ``W[oc, ic] @ X[ic, h*w]``: output channels x full vectors of the plane, the
weight broadcast.  Against ONNX Runtime (inputs with negatives and zeros; the ReLU,
ReLU6 and residual-add epilogues of resnet50's and mobilenet_v2's 1x1 convs; rtol 1e-5,
atol 1e-6 of the largest output: ORT sums in another order).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm_ffi
from onnx import helper

from onnx_cases import assert_matches, model

from hetpart import kernels, load
from hetpart.backend import forced_plan
from hetpart.kernels import weight_prepack
from hetpart.targets import host_triple


def _model(ic: int, oc: int, hw: int, epilogue: str, batch: int = 1) -> onnx.ModelProto:
    """Conv 1x1 (+ bias) on ``[1, ic, hw, hw]`` then ``epilogue``: none, relu, relu6
    (Clip 0..6, as mobilenet_v2 exports it) or add (a residual input ``r``)."""
    rng = np.random.default_rng(ic * 1000 + oc)
    w = (rng.standard_normal((oc, ic, 1, 1)) / np.sqrt(ic)).astype(np.float32)
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    inputs = [("x", (batch, ic, hw, hw), np.float32)]
    inits = {"w": w, "b": b}
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])
    if epilogue == "relu":
        tail = [helper.make_node("Relu", ["c"], ["y"])]
    elif epilogue == "relu6":
        tail = [helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
        inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
    elif epilogue == "add":
        tail = [helper.make_node("Add", ["c", "r"], ["y"])]
        inputs.append(("r", (batch, oc, hw, hw), np.float32))
    else:
        tail = [helper.make_node("Identity", ["c"], ["y"])]
    return model([conv] + tail, inputs, [("y", [batch, oc, hw, hw], np.float32)], inits, opset=13)


def _feeds(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feeds = {}
    for i in m.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        a = (rng.standard_normal(shape) * 3).astype(np.float32)
        a.flat[::7] = 0.0
        feeds[i.name] = a
    return feeds


def _hetpart(m, feeds):
    import hetpart

    graph = load(m)
    with hetpart.Session(hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)) as s:
        return s.run(feeds)["y"]


@pytest.mark.parametrize("ic,oc,hw,epilogue,batch", [
    (24, 144, 56, "relu6", 1),  # mobilenet_v2's expansion on 56x56
    (144, 24, 56, "none", 1),  # its projection
    (24, 48, 56, "add", 1),  # a residual add on the plane
    (32, 64, 28, "relu", 1),  # 28x28 = 49 vectors, a short reduction
    (64, 64, 56, "relu", 1),  # 2 full channel vectors, K = 64: still the plane
    (128, 64, 56, "relu", 1),  # K = 128: the weight tile
    (24, 48, 56, "add", 2),  # a batch of two planes
])
def test_fused_plane_matches_onnxruntime(ic, oc, hw, epilogue, batch):
    m = _model(ic, oc, hw, epilogue, batch)
    feeds = _feeds(m)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    if epilogue in ("relu", "relu6"):  # the clamps are exercised
        assert (want == 0).any() and (epilogue == "relu" or (want == 6).any())
    assert_matches(_hetpart(m, feeds), want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=epilogue)


def _scheduled(m: onnx.ModelProto, mcpu: str = "skylake-avx512"):
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 4})
    mod = kernels.schedule(weight_prepack.mark_weights(load(m).module), target)  # as build() does
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert str(func.attrs[kernels.RULE_ATTR]) == "CpuMatmul"
    return func


def _update_vector_loops(func) -> tuple[list, list]:
    """(the multiply-accumulate block's realizes, the vectorised loops directly around them)."""
    def is_update(stmt) -> bool:
        return isinstance(stmt, tvm.s_tir.SBlockRealize) and stmt.block.name_hint.endswith("_update")

    updates, loops = [], []
    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlockRealize, lambda r: updates.append(r) if is_update(r) else None))
    tvm_ffi.structural_walk(func.body, (tvm.tirx.For, lambda f: loops.append(f)
                                        if f.kind == tvm.tirx.ForKind.VECTORIZED and is_update(f.body) else None))
    return updates, loops


@pytest.mark.parametrize("ic,oc", [(24, 144), (144, 24)])
def test_56_plane_is_tiled_in_full_16_lane_image_vectors(ic, oc):
    """On AVX-512, the vector loop of the multiply-accumulate is 16 lanes of the image
    plane (main: 16 or 8 lanes of output channels, the weight packed), and the weight
    is broadcast, not packed."""
    func = _scheduled(_model(ic, oc, 56, "relu6"))
    text = func.script()
    assert "layout_rewrite_preproc" not in text, "the weight is broadcast, not packed:\n" + text
    (update,), vec_loops = _update_vector_loops(func)
    (loop,) = vec_loops
    assert int(loop.extent) == 16, text
    x = func.params[0]
    loads = []
    tvm_ffi.structural_walk(update.block.body, (tvm.ir.TensorLoad, lambda ld: loads.append(ld)
                                                if ld.source.same_as(x) else None))
    (load_x,) = loads
    used = []
    tvm_ffi.structural_walk(load_x.indices[-1], (tvm.tirx.Var, used.append))
    bound = [v for iv, v in zip(update.block.iter_vars, update.iter_values) if any(iv.var.same_as(u) for u in used)]
    names = []
    for value in bound:
        tvm_ffi.structural_walk(value, (tvm.tirx.Var, names.append))
    assert any(n.same_as(loop.loop_var) for n in names), "the image plane is not the vector dim:\n" + text


def test_long_reduction_on_whole_channel_vectors_keeps_the_weight_tile():
    """256 -> 64 on 56x56: 64 channels are two full vectors and K = 256 (the plane
    measured 3-15% slower there): the weight is packed and vectorised as before;
    64 -> 64 (K = 64) takes the plane."""
    assert "layout_rewrite_preproc" in _scheduled(_model(256, 64, 56, "relu")).script()
    assert "layout_rewrite_preproc" not in _scheduled(_model(64, 64, 56, "relu")).script()
