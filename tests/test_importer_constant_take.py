"""``hetpart.importer.constant_take``: a Gather at one constant index as a strided slice that fuses.

Small graphs (scalar, 1-element and ``[[k]]`` indices, negative ones, axis 0, 1 and last, the
result read by a reshape or transpose) built for the CPU give onnx.reference's and ONNX Runtime's
values bit for bit on inputs with negatives, both zeros, ±Inf and NaN.  torchvision's
MultiheadAttention split of the packed QKV projection (``proj[0], proj[1], proj[2]``) leaves no
``take`` kernel and three kernels fewer than with the switch off, and still matches ONNX Runtime.
Left alone: an index out of range (index_guard's clip stays), a Gather of a shape, an index of
several elements; off, the import is unchanged.  With a GPU (``cuda`` mark): the slices all-CUDA
bit for bit, and the ViT encoder block all-CUDA (TF32) against ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import (model, onnxruntime_outputs, reference, relative_error_on_cuda, run_on, special_tensor,
                        torchvision_attention)

from hetpart import importer
from hetpart.importer import constant_take as ct

X = (3, 4, 6)


def _special_input(shape=X, seed: int = 0) -> np.ndarray:
    return special_tensor(shape, seed)


def _gather(index: np.ndarray, axis: int, then: str) -> tuple:
    """``y = then(Gather(x, index, axis))`` (``then``: "none", "reshape" (flatten) or "transpose"
    (reverse the axes)); returns (model, output shape)."""
    out = list(np.take(np.zeros(X), np.asarray(index) % X[axis], axis=axis).shape)
    inits = {"i": index}
    nodes = [helper.make_node("Gather", ["x", "i"], ["g" if then != "none" else "y"], axis=axis)]
    if then == "reshape":
        inits["shape"] = np.array([-1], np.int64)
        nodes.append(helper.make_node("Reshape", ["g", "shape"], ["y"]))
        out = [int(np.prod(out))]
    elif then == "transpose":
        nodes.append(helper.make_node("Transpose", ["g"], ["y"], perm=list(range(len(out)))[::-1]))
        out = out[::-1]
    return model(nodes, [("x", X, np.float32)], [("y", out, np.float32)], inits), out


def _kernel_ops(m) -> list[tuple[str, ...]]:
    return [k.ops for k in importer.load(m).kernels.values()]


CASES = [(np.array(k, np.int64), axis) for axis, ks in ((0, (0, 2, -1, -3)), (1, (1, -2)), (2, (5, -1)), (-1, (3, -6)))
         for k in ks]
CASES += [(np.array([1], np.int64), 0), (np.array([-1], np.int64), 1), (np.array([[2]], np.int64), 2),
          (np.array(1, np.int32), 1)]


@pytest.mark.parametrize("then", ["none", "reshape", "transpose"])
@pytest.mark.parametrize("index,axis", CASES, ids=lambda v: str(np.asarray(v).tolist()))
def test_matches_reference_and_onnxruntime_bit_for_bit(index, axis, then):
    m, _ = _gather(index, axis, then)
    assert not any("take" in ops for ops in _kernel_ops(m)), "the take became a slice"
    x = _special_input()
    got = run_on(m, "cpu", {"x": x})["y"]
    for want in (reference(m, {"x": x})["y"], onnxruntime_outputs(m, {"x": x})[0]):
        assert got.shape == want.shape and got.dtype == want.dtype
        # a slice copies bits: NaN, ±Inf and the sign of zero come through as the reference's
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_slice_fuses_into_the_reshape_after_it(monkeypatch):
    m, _ = _gather(np.array(-1, np.int64), 1, "transpose")
    assert _kernel_ops(m) == [("strided_slice", "squeeze", "transpose")]
    monkeypatch.setattr(ct, "SLICE_CONSTANT_TAKES", False)
    assert _kernel_ops(m) == [("take",), ("transpose",)]


# --- torchvision's MultiheadAttention (packed in-projection), as ViT exports it -------------------
L, B, E, H = 17, 1, 64, 4


def _torchvision_attention(indices=(0, 1, 2), block: bool = False):
    return torchvision_attention(L, E, H, indices, block=block)


@pytest.mark.parametrize("indices,block", [((0, 1, 2), False), ((-3, -2, -1), False), ((0, 1, 2), True)])
def test_attention_split_matches_onnxruntime(indices, block):
    """The attention alone (negative indices too), and a whole ViT encoder block."""
    m = _torchvision_attention(indices, block)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, L, E)).astype(np.float32)
    x.flat[::5] = 0.0  # zeros, and negatives from the normal draw
    got = run_on(m, "cpu", {"x": x})["y"]
    np.testing.assert_allclose(got, onnxruntime_outputs(m, {"x": x})[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, reference(m, {"x": x})["y"], rtol=1e-4, atol=1e-4)


def test_attention_split_leaves_no_take_and_three_kernels_fewer(monkeypatch):
    from hetpart.importer import shared_layout

    # this pass alone: shared_layout then also copies the re-layout the slices read (one kernel fewer again)
    monkeypatch.setattr(shared_layout, "DUPLICATE_SHARED_LAYOUT", False)
    m = _torchvision_attention()
    after = _kernel_ops(m)
    monkeypatch.setattr(ct, "SLICE_CONSTANT_TAKES", False)
    before = _kernel_ops(m)
    assert sum(ops == ("take",) for ops in before) == 3  # q, k, v: each a lone opaque kernel
    assert not any("take" in ops for ops in after)
    assert len(after) == len(before) - 3
    # each slice fused into the head reshape/transpose that reads it
    assert sum("strided_slice" in ops and "transpose" in ops for ops in after) == 3


@pytest.mark.cuda
@pytest.mark.parametrize("index,axis", [CASES[1], CASES[5], CASES[-3]], ids=lambda v: str(np.asarray(v).tolist()))
def test_slices_on_the_gpu_bit_for_bit(index, axis):
    m, _ = _gather(index, axis, "transpose")
    x = _special_input()
    got = run_on(m, "cuda", {"x": x}, simulate=False)["y"]
    np.testing.assert_array_equal(got.view(np.int32), onnxruntime_outputs(m, {"x": x})[0].view(np.int32))


@pytest.mark.cuda
def test_vit_block_on_the_gpu_matches_onnxruntime():
    m = _torchvision_attention(block=True)
    x = np.random.default_rng(2).standard_normal((B, L, E)).astype(np.float32)
    x.flat[::7] = 0.0
    assert relative_error_on_cuda(m, {"x": x}) <= 1e-2  # TF32 contractions


# --- left alone ---------------------------------------------------------------------------------
def _relax_of(m):
    from hetpart.importer.index_guard import guard_indices
    from hetpart.importer.onnx_source import read_model
    from hetpart.importer.relax_import import to_relax

    return guard_indices(to_relax(read_model(m, None)))[0]


@pytest.mark.parametrize("k", [6, -7])
def test_an_index_out_of_range_keeps_index_guards_clip(k):
    m, _ = _gather(np.array(k, np.int64), 2, "none")
    mod = _relax_of(m)
    assert ct.slice_constant_takes(mod) is mod
    assert 'mode="clip"' in mod.script()
    assert _kernel_ops(m) == [("take",)]


def test_indices_of_several_elements_stay_a_take():
    m, _ = _gather(np.array([0, 2], np.int64), 0, "none")
    mod = _relax_of(m)
    assert ct.slice_constant_takes(mod) is mod


def test_a_take_of_a_shape_and_a_symbolic_axis_stay():
    """The frontend's ``take(shape_to_tensor(shape_of(x)), 0)`` (shape arithmetic) is not
    rewritten; neither is a take along an axis of symbolic extent."""
    from tvm import relax, tirx

    n = tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([n, 4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            dims = bb.emit(relax.op.shape_to_tensor(bb.emit(relax.op.shape_of(x))))
            first = bb.emit(relax.op.take(dims, relax.const(0, "int64"), axis=0, mode="wrap"))
            row = bb.emit(relax.op.take(x, relax.const(0, "int64"), axis=0))
            col = bb.emit(relax.op.take(x, relax.const(1, "int64"), axis=1))
            out = bb.emit_output(relax.Tuple([first, row, col]))
        bb.emit_func_output(out)
    script = ct.slice_constant_takes(bb.get()).script()
    assert script.count("R.take(") == 2 and script.count("R.strided_slice(") == 1  # only the column


def test_off_leaves_the_import_unchanged(monkeypatch):
    monkeypatch.setattr(ct, "SLICE_CONSTANT_TAKES", False)
    mod = _relax_of(_torchvision_attention())
    assert ct.slice_constant_takes(mod) is mod
    assert "strided_slice" not in importer.load(_torchvision_attention()).module.script()
