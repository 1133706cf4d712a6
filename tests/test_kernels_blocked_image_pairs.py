"""kernels.rules.cpu_blocked_conv.BATCH_IMAGE_PAIRS (off by default): on a 32-register CPU a batched
channel-blocked conv on a 7-wide image whose row tile is the whole row (2 blocks x 7 columns) holds
a pair of images in its register tile (2 x 2 x 7, 28 accumulators).  The build with the switch on
matches the build with it off bit for bit and ONNX Runtime on inputs with negatives and zeros (a
stride-2 1x1, a padded 3x3 + ReLU and a 1x1 + residual, each on 7x7 outputs); the tiles take the
pair with it and not without; odd batches, batch 1, 16-register targets and short reductions keep
one image a tile; built for sapphirerapids the paired tile's FMA loop keeps its accumulators in
registers.  IMAGE_PAIRS_STRIDES restricts the pair to some strides: at (1,) resnet50's stride-1
7x7-stage kernels take it and the stride-2 ones do not, bit-identical to the unpaired build on inputs
with +-Inf and NaN."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetpart.kernels.rules import cpu_blocked_conv as cb
from onnx_cases import update_unrolls

SWITCH = "BATCH_IMAGE_PAIRS"


def _model(batch: int):
    """x[b, 128, 14, 14] -> 1x1 s2 128->64 (+ bias) = s -> 3x3 64->128 pad 1 + ReLU -> 1x1 128->64
    (+ bias) + s -> y[b, 64, 7, 7]: resnet50's 7x7-stage kinds (strided 1x1, padded 3x3, 1x1 with
    a residual) at a small width."""
    rng = np.random.default_rng(5)
    shapes = {"wa": (64, 128, 1, 1), "wb": (128, 64, 3, 3), "wc": (64, 128, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[1] * s[2] * s[3])).astype(np.float32), n)
             for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(s[0]).astype(np.float32), "b" + n) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "bwa"], ["s"], strides=[2, 2]),
        helper.make_node("Conv", ["s", "wb", "bwb"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "wc", "bwc"], ["p"]),
        helper.make_node("Add", ["p", "s"], ["y"]),
    ]
    g = helper.make_graph(nodes, "narrow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 128, 14, 14])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 64, 7, 7])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _input(batch: int) -> np.ndarray:
    x = np.random.default_rng(batch).standard_normal((batch, 128, 14, 14)).astype(np.float32)
    x.reshape(-1)[::5] = 0.0  # zeros beside the negatives
    return x


_GRAPHS: dict[bytes, object] = {}


def _blocked(model):
    """``load(model, conv_block=16)``, once per model: the switches this file turns are read when
    scheduling, not when importing, so every test of a model schedules and builds the same import."""
    from hetpart import load

    key = model.SerializeToString()
    if key not in _GRAPHS:
        _GRAPHS[key] = load(model, conv_block=16)
    return _GRAPHS[key]


def _schedule(model, target, on: bool, monkeypatch) -> dict[str, list[int]]:
    """Each blocked conv's unrolled update extents, the switch ``on`` or off."""
    from tvm import tirx

    from hetpart import kernels

    monkeypatch.setattr(cb, SWITCH, on)
    scheduled = kernels.schedule(_blocked(model).module, target)
    return {gv.name_hint: update_unrolls(f) for gv, f in scheduled.functions_items()
            if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint}


def _run(model, x, target, on: bool, monkeypatch) -> np.ndarray:
    import tvm
    from tvm import relax

    from hetpart import kernels

    monkeypatch.setattr(cb, SWITCH, on)
    vm = relax.VirtualMachine(kernels.build(_blocked(model).module, target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _avx512(cores: int = 2):
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": cores})


@pytest.mark.parametrize("batch", [2, 4])
def test_image_pairs_match_and_take_the_pair(batch, monkeypatch):
    import onnxruntime as ort

    from hetpart.targets import cpu_tvm_target

    model = _model(batch)
    off, on = _schedule(model, _avx512(), False, monkeypatch), _schedule(model, _avx512(), True, monkeypatch)
    assert sorted(off.values()) == [[2, 7]] * 3  # one image a tile: 2 blocks x 7 columns
    assert sorted(on.values()) == [[2, 2, 7]] * 3  # the pair: 2 images x 2 blocks x 7 columns
    x = _input(batch)
    host = cpu_tvm_target()
    outs = [_run(model, x, host, flag, monkeypatch) for flag in (False, True)]
    np.testing.assert_array_equal(outs[1], outs[0])  # the same sums in the same order
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want < 0).any() and (want > 0).any()
    np.testing.assert_allclose(outs[1], want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_image_pairs_on_a_16_core_target_under_the_group_split(monkeypatch):
    """On 16 cores (the Xeon's target) the pair also applies where BATCH_GROUP_SPLIT splits the block
    groups; the build (run here on this host's threads) equals the switch-off build."""
    model = _model(4)
    on = _schedule(model, _avx512(16), True, monkeypatch)
    assert sorted(on.values()) == [[2, 2, 7]] * 3
    x = _input(4)
    outs = [_run(model, x, _avx512(16), flag, monkeypatch) for flag in (False, True)] if _host_has_avx512() else []
    if outs:
        np.testing.assert_array_equal(outs[1], outs[0])


def _host_has_avx512() -> bool:
    try:
        return "avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        return False


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_1_and_odd_batches_keep_one_image_a_tile(batch, monkeypatch):
    model = _model(batch)
    assert _schedule(model, _avx512(), True, monkeypatch) == _schedule(model, _avx512(), False, monkeypatch)


def test_16_registers_keep_one_image_a_tile(monkeypatch):
    import tvm

    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    model = _model(2)
    assert _schedule(model, avx2, True, monkeypatch) == _schedule(model, avx2, False, monkeypatch)


def test_the_paired_tile_keeps_its_accumulators_in_registers(monkeypatch):
    """Built for sapphirerapids: the paired 3x3's FMA blocks hold its 28 FMAs a step and no vector
    move to the stack."""
    import tvm

    from asm_cases import fma_blocks_stack_moves, llvm_asm

    from hetpart import kernels

    monkeypatch.setattr(cb, SWITCH, True)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2})
    fmas, spills = fma_blocks_stack_moves(llvm_asm(kernels.build(_blocked(_model(2)).module, target)))
    assert fmas >= 28 and spills == 0, (fmas, spills)


STRIDES = "IMAGE_PAIRS_STRIDES"


def _r50_stage(batch: int):
    """resnet50's 7x7-stage kernels at their channel counts: x[b, 1024, 14, 14] -> 1x1 1024->512 + ReLU
    (14 wide: never paired) -> 3x3 s2 512->512 pad 1 + ReLU -> 3x3 s1 512->512 pad 1 + ReLU -> 1x1
    512->2048, + the downsample 1x1 s2 1024->2048 of x -> y[b, 2048, 7, 7] (no ReLU: negatives kept)."""
    rng = np.random.default_rng(7)
    shapes = {"w1": (512, 1024, 1, 1), "w2": (512, 512, 3, 3), "w3": (512, 512, 3, 3), "w4": (2048, 512, 1, 1),
              "wd": (2048, 1024, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[1] * s[2] * s[3])).astype(np.float32), n)
             for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(s[0]).astype(np.float32), "b" + n) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "bw1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "bw2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "bw3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4", "bw4"], ["c4"]),
        helper.make_node("Conv", ["x", "wd", "bwd"], ["d"], strides=[2, 2]),
        helper.make_node("Add", ["c4", "d"], ["y"]),
    ]
    g = helper.make_graph(nodes, "r50_7x7",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1024, 14, 14])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2048, 7, 7])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _pairs_by_stride(model, target, strides, monkeypatch) -> list[tuple]:
    """``(conv_strides, image_pairs_of)`` of each 7-wide blocked conv of ``model`` on ``target``,
    BATCH_IMAGE_PAIRS on and IMAGE_PAIRS_STRIDES ``strides``, sorted."""
    from tvm import tirx

    from hetpart.kernels.blocked_conv_match import conv_strides

    monkeypatch.setattr(cb, SWITCH, True)
    monkeypatch.setattr(cb, STRIDES, strides)
    out = []
    for gv, f in _blocked(model).module.functions_items():
        if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint:
            _, mac, conv = cb._read(f)
            if mac.extents[conv.ow] == 7:
                out.append((conv_strides(mac, conv), cb.image_pairs_of(f, target)))
    return sorted(out)


@pytest.mark.parametrize("cores", [2, 16])
def test_strides_restrict_the_pairs_to_stride_1(cores, monkeypatch):
    """IMAGE_PAIRS_STRIDES (1,): resnet50's stride-1 7x7-stage kernels (3x3 512, 1x1 512->2048) take the
    pair, its stride-2 ones (3x3 s2 512 from 14x14, 1x1 s2 1024->2048) keep one image a tile; the
    default (1, 2) pairs all four, as BATCH_IMAGE_PAIRS alone."""
    model = _r50_stage(8)
    assert cb.IMAGE_PAIRS_STRIDES == (1, 2)
    assert _pairs_by_stride(model, _avx512(cores), (1, 2), monkeypatch) == [((1, 1), 2)] * 2 + [((2, 2), 2)] * 2
    assert _pairs_by_stride(model, _avx512(cores), (1,), monkeypatch) == [((1, 1), 2)] * 2 + [((2, 2), 1)] * 2
    assert _pairs_by_stride(model, _avx512(cores), (2,), monkeypatch) == [((1, 1), 1)] * 2 + [((2, 2), 2)] * 2


def test_default_strides_schedule_as_the_switch_alone(monkeypatch):
    """With BATCH_IMAGE_PAIRS on, IMAGE_PAIRS_STRIDES at (1, 2) schedules as a tuple holding every stride."""
    model = _model(4)
    monkeypatch.setattr(cb, STRIDES, (1, 2))
    default = _schedule(model, _avx512(), True, monkeypatch)
    monkeypatch.setattr(cb, STRIDES, tuple(range(1, 9)))
    assert _schedule(model, _avx512(), True, monkeypatch) == default
    monkeypatch.setattr(cb, STRIDES, (1,))  # the 7x7-stage model's stride-2 1x1 keeps one image a tile
    assert sorted(_schedule(model, _avx512(), True, monkeypatch).values()) == [[2, 2, 7]] * 2 + [[2, 7]]


def test_stride_1_pairs_match_the_unpaired_build_bit_for_bit(monkeypatch):
    """The resnet50-shaped stage built with BATCH_IMAGE_PAIRS on and IMAGE_PAIRS_STRIDES (1,) (the
    host's threads; a 32-register target pairs) equals the switch-off build bit for bit on an input of
    negatives, zeros, +-Inf and NaN (each special value in one image of a pair); and equals ORT where
    both are finite."""
    import onnxruntime as ort

    from hetpart.targets import cpu_tvm_target

    batch = 2
    model = _r50_stage(batch)
    x = np.random.default_rng(11).standard_normal((batch, 1024, 14, 14)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    x[0, 3, 0, 0], x[1, 5, 13, 13], x[1, 9, 6, 6] = np.inf, -np.inf, np.nan
    host = cpu_tvm_target()
    if _host_has_avx512():  # the host build pairs its stride-1 kernels only
        assert _pairs_by_stride(model, host, (1,), monkeypatch) == [((1, 1), 2)] * 2 + [((2, 2), 1)] * 2
    off = _run(model, x, host, False, monkeypatch)
    monkeypatch.setattr(cb, STRIDES, (1,))
    on = _run(model, x, host, True, monkeypatch)
    np.testing.assert_array_equal(on, off)  # NaN where NaN, the same bits elsewhere
    assert np.array_equal(on.view(np.uint32), off.view(np.uint32))
    finite = np.isfinite(off)
    assert not finite.all() and finite.mean() > 0.5 and (off[finite] < 0).any() and (off[finite] > 0).any()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    both = finite & np.isfinite(want)  # (ORT's Relu of a NaN may differ: compared where both are finite)
    assert both.mean() > 0.5
    np.testing.assert_allclose(on[both], want[both], rtol=1e-4, atol=1e-5 * float(np.abs(want[both]).max()))
