"""Strided 1x1 convolutions through a subsampled copy of the image (issue 18: ResNet-50's
downsamples, 1.1-1.6x ONNX Runtime's time on the output-channel tile that broadcast a
stride-2 image scalar per step): ``cpu_conv2d.subsampled_1x1`` reindexes the strided read
into a copy of a quarter of the image, then the matmul rule's tiles run on it
(``cpu_matmul.schedule_contraction``) -- the copy laid out as the image where a plane tile
follows (``cpu_matmul.plane_tiled``), channels innermost for the output-channel tile.

Against ONNX Runtime (inputs with negatives and zeros; bias, ReLU, residual-add or no
epilogue; rtol 1e-5, atol 1e-6 of the largest output) for strides 2 and 3, a stride along
one dim only, a padded one, batch 1 to 3; then the schedule: the multiply-accumulate reads
the copy with bare iterators (before: ``x[n, k, oh*2, ow*2]``), the copy's layout, its
parallel loop on a 16-core target; and the convs it must leave alone keep their TIR.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from onnx import helper

from cpu_tile_cases import conv, matches_onnxruntime, scheduled, update_chains
from onnx_cases import model

from hetpart import kernels, load
from hetpart.kernels import weight_prepack
from hetpart.kernels.rules import cpu_conv2d
from hetpart.targets import host_triple


def _strided(ic, oc, hw, strides, batch=1, pads=(0, 0, 0, 0), epilogue="relu"):
    """1x1 Conv (+ bias) with ``strides`` (and ``pads``) on ``[batch, ic, hw, hw]``, then
    ReLU or nothing."""
    rng = np.random.default_rng(ic + oc + hw)
    w = (rng.standard_normal((oc, ic, 1, 1)) / np.sqrt(ic)).astype(np.float32)
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    oh = (hw + pads[0] + pads[2] - 1) // strides[0] + 1
    ow = (hw + pads[1] + pads[3] - 1) // strides[1] + 1
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1], strides=list(strides),
                            pads=list(pads))
    tail = helper.make_node("Relu" if epilogue == "relu" else "Identity", ["c"], ["y"])
    return model([conv, tail], [("x", (batch, ic, hw, hw), np.float32)], [("y", [batch, oc, oh, ow], np.float32)],
                 {"w": w, "b": b}, opset=13)


CASES = {
    "1x1 s2 256->32, 14x14 -> 7x7 (output-channel tile)": lambda: conv(256, 32, 14, stride=2, epilogue="none"),
    "1x1 s2 256->32, 28x28 -> 14x14 + relu, batch 2 (padded plane)":
        lambda: conv(256, 32, 28, stride=2, batch=2),
    "1x1 s2 64->48, 56x56 -> 28x28 + add, batch 3": lambda: conv(64, 48, 56, stride=2, epilogue="add", batch=3),
    "1x1 s3 64->32, 21x21 -> 7x7 + relu": lambda: _strided(64, 32, 21, (3, 3)),
    "1x1 s(2,1) 64->32, 16x16 -> 8x16 + relu, batch 2": lambda: _strided(64, 32, 16, (2, 1), batch=2),
    "1x1 s2 pad 1 64->32, 14x14 -> 8x8 + relu": lambda: _strided(64, 32, 14, (2, 2), pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_subsampled_1x1_matches_onnxruntime(case):
    matches_onnxruntime(CASES[case](), case)


def _strided_index(e) -> bool:
    return isinstance(e, tvm.tirx.Mul) and isinstance(e.b, tvm.tirx.IntImm) and int(e.b.value) > 1


def _copy_shape(func) -> list[int] | None:
    """The shape of the subsampled copy (``x_reindex``) the function allocates, or None."""
    script = func.script()
    for line in script.splitlines():
        if line.strip().startswith("x_reindex = T.sblock_alloc_buffer("):
            return [int(d) for d in line.split("((")[1].split("))")[0].replace("T.int64(", "").replace(")", "")
                    .split(", ")]
    return None


def _update_loads(func) -> list:
    ((_, realize),) = update_chains(func)
    loads = []
    tvm_ffi.structural_walk(realize.block.body, (tvm.ir.TensorLoad, loads.append))
    return loads


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_multiply_accumulate_reads_the_copy_with_unit_stride(mcpu):
    """No load of the tile's update is strided (before: ``x[n, k, oh*2, ow*2]``, a new cache
    line per broadcast scalar)."""
    for m in (conv(256, 32, 14, stride=2, epilogue="none"), conv(256, 32, 28, stride=2, batch=2)):
        func = scheduled(m, mcpu)
        loads = _update_loads(func)
        assert loads and not any(_strided_index(i) for ld in loads for i in ld.indices), func.script()


def test_copy_laid_out_for_the_tile_that_reads_it():
    """Channels innermost (``[n, oh, ow, ic]``, batch 1 squeezed) for the output-channel tile,
    whose step reads one scalar per output column; the image's own layout for the padded
    plane tile (a batch of 14x14 outputs), whose step reads vectors along the plane."""
    assert _copy_shape(scheduled(conv(256, 32, 14, stride=2, epilogue="none"), "haswell")) == [7, 7, 256]
    plane = scheduled(conv(256, 32, 28, stride=2, batch=2), "haswell")
    assert _copy_shape(plane) == [2, 256, 14, 14]
    assert "reindex_pad" in plane.script(), "then padded to whole vectors (cpu_matmul._ragged_plane)"


def test_copy_parallel_on_16_cores():
    """The copy's outer loop is parallel from the padded-operand bound of the target's cores
    (``register_tile.gate_parallel_min``: 32 Ki elements at 16), not left serial below the
    injective schedule's 256 Ki: a 512x14x14 copy (100 Ki) at batch 1."""
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "skylake-avx512",
                                "num-cores": 16})
    mod = kernels.schedule(weight_prepack.mark_weights(load(conv(512, 32, 28, stride=2, epilogue="none")).module),
                           target)
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)
               and str(f.attrs.get(kernels.RULE_ATTR, "")) == "CpuConv2d"]
    lines = func.script().splitlines()
    copy = next(i for i, ln in enumerate(lines) if 'T.sblock("x_reindex' in ln)
    assert any("T.parallel" in ln for ln in lines[max(0, copy - 4):copy]), func.script()


@pytest.mark.parametrize("m", [
    lambda: conv(64, 32, 14, k=3, stride=2, pad=1),
    lambda: conv(256, 32, 14, epilogue="none"),
    lambda: _strided(64, 32, 14, (1, 1)),
], ids=["3x3 stride 2: a window", "1x1 stride 1", "1x1 strides (1, 1)"])
def test_other_convs_unchanged(m, monkeypatch):
    model_ = m()
    after = scheduled(model_, "haswell").script()
    monkeypatch.setattr(cpu_conv2d, "SUBSAMPLE_STRIDED_1X1", False)
    assert scheduled(model_, "haswell").script() == after

