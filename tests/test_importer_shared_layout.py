"""``hetpart.importer.shared_layout``: a layout chain read by several layout ops, copied per reader.

Small graphs (a transpose/reshape chain, or the 4-op chain torchvision writes, read by 2 or 3
slices, each slice read by a reshape or transpose or returned) built for the CPU give
onnx.reference's and ONNX Runtime's values bit for bit on inputs with negatives, both zeros,
±Inf and NaN, and the same bits as with the switch off; the shared chain is no kernel of its
own any more.  torchvision's MultiheadAttention (the ViT encoder block) loses the kernel that
re-lays the packed QKV projection out for its three slices: one kernel fewer, outputs
bit-identical to the switch off.  Left alone: a chain also read by compute (an add), slices
concatenated again (Swin's roll: one kernel already), one of
constants (FoldConstant would fold each copy: weights duplicated), one read by more than
``MAX_COPIES`` readers; off, the import is unchanged.  With a GPU (``cuda`` mark): the ViT block
all-CUDA bit-identical to the switch off.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_cases import model, onnxruntime_outputs, reference, run_on, special_tensor, torchvision_attention

from hetpart import importer
from hetpart.importer import shared_layout as sl

X = (4, 6, 5)


@pytest.fixture(autouse=True)
def _switched_on(monkeypatch):
    """The pass on (its switch is off by default until the device A/B decides); tests turn it off."""
    monkeypatch.setattr(sl, "DUPLICATE_SHARED_LAYOUT", True)


def _special_input(shape=X, seed: int = 0) -> np.ndarray:
    return special_tensor(shape, seed)


def _shared(chain: str, parts: int, then: str, source: str = "x") -> tuple:
    """``y_i = then(Slice(chain(x), part i of ``parts`` along the last axis))``.  ``chain``:
    "transpose_reshape" (x -> [5, 24]) or "torchvision" (reshape [5, 1, 2, 12] -> unsqueeze 0 ->
    transpose -> squeeze, as the attention export's packed projection, -> [..., 12] split); ``then``:
    "none", "transpose" (reverse the axes) or "reshape" (flatten).  Returns (model, output names)."""
    n = helper.make_node
    inits = {}
    if chain == "transpose_reshape":
        inits["s"] = np.array([5, 24], np.int64)
        nodes = [n("Transpose", [source], ["t"], perm=[2, 0, 1]), n("Reshape", ["t", "s"], ["c"])]
        full, axis = 24, 1
    else:
        inits.update(s=np.array([5, 1, 2, 12], np.int64), ax0=np.array([0], np.int64),
                     axm2=np.array([-2], np.int64))
        nodes = [n("Transpose", [source], ["t"], perm=[2, 0, 1]), n("Reshape", ["t", "s"], ["r"]),
                 n("Unsqueeze", ["r", "ax0"], ["u"]), n("Transpose", ["u"], ["ut"], perm=[3, 1, 2, 0, 4]),
                 n("Squeeze", ["ut", "axm2"], ["c"])]  # [2, 5, 1, 12]
        full, axis = 12, 3
    shape_c = [5, 24] if chain == "transpose_reshape" else [2, 5, 1, 12]
    step = full // parts
    outs = []
    for i in range(parts):
        inits.update({f"b{i}": np.array([i * step], np.int64), f"e{i}": np.array([(i + 1) * step], np.int64),
                      f"a{i}": np.array([axis], np.int64)})
        sliced = list(shape_c)
        sliced[axis] = step
        name = f"y{i}"
        nodes.append(n("Slice", ["c", f"b{i}", f"e{i}", f"a{i}"], [f"p{i}" if then != "none" else name]))
        if then == "transpose":
            nodes.append(n("Transpose", [f"p{i}"], [name], perm=list(range(len(sliced)))[::-1]))
            sliced = sliced[::-1]
        elif then == "reshape":
            inits["flat"] = np.array([-1], np.int64)
            nodes.append(n("Reshape", [f"p{i}", "flat"], [name]))
            sliced = [int(np.prod(sliced))]
        outs.append((name, sliced, np.float32))
    return model(nodes, [("x", X, np.float32)], outs, inits), [o[0] for o in outs]


def _kernel_ops(m) -> list[tuple[str, ...]]:
    return [k.ops for k in importer.load(m).kernels.values()]


def _readers(g) -> dict:
    """Kernel id -> how many kernels read its outputs."""
    count = {k.id: set() for k in g.nodes}
    for t in g.tensors.values():
        if t.producer is not None:
            count[t.producer] |= set(t.consumers)
    return {k: len(v) for k, v in count.items()}


@pytest.mark.parametrize("then", ["none", "transpose", "reshape"])
@pytest.mark.parametrize("chain,parts", [("transpose_reshape", 2), ("transpose_reshape", 3), ("torchvision", 2),
                                         ("torchvision", 3)])
def test_matches_reference_onnxruntime_and_the_switch_off_bit_for_bit(chain, parts, then, monkeypatch):
    m, names = _shared(chain, parts, then)
    ops = _kernel_ops(m)
    assert len(ops) == parts, ops  # the chain fused into each slice's kernel
    x = _special_input()
    got = run_on(m, "cpu", {"x": x})
    monkeypatch.setattr(sl, "DUPLICATE_SHARED_LAYOUT", False)
    assert len(_kernel_ops(m)) == parts + 1  # off: the chain a kernel of its own
    off = run_on(m, "cpu", {"x": x})
    ref, ort = reference(m, {"x": x}), onnxruntime_outputs(m, {"x": x})
    for i, name in enumerate(names):
        for want in (off[name], ref[name], ort[i]):
            assert got[name].shape == want.shape and got[name].dtype == want.dtype
            # copies move bits: NaN, ±Inf and the sign of zero come through as the reference's
            np.testing.assert_array_equal(got[name].view(np.int32), want.view(np.int32))


# --- torchvision's MultiheadAttention (packed in-projection), as ViT exports it -------------------
L, E, H = 17, 64, 4


def test_vit_block_loses_the_shared_relayout_kernel(monkeypatch):
    """With the switch off this fails: the packed projection's re-layout (reshape, expand_dims,
    transpose, squeeze) is a kernel of its own, read by the q, k and v slice kernels."""
    m = torchvision_attention(L, E, H, block=True)
    g = importer.load(m)
    on, readers = [k.ops for k in g.kernels.values()], _readers(g)
    layout = {"reshape", "expand_dims", "transpose", "squeeze", "strided_slice"}
    shared = [k.id for k in g.nodes if set(k.ops) <= layout and readers[k.id] > 1]
    assert not shared, shared  # no standalone layout kernel with several readers
    monkeypatch.setattr(sl, "DUPLICATE_SHARED_LAYOUT", False)
    off = _kernel_ops(m)
    assert len(on) == len(off) - 1
    assert ("reshape", "expand_dims", "transpose", "squeeze") in off
    assert sum(ops[:4] == ("reshape", "expand_dims", "transpose", "squeeze") and "strided_slice" in ops
               for ops in on) == 3


def test_vit_block_bit_identical_to_the_switch_off(monkeypatch):
    m = torchvision_attention(L, E, H, block=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, L, E)).astype(np.float32)
    x.flat[::5] = 0.0
    x.flat[1::11] = -0.0
    got = run_on(m, "cpu", {"x": x})["y"]
    np.testing.assert_allclose(got, onnxruntime_outputs(m, {"x": x})[0], rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(sl, "DUPLICATE_SHARED_LAYOUT", False)
    np.testing.assert_array_equal(got.view(np.int32), run_on(m, "cpu", {"x": x})["y"].view(np.int32))


@pytest.mark.cuda
def test_vit_block_on_the_gpu_bit_identical_to_the_switch_off(monkeypatch):
    """All-CUDA: the copies fused into the slice kernels move the same bits; the rest is the same code."""
    m = torchvision_attention(L, E, H, block=True)
    x = np.random.default_rng(2).standard_normal((1, L, E)).astype(np.float32)
    x.flat[::7] = 0.0
    got = run_on(m, "cuda", {"x": x}, simulate=False)["y"]
    monkeypatch.setattr(sl, "DUPLICATE_SHARED_LAYOUT", False)
    np.testing.assert_array_equal(got.view(np.int32), run_on(m, "cuda", {"x": x}, simulate=False)["y"].view(np.int32))


# --- left alone ---------------------------------------------------------------------------------
def _relax_of(m):
    from hetpart.importer.constant_take import slice_constant_takes
    from hetpart.importer.index_guard import guard_indices
    from hetpart.importer.onnx_source import read_model
    from hetpart.importer.relax_import import to_relax

    return slice_constant_takes(guard_indices(to_relax(read_model(m, None)))[0])


def test_a_chain_also_read_by_compute_stays_shared():
    m, _ = _shared("transpose_reshape", 2, "none")
    m.graph.node.append(helper.make_node("Add", ["c", "c"], ["z"]))
    m.graph.output.append(helper.make_tensor_value_info("z", 1, [5, 24]))
    mod = _relax_of(m)
    assert sl.duplicate_shared_layout(mod) is mod


def test_a_chain_of_constants_stays_shared():
    """Copies of a constant's chain would each fold to a constant: the weights duplicated."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([5, 8], "float32"))
    w = relax.const(np.arange(np.prod(X), dtype=np.float32).reshape(X))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.reshape(bb.emit(relax.op.permute_dims(w, [2, 0, 1])), [5, 24]))
            parts = [bb.emit(relax.op.add(x, bb.emit(relax.op.strided_slice(c, [1], [8 * i], [8 * i + 8]))))
                     for i in range(3)]
            out = bb.emit_output(relax.Tuple(parts))
        bb.emit_func_output(out)
    mod = bb.get()
    assert sl.duplicate_shared_layout(mod) is mod
    # the same chain of the parameter is copied
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.permute_dims(x, [1, 0]))
            parts = [bb.emit(relax.op.add(x, bb.emit(relax.op.permute_dims(
                bb.emit(relax.op.strided_slice(c, [0], [0], [8])), [1, 0])))) for i in range(3)]
            out = bb.emit_output(relax.Tuple(parts))
        bb.emit_func_output(out)
    script = sl.duplicate_shared_layout(bb.get()).script()
    assert script.count("R.permute_dims(x,") == 3


def test_slices_concatenated_again_stay_shared():
    """Swin's roll: two slices of one re-layout concatenated fuse with it into one kernel already."""
    m, _ = _shared("transpose_reshape", 2, "none")
    del m.graph.output[:]
    m.graph.node.append(helper.make_node("Concat", ["y1", "y0"], ["z"], axis=1))
    m.graph.output.append(helper.make_tensor_value_info("z", 1, [5, 24]))
    mod = _relax_of(m)
    assert sl.duplicate_shared_layout(mod) is mod
    assert len(_kernel_ops(m)) == 1


def test_more_readers_than_max_copies_stay_shared():
    m, _ = _shared("transpose_reshape", sl.MAX_COPIES + 2, "none")
    mod = _relax_of(m)
    assert sl.duplicate_shared_layout(mod) is mod
    assert len(_kernel_ops(m)) == sl.MAX_COPIES + 3


def test_off_leaves_the_import_unchanged(monkeypatch):
    m = torchvision_attention(L, E, H, block=True)
    mod = _relax_of(m)
    assert sl.duplicate_shared_layout(mod) is not mod
    monkeypatch.setattr(sl, "DUPLICATE_SHARED_LAYOUT", False)
    assert sl.duplicate_shared_layout(mod) is mod
