"""kernels.rules.cpu_blocked_conv: channel-blocked convolutions (NCHW8c data, OIHW8i8o
weights, ``topi.nn.conv2d_NCHWc``'s compute, imported through tools/nchwc_ab.py's
``nchwc_import``) get the tile of several output-channel blocks x output columns, and the
model matches ONNX Runtime: 1x1 and 3x3, stride 1 and 2, padded, ragged and exact column
tiles, 8 input channels into a 3x3 (one block: ``ic // 8`` folds to 0), a residual add in the
write-back, batch 1 and 2, inputs with negatives and zeros."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import nchwc_ab  # noqa: E402

from hetpart.kernels.analysis import CpuShape  # noqa: E402
from hetpart.kernels import blocked_conv_batch  # noqa: E402
from hetpart.kernels.rules import cpu_blocked_conv as cb  # noqa: E402
from blocked_conv_cases import four_conv_model  # noqa: E402
from onnx_cases import run_vm, update_unrolls  # noqa: E402
from tir_loops import loops_and_blocks  # noqa: E402


_IMPORTS: dict[bytes, object] = {}
_UNSCHEDULED: dict[tuple, object] = {}


def _load16(model):
    """``load(model, conv_block=16)``, once per model: the switches this file turns are
    ``cpu_blocked_conv``'s and ``cpu_injective``'s, read when scheduling, not when importing, so
    every test of a model schedules and builds the same import."""
    from hetpart import load

    key = model.SerializeToString()
    if key not in _IMPORTS:
        _IMPORTS[key] = load(model, conv_block=16)
    return _IMPORTS[key]


def _unscheduled(kind: str, module, target):
    """``module`` built without hetpart's schedules for ``target`` (``kind`` ``"compile"``:
    ``tvm.compile``; ``"legalized"``: ``relax.build`` after ``LegalizeOps``), once per import
    and target: no switch of this file reaches it, so the tests of a switch on and off share it."""
    import tvm
    from tvm import relax

    key = (kind, id(module), str(target))
    if key not in _UNSCHEDULED:
        _UNSCHEDULED[key] = (module, tvm.compile(module, target) if kind == "compile"
                             else relax.build(relax.transform.LegalizeOps()(module), target))
    return _UNSCHEDULED[key][1]


def _matches_compiled(module, target, x, mixed_signs: bool = False) -> None:
    """``module`` built by hetpart's schedules (``kernels.build``) gives ``tvm.compile``'s
    unscheduled answer on ``x`` (rtol 1e-5; atol 1e-5 of its largest magnitude); with
    ``mixed_signs`` that answer holds zeros and positives (the relu'd output has both)."""
    from hetpart import kernels

    got = run_vm(kernels.build(module, target), [x])
    want = run_vm(_unscheduled("compile", module, target), [x])
    if mixed_signs:
        assert (want == 0).any() and (want > 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def _matches_legalized(module, target, x) -> None:
    """``module`` built by hetpart's schedules gives the legalized, unscheduled build's answer
    (``relax.build`` after ``LegalizeOps``) on ``x`` (rtol 1e-5; atol 1e-5 of its largest magnitude)."""
    from hetpart import kernels

    got = run_vm(kernels.build(module, target), [x])
    ref = run_vm(_unscheduled("legalized", module, target), [x])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


@pytest.mark.parametrize("batch,hw", [(1, 14), (2, 7)])
def test_blocked_convs_take_the_tile_and_match_ort(batch, hw, monkeypatch):
    """At batch 2 the root blocks beside the tile take the parallel path of the injective
    schedule, as resnet50's do at batch 8 (there, the split ragged tile's renamed write-back
    was once scheduled too and the tile refused: the generic tile ran)."""
    import onnxruntime as ort
    from tvm import tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    if batch > 1:
        monkeypatch.setattr(cb, "PARALLEL_MIN_ELEMENTS", 1)
    model = four_conv_model(batch, hw)
    with nchwc_ab.nchwc_import(8):
        graph = load(model)
    target = cpu_tvm_target()
    scheduled = kernels.schedule(graph.module, target)
    convs = [(gv.name_hint, f) for gv, f in scheduled.functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint]
    assert len(convs) == 4
    for name, f in convs:
        plan = cb.plan_of(graph.module[name], target)
        assert plan is not None and plan.blocks == 2, name  # 16 channels: both blocks in one tile
        assert update_unrolls(f) == sorted([plan.blocks, plan.columns]), name  # the generic tile: rows only

    x = np.random.default_rng(1).standard_normal((batch, 8, hw, hw)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = run_vm(kernels.build(graph.module, target), [x])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want == 0).any() and (want > 0).any()  # the relu'd output has both
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


class _Mac:
    def __init__(self, extents):
        self.extents = extents


def _plan(out_channels: int, width: int, block: int, registers: int, lanes: int, window=(), ic_extent: int = 64):
    from tvm import tirx

    occ, ow, ocb, ic = (tirx.Var(n, "int64") for n in ("occ", "ow", "ocb", "ic"))
    mac = _Mac({occ: out_channels // block, ow: width, ocb: block, ic: ic_extent})
    conv = cb.BlockedConv(None, occ, None, ow, ocb, ic, block, window, 0)
    return cb.blocked_plan(mac, conv, CpuShape(registers * 16, registers, 1), lanes)


def test_plans_fit_the_registers():
    """AVX2 (16 registers, 8 lanes): 2 blocks x 4 columns on 56- and 28-wide images, 2 x 5
    (ragged) on 14, 2 x 4 (ragged) on 7; AVX-512 (32, 16 lanes, 16-channel blocks): 2 x 14 on
    56, 28 and 14 (one spare register: cpu_blocked_conv.FEWER_SPARE_WIDE), 2 x 7 on 7; every tile
    within the registers less the spare ones; a reduction under FEWER_SPARE_MIN_STEPS (64 input
    channels of a 1x1) keeps 3 spare: 2 x 8 on 56; 128 take 2 x 14."""
    got = {(w, r): _plan(512, w, 8 if r == 16 else 16, r, 8 if r == 16 else 16, ic_extent=256)
           for w in (56, 28, 14, 7) for r in (16, 32)}
    assert [(got[w, 16].blocks, got[w, 16].columns) for w in (56, 28, 14, 7)] == [(2, 4), (2, 4), (2, 5), (2, 4)]
    assert [(got[w, 32].blocks, got[w, 32].columns) for w in (56, 28, 14, 7)] == [(2, 14), (2, 14), (2, 14), (2, 7)]
    for (w, r), p in got.items():
        assert cb.pressure(p.blocks, p.vectors, p.columns) <= r - cb.spare_registers(CpuShape(r * 16, r, 1), 256)
    short = _plan(512, 56, 16, 32, 16, ic_extent=64)
    assert (short.blocks, short.columns) == (2, 8)
    assert _plan(512, 28, 16, 32, 16, ic_extent=128).columns == 14
    wide = _plan(64, 56, 16, 16, 8)  # a 16-channel block on AVX2: two vectors a block
    assert wide.vectors == 2 and wide.lanes == 8
    assert _plan(8, 56, 8, 16, 8).blocks == 1  # one block of output channels


def test_avx512_tiles_keep_three_spare_registers_with_the_switch_off(monkeypatch):
    """cpu_blocked_conv.FEWER_SPARE_WIDE off: AVX-512 tiles as before (2 x 8 on 56, 2 x 7 on 28
    and 14); AVX2's are the same either way."""
    monkeypatch.setattr(cb, "FEWER_SPARE_WIDE", False)
    assert [(_plan(512, w, 16, 32, 16, ic_extent=256).blocks, _plan(512, w, 16, 32, 16, ic_extent=256).columns)
            for w in (56, 28, 14)] == [(2, 8), (2, 7), (2, 7)]
    assert cb.spare_registers(CpuShape(512, 32, 1)) == cb.SPARE_REGISTERS
    monkeypatch.setattr(cb, "FEWER_SPARE_WIDE", True)
    assert cb.spare_registers(CpuShape(256, 16, 1)) == cb.SPARE_REGISTERS


def test_odd_block_counts_take_three_blocks_with_32_registers(monkeypatch):
    """cpu_blocked_conv.MAX_BLOCKS_WIDE: 9 output blocks (efficientnet's 144 channels in NCHW16c)
    tile 3 blocks at a time with AVX-512's 32 registers (2: one at a time), within the
    registers; 16 registers keep MAX_BLOCKS (no 3)."""
    wide = _plan(144, 56, 16, 32, 16)
    assert wide.blocks == 3 and cb.pressure(wide.blocks, wide.vectors, wide.columns) <= 32 - cb.spare_registers(
        CpuShape(512, 32, 1))
    assert _plan(72, 56, 8, 16, 8).blocks == 1  # 9 blocks of 8 on AVX2: 3 is over MAX_BLOCKS
    monkeypatch.setattr(cb, "MAX_BLOCKS_WIDE", 2)
    assert _plan(144, 56, 16, 32, 16).blocks == 1


def _model16(hw: int = 14):
    """x[1, 32, hw, hw] -> 3x3 pad 1 32->32 + relu -> 1x1 32->32 + add(3x3 out) + relu: two
    output-channel blocks of 16 (``load(model, conv_block=16)``)."""
    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in (("w1", (32, 32, 3, 3)), ("w2", (32, 32, 1, 1)))]
    inits += [numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), f"b{i}") for i in (1, 2)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["y"]),
    ]
    g = helper.make_graph(nodes, "blocked16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, hw, hw])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_avx512_tiles_of_14_columns_match_the_unscheduled_build():
    """cpu_blocked_conv.FEWER_SPARE_WIDE: on AVX-512 (``sapphirerapids``, scheduled here, not
    run) a 14-wide NCHW16c 3x3 conv of two output blocks (288 reduction steps) takes 2 blocks x
    14 columns (28 accumulators), the 1x1 after it (32 steps, under FEWER_SPARE_MIN_STEPS) 2 x 7; built for this host the model matches the same module built
    unscheduled (plain loop nests), inputs with negatives and zeros."""
    import tvm
    from tvm import tirx

    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target, host_triple

    graph = _load16(_model16())
    avx512 = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "sapphirerapids"})
    scheduled = kernels.schedule(graph.module, avx512)
    convs = [(gv.name_hint, f) for gv, f in scheduled.functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint]
    assert len(convs) == 2
    for name, f in convs:
        plan = cb.plan_of(graph.module[name], avx512)
        want = 7 if "add1" in name or "add_add" in name else 14  # the 1x1 has the residual add
        assert (plan.blocks, plan.columns) == (2, want), name
        assert update_unrolls(f) == [2, want], name

    x = np.random.default_rng(2).standard_normal((1, 32, 14, 14)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    _matches_compiled(graph.module, cpu_tvm_target(), x, mixed_signs=True)


def _model_1x1(ci: int, co: int, hw: int):
    """x[1, ci, hw, hw] -> 1x1 ci->co + relu."""
    rng = np.random.default_rng(ci + co + hw)
    inits = [numpy_helper.from_array((rng.standard_normal((co, ci, 1, 1)) / np.sqrt(ci)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(co).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "blocked1x1", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, hw, hw])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_large_images_run_rows_outside_the_block_groups_and_match_the_unscheduled_build(monkeypatch):
    """cpu_blocked_conv.ROWS_OUTSIDE_BLOCKS: a 1.6 MiB NCHW16c image (256 channels on 40x40; the
    bound is 1.5 MiB) into a 64 KiB 1x1 weight runs its rows
    outside the block groups and matches the module built unscheduled; a 0.4 MiB image (64
    channels) keeps the groups outside; with the switch off neither does."""
    from tvm import tirx

    from hetpart.targets import cpu_tvm_target

    def conv_func(graph):
        (f,) = [f for gv, f in graph.module.functions_items()
                if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint]
        return f

    big, small = _load16(_model_1x1(256, 64, 40)), _load16(_model_1x1(64, 64, 40))
    assert cb.rows_outside_of(conv_func(big)) is True and cb.rows_outside_of(conv_func(small)) is False
    x = np.random.default_rng(3).standard_normal((1, 256, 40, 40)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    target = cpu_tvm_target()
    _matches_compiled(big.module, target, x, mixed_signs=True)
    monkeypatch.setattr(cb, "ROWS_OUTSIDE_BLOCKS", False)
    assert cb.rows_outside_of(conv_func(big)) is False


def test_the_accumulator_tile_is_on_the_stack(monkeypatch):
    """cpu_blocked_conv.STACK_TILE: the 2 x 14 tile of 16-lane accumulators (1.75 KiB, over TVM's
    1 KiB stack limit) of a 14-wide NCHW16c 3x3 conv compiled for AVX-512 is no
    TVMBackendAllocWorkspace (stack_tiles.TILE_PRAGMA on its tile loop): one workspace left, the
    padded image's; with the switch off the tile is another (allocated once per tile)."""
    import tvm
    from tvm import tirx

    from hetpart import kernels
    from hetpart.kernels import stack_tiles
    from hetpart.targets import host_triple

    avx512 = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "sapphirerapids"})

    def workspaces() -> int:
        graph = _load16(_model16())
        (name, f), = [(gv.name_hint, f) for gv, f in kernels.schedule(graph.module, avx512).functions_items()
                      if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint
                      and cb.plan_of(graph.module[gv.name_hint], avx512).columns == 14]
        lib = tvm.compile(tvm.IRModule({name: f.with_attr("global_symbol", name)}), avx512,
                          tir_pipeline=stack_tiles.register())
        return lib.mod.inspect_source("asm").count("TVMBackendAllocWorkspace@")

    assert workspaces() == 1
    monkeypatch.setattr(cb, "STACK_TILE", False)
    assert workspaces() > 1


def test_the_nchw_to_blocked_transform_runs_in_the_output_order(monkeypatch):
    """cpu_injective.BLOCKING_TRANSFORM_VECTORS: the import's NCHW -> NCHW16c transform of the
    model's input is scheduled with the channel block innermost (one 16-lane vector a pixel,
    the store contiguous; before: the pixels vectorised, the stores scattered); the module built
    with it matches the unscheduled build (test_avx512_tiles_of_14_columns_... runs the whole
    module too); with the switch off the plain schedule."""
    from tvm import tirx

    from hetpart import kernels
    from hetpart.kernels.rules import cpu_injective
    from hetpart.targets import cpu_tvm_target

    graph = _load16(_model16())
    target = cpu_tvm_target()

    def innermost(mod):
        (f,) = [f for gv, f in kernels.schedule(mod, target).functions_items()
                if isinstance(f, tirx.PrimFunc) and gv.name_hint == "te_layout_transform"]  # x into NCHW16c
        import tvm_ffi

        loops = []
        tvm_ffi.structural_walk(f.body, [(tirx.For, loops.append)], order="post")
        return loops[0]  # post order: the innermost loop first

    inner = innermost(graph.module)
    assert inner.kind == tirx.ForKind.VECTORIZED and int(inner.extent) == min(16, cpu_shape_lanes(target))
    x = np.random.default_rng(4).standard_normal((1, 32, 14, 14)).astype(np.float32)
    _matches_compiled(graph.module, target, x)
    monkeypatch.setattr(cpu_injective, "BLOCKING_TRANSFORM_VECTORS", False)
    assert "fused" in str(innermost(graph.module).loop_var)  # the plain schedule: pixels fused


def cpu_shape_lanes(target) -> int:
    from hetpart.kernels.analysis import cpu_shape

    return cpu_shape(target).lanes("float32")


@pytest.mark.parametrize("batch", [1, 2])
def test_7x7_1x1s_tile_pixels_and_match_the_unscheduled_build(batch, monkeypatch):
    """cpu_blocked_conv.PIXEL_TILES: on AVX-512 (``sapphirerapids``, scheduled, not run) a 1x1
    1024->64 + ReLU conv on 7x7 (NCHW16c) tiles 2 blocks x 14 pixels (the 49 pixels
    one iterator, the last tile of 7 split off: its update has no row check left in the whole
    tiles); built for this host (batch 1 and 2) it matches the unscheduled build; with the switch
    off the plan is a row's 2 x 7."""
    import tvm
    from tvm import tirx

    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target, host_triple

    if batch > 1:
        monkeypatch.setattr(cb, "PARALLEL_MIN_ELEMENTS", 1)
    m = _model_1x1(1024, 64, 7)
    if batch > 1:
        from hetpart.bench.cpu_layers import with_batch

        m = with_batch(m, batch)
    graph = _load16(m)
    avx512 = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "sapphirerapids"})
    (name, f), = [(gv.name_hint, f) for gv, f in kernels.schedule(graph.module, avx512).functions_items()
                  if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint]
    plan = cb.plan_of(graph.module[name], avx512)
    assert (plan.blocks, plan.columns) == (2, 14)
    assert update_unrolls(f) == [2, 14]
    assert "_ragged" in f.script()  # the 7-pixel tail split off
    x = np.random.default_rng(6).standard_normal((batch, 1024, 7, 7)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    target = cpu_tvm_target()
    _matches_compiled(graph.module, target, x, mixed_signs=True)
    monkeypatch.setattr(cb, "PIXEL_TILES", False)
    plan = cb.plan_of(graph.module[name], avx512)
    assert (plan.blocks, plan.columns) == (2, 7)


def _batched_plan(width: int, batch: bool, reduction_ic: int = 64, window=()):
    from tvm import tirx

    n, occ, ow, ocb, ic = (tirx.Var(x, "int64") for x in ("n", "occ", "ow", "ocb", "ic"))
    extents = {n: 8, occ: 16, ow: width, ocb: 16, ic: reduction_ic}
    extents.update({v: 3 for v in window})
    conv = cb.BlockedConv(n if batch else None, occ, None, ow, ocb, ic, 16, tuple(window), 0)
    return cb.blocked_plan(_Mac(extents), conv, CpuShape(32 * 16, 32, 1), 16)


def test_batched_convs_take_the_whole_register_file(monkeypatch):
    """cpu_blocked_conv.BATCH_FULL_REGISTERS: with a batch dim and 32 registers, 2 blocks x 14
    columns on 56-, 28- and 14-wide outputs (2 x 8 / 2 x 7 at batch 1 or switched off), 2 x 7
    on a 7-wide one; within the registers less SPARE_REGISTERS_FULL; a reduction under
    FULL_REGISTERS_MIN_REDUCTION (a 1x1 of 512 input channels) keeps the old tile, a 3x3 of 64
    takes the new one.  FEWER_SPARE_WIDE off: it leaves 1 register from 128 steps at any batch,
    which covers this rule's cases (its own tests are above)."""
    from tvm import tirx

    monkeypatch.setattr(cb, "FEWER_SPARE_WIDE", False)
    got = [(p.blocks, p.columns) for p in (_batched_plan(w, True, 1024) for w in (56, 28, 14, 7))]
    assert got == [(2, 14), (2, 14), (2, 14), (2, 7)]
    p = _batched_plan(14, True, 1024)
    assert cb.pressure(p.blocks, p.vectors, p.columns) <= 32 - cb.SPARE_REGISTERS_FULL
    kh, kw = tirx.Var("kh", "int64"), tirx.Var("kw", "int64")
    assert _batched_plan(14, True, 64, (kh, kw)).columns == 14  # 64 * 9 reaches the floor
    assert _batched_plan(14, True, 512).columns == 7
    assert [(p.blocks, p.columns) for p in (_batched_plan(w, False, 1024) for w in (56, 14))] == [(2, 8), (2, 7)]
    monkeypatch.setattr(cb, "BATCH_FULL_REGISTERS", False)
    assert _batched_plan(56, True, 1024).columns == 8


def _batched_model(batch: int = 2, hw: int = 14):
    """x[b, 32, hw, hw] -> 3x3 pad 1 32->32 + relu -> 1x1 32->32 + add + relu (NCHW16c: two blocks)."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in (("w1", (32, 32, 3, 3)), ("w2", (32, 32, 1, 1)))]
    inits += [numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), f"b{i}") for i in (1, 2)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             helper.make_node("Add", ["c2", "r1"], ["a2"]),
             helper.make_node("Relu", ["a2"], ["y"])]
    g = helper.make_graph(nodes, "batched", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 32, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 32, hw, hw])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_batched_full_register_tile_matches_the_unscheduled_result(monkeypatch):
    """The batch-2 NCHW16c build with BATCH_FULL_REGISTERS (2 x 14 tiles where the host has 32
    registers; FULL_REGISTERS_MIN_REDUCTION lowered so the 1x1 takes it too; the 3x3's padding per
    image, BATCH_PADDING_PER_IMAGE) equals the unscheduled module's result (legalised, no
    schedule rule) and ONNX Runtime's."""
    import onnxruntime as ort
    from tvm import relax

    from hetpart import kernels
    from hetpart.kernels.analysis import cpu_shape
    from hetpart.targets import cpu_tvm_target

    monkeypatch.setattr(cb, "FULL_REGISTERS_MIN_REDUCTION", 0)
    model = _batched_model()
    graph = _load16(model)
    target = cpu_tvm_target()
    if cpu_shape(target).registers >= 32:
        plans = [cb.plan_of(f, target) for gv, f in graph.module.functions_items() if "conv2d_NCHWc" in gv.name_hint]
        assert [(p.blocks, p.columns) for p in plans] == [(2, 14), (2, 14)]
    x = np.random.default_rng(2).standard_normal((2, 32, 14, 14)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = run_vm(kernels.build(graph.module, target), [x])
    plain = relax.build(relax.transform.LegalizeOps()(graph.module), target)
    ref = run_vm(plain, [x])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def test_batched_padding_is_computed_per_image(monkeypatch):
    """cpu_blocked_conv.BATCH_PADDING_PER_IMAGE (BATCH_PAD_SHARE_BY_CORES off): in the batch-2 NCHW16c build the padded 3x3's
    padding block sits under the batch loop (extent 2) beside the tile's update block; switched
    off, the padding is a pass of its own before the tile (no loop holds both)."""
    from tvm import tirx

    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target

    monkeypatch.setattr(cb, "BATCH_PAD_SHARE_BY_CORES", False)  # its small padded batch: per image regardless
    graph = _load16(_batched_model())
    target = cpu_tvm_target()

    def batch_loop_holds_both() -> bool:
        scheduled = kernels.schedule(graph.module, target)
        f = next(f for gv, f in scheduled.functions_items()
                 if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint and "pad" in f.script())
        return any(2 == int(lp.extent) and any("pad" in n for n in names) and any(n.endswith("_update") for n in names)
                   for lp, names in loops_and_blocks(f.body))

    assert batch_loop_holds_both()
    monkeypatch.setattr(cb, "BATCH_PADDING_PER_IMAGE", False)
    assert not batch_loop_holds_both()


def test_batched_images_in_parallel_match_the_unscheduled_result(monkeypatch):
    """cpu_blocked_conv.BATCH_IMAGES_PARALLEL (off by default): on a target of 2 cores, batch 2,
    the padded conv's batch loop is its one parallel loop (holding the padding and the tile),
    and the build equals the unscheduled module's result."""
    from tvm import tirx

    from hetpart import kernels

    monkeypatch.setattr(cb, "BATCH_IMAGES_PARALLEL", True)
    monkeypatch.setattr(cb, "BATCH_PAD_SHARE_BY_CORES", False)  # its small padded batch: per image regardless
    target = _cores_target(2)
    graph = _load16(_batched_model())
    f = _padded_conv(kernels.schedule(graph.module, target))
    loops = loops_and_blocks(f.body)
    parallel = [(lp, names) for lp, names in loops if lp.kind == tirx.ForKind.PARALLEL]
    assert len(parallel) == 1 and int(parallel[0][0].extent) == 2
    assert any("pad" in n for n in parallel[0][1]) and any(n.endswith("_update") for n in parallel[0][1])
    x = np.random.default_rng(3).standard_normal((2, 32, 14, 14)).astype(np.float32)
    _matches_legalized(graph.module, target, x)


def _cores_target(cores: int):
    import tvm

    from hetpart.targets import cpu_tvm_target

    return tvm.target.Target({**{k: v for k, v in cpu_tvm_target().export().items()
                                 if k in ("kind", "mcpu", "mtriple", "mattr", "keys")}, "num-cores": cores})


def _padded_conv(scheduled):
    """The scheduled blocked conv PrimFunc of ``scheduled`` that pads its input."""
    from tvm import tirx

    return next(f for gv, f in scheduled.functions_items()
                if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint and "pad" in f.script())


@pytest.mark.parametrize("share", [True, False])
def test_a_small_padded_batch_is_padded_in_one_pass_on_16_cores(share, monkeypatch):
    """cpu_blocked_conv.BATCH_PAD_SHARE_BY_CORES: on a 16-core target the batch-2 3x3's padded
    batch (2 x 32 x 16 x 16 floats, 64 KiB: under PAD_SHARE_BYTES a core) is padded in one pass and
    its tile is one parallel loop fused over the batch (2 x 14 rows; no serial batch loop around
    it); switched off, per image (a serial loop of 2 around the pad and a parallel loop of 14).
    Either way the build equals the unscheduled module's result."""
    from tvm import tirx

    from hetpart import kernels

    monkeypatch.setattr(cb, "BATCH_PAD_SHARE_BY_CORES", share)
    target = _cores_target(16)
    graph = _load16(_batched_model())
    f = _padded_conv(kernels.schedule(graph.module, target))
    loops = loops_and_blocks(f.body)
    parallel = [(lp, names) for lp, names in loops if lp.kind == tirx.ForKind.PARALLEL]
    batch_loop = [lp for lp, names in loops if lp.kind != tirx.ForKind.PARALLEL and int(lp.extent) == 2
                  and any("pad" in n for n in names) and any(n.endswith("_update") for n in names)]
    assert not batch_loop if share else batch_loop
    tile = next(lp for lp, names in parallel if any(n.endswith("_update") for n in names))
    assert int(tile.extent) == (2 * 14 if share else 14)  # (n, rows) fused: the batch in the one loop
    x = np.random.default_rng(4).standard_normal((2, 32, 14, 14)).astype(np.float32)
    _matches_legalized(graph.module, target, x)


@pytest.mark.parametrize("groups", [True, False])
def test_a_padded_batch_over_the_share_is_padded_in_image_groups(groups, monkeypatch):
    """cpu_blocked_conv.BATCH_PAD_IMAGE_GROUPS: on a 16-core target the batch-4 3x3's padded batch
    (4 x 32 x 16 x 16 floats, 128 KiB) over PAD_SHARE_BYTES (lowered to 4 KiB: 64 KiB for 16 cores)
    is padded in 2 groups of 2 images (a serial loop of 2 around the padding and the tile, each
    group's padding and tile parallel over its 2 images); switched off, per image (a serial loop
    of 4).  Either way the build equals the unscheduled module's result."""
    from tvm import tirx

    from hetpart import kernels

    monkeypatch.setattr(cb, "BATCH_PAD_IMAGE_GROUPS", groups)
    monkeypatch.setattr(cb, "PAD_SHARE_BYTES", 4 << 10)
    target = _cores_target(16)
    graph = _load16(_batched_model(batch=4))
    f = _padded_conv(kernels.schedule(graph.module, target))
    loops = loops_and_blocks(f.body)
    serial = [int(lp.extent) for lp, names in loops if lp.kind != tirx.ForKind.PARALLEL
              and any("pad" in n for n in names) and any(n.endswith("_update") for n in names)]
    assert serial[:1] == ([2] if groups else [4])
    parallel = [(int(lp.extent), names) for lp, names in loops if lp.kind == tirx.ForKind.PARALLEL]
    pad_rows = next(e for e, names in parallel if any("pad" in n for n in names))
    assert pad_rows == (2 * 2 * 16 if groups else 2)  # (images, chunks, rows) fused; per image the chunks
    x = np.random.default_rng(5).standard_normal((4, 32, 14, 14)).astype(np.float32)
    _matches_legalized(graph.module, target, x)


def test_the_padded_share_a_core_decides(monkeypatch):
    """pad_per_image_pays: per image only where the padded batch's bytes / cores exceed
    PAD_SHARE_BYTES, on targets of PAD_SHARE_MIN_CORES+ cores (resnet50 b8's 64 x 58 x 58 padded
    batch, 6.9 MiB: per image on 2 cores, one pass on 16)."""
    monkeypatch.setattr(cb, "BATCH_PAD_SHARE_BY_CORES", True)
    from tvm import s_tir, te

    x = te.placeholder((8, 4, 58, 58, 16), name="x")
    pad = te.compute(x.shape, lambda *i: x(*i) * 1.0, name="data_pad")
    sch = s_tir.Schedule(te.create_prim_func([x, pad]))
    blk = sch.get_sblock("data_pad")
    assert blocked_conv_batch.pad_per_image_pays(sch, blk, CpuShape(512, 32, 2))
    assert not blocked_conv_batch.pad_per_image_pays(sch, blk, CpuShape(512, 32, 16))
    x = te.placeholder((8, 32, 9, 9, 16), name="x")  # resnet50 b8's 512 x 9 x 9: 1.3 MiB
    pad = te.compute(x.shape, lambda *i: x(*i) * 1.0, name="data_pad")
    sch = s_tir.Schedule(te.create_prim_func([x, pad]))
    assert blocked_conv_batch.pad_per_image_pays(sch, sch.get_sblock("data_pad"), CpuShape(512, 32, 2))  # PAD_SHARE_MIN_CORES


def _weight_heavy_model(batch: int = 8):
    """x[b, 256, 4, 4] -> 1x1 256->256 + relu (NCHW16c: 16 output chunks, a 256 KiB weight and
    16 KiB images: resnet50's 7x7 stage in small)."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array((rng.standard_normal((256, 256, 1, 1)) * 0.05).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 256, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 256, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("split", [True, False])
def test_a_weight_heavy_batch_splits_its_block_groups_outside_the_batch(split, monkeypatch):
    """cpu_blocked_conv.BATCH_GROUP_SPLIT: on an 8-core target the batch-8 1x1 of a 256 KiB weight
    over 16 KiB images runs its block groups in parts outside the batch (group_split_of > 1: a
    core streams images through a slice of the weight, not one image through all of it); on 2
    cores, or switched off, batch-outer (1).  Either way the build equals the unscheduled result."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    from hetpart import kernels

    monkeypatch.setattr(cb, "BATCH_GROUP_SPLIT", split)
    target = _cores_target(8)
    graph = _load16(_weight_heavy_model())
    conv = next(f for gv, f in graph.module.functions_items()
                if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint)
    parts = cb.group_split_of(conv, target)
    assert (parts > 1) if split else parts == 1
    assert cb.group_split_of(conv, _cores_target(2)) == 1
    scheduled = next(f for gv, f in kernels.schedule(graph.module, target).functions_items()
                     if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint)
    bindings = []
    tvm_ffi.structural_walk(scheduled.body, (tvm.s_tir.SBlockRealize, lambda r: bindings.append(r.iter_values[0])
                                             if r.block.name_hint.endswith("_update") else None))
    image = bindings[0]  # the update's batch index: fused // k (batch-outer), or (fused % m) // k (inside the parts)
    assert isinstance(image, tirx.FloorDiv) and isinstance(image.a, tirx.FloorMod) == (parts > 1)
    if parts > 1:
        _assert_prefetch_stays_in_the_part(scheduled, parts)
    x = np.random.default_rng(12).standard_normal((8, 256, 4, 4)).astype(np.float32)
    _matches_legalized(graph.module, target, x)


def test_the_group_split_model_on_resnet50s_7x7_stage():
    """blocked_conv_batch._thread_bytes on resnet50's 512 3x3 on 7x7 (16 groups of 2 blocks, 576 KiB
    of weights each, 162 KiB padded images, 7 row tiles an image and group) on 16 cores: batch-outer
    a core reads 8 groups' weights (half an image) at batch 8 and all 16 twice at batch 32; split in
    8 parts, 2 groups and the images it streams."""
    kib = 1024
    w, d = 576 * kib, 162 * kib
    cache = cb.GROUP_SPLIT_L2_BYTES
    assert blocked_conv_batch._thread_bytes(8, 16, 7, w, d, 16, 1, cache) == 8 * w + d
    assert blocked_conv_batch._thread_bytes(8, 16, 7, w, d, 16, 8, cache) == 2 * w + 4 * d
    assert blocked_conv_batch._thread_bytes(32, 16, 7, w, d, 16, 1, cache) == 32 * w + 2 * d
    assert blocked_conv_batch._thread_bytes(32, 16, 7, w, d, 16, 8, cache) == 2 * w + 16 * d


def _assert_prefetch_stays_in_the_part(scheduled, parts: int) -> None:
    """weight_prefetch under BATCH_GROUP_SPLIT (the weight-heavy batch-8 1x1: 16 output chunks in 8
    groups of 2, 4 row tiles a group): every tile prefetches the weight rows of the group after its
    own within its part of ``8 / parts`` groups (after the part's last, its first: the next image's),
    as the update block reads them."""
    import tvm_ffi
    from tvm import tirx
    from tvm.ir import TensorLoad
    from tvm.sym.analyzer import Analyzer

    from hetpart.kernels.tir_expr import substitute, variables

    loads, loops = [], []
    tvm_ffi.structural_walk(scheduled.body, (TensorLoad, loads.append))
    tvm_ffi.structural_walk(scheduled.body, (tirx.For, loops.append))
    tile = next(lp for lp in loops if lp.kind == tirx.ForKind.PARALLEL)
    (pf,) = [ld for ld in loads if any(v.name == "prefetch_j" for v in variables(ld.indices[-1]))]
    inner, tiles, images = 8 // parts, 4, 8
    a = Analyzer()
    for t in range(int(tile.extent)):
        row = int(a.simplify(substitute(pf.indices[0], [(tile.loop_var, tirx.IntImm(tile.loop_var.ty, t))])))
        unit = t // tiles
        part, g = unit // (images * inner), unit % inner
        assert row == 2 * (part * inner + (g + 1) % inner), t


@pytest.mark.parametrize("on", [True, False])
def test_a_batched_weight_heavy_1x1_takes_the_plane_groups_per_image(on, monkeypatch):
    """cpu_blocked_conv.BATCH_PLANE_GROUPS: the batch-2 768->64 1x1 on 8x8 (192 KiB of weights) on a
    2-core target takes PLANE_IC_GROUPS' plane schedule per image (ic_groups_of 12 chunks a group; one
    parallel loop of 2 images x 2 block groups); switched off, the batched row tile (None).  Either
    way the build equals the unscheduled module's result."""
    from tvm import tirx

    from hetpart import kernels

    monkeypatch.setattr(cb, "BATCH_PLANE_GROUPS", on)
    target = _cores_target(2)
    m = _model_1x1(768, 64, 8)
    for vi in (*m.graph.input, *m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 2
    graph = _load16(m)
    conv = next(f for gv, f in graph.module.functions_items()
                if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint)
    assert cb.ic_groups_of(conv, target) == (12 if on else None)
    scheduled = next(f for gv, f in kernels.schedule(graph.module, target).functions_items()
                     if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint)
    parallel = [lp for lp, _ in loops_and_blocks(scheduled.body) if lp.kind == tirx.ForKind.PARALLEL]
    if on:
        assert int(parallel[0].extent) == 4
    x = np.random.default_rng(5).standard_normal((2, 768, 8, 8)).astype(np.float32)
    _matches_legalized(graph.module, target, x)
