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
from hetpart.kernels.rules import cpu_blocked_conv as cb  # noqa: E402


def _model(batch: int, hw: int = 14):
    """x[b, 8, hw, hw] -> 3x3 pad 1 8->16 + relu -> 1x1 16->16 + add(3x3 out) + relu
    -> 3x3 stride 2 pad 1 16->16 -> 1x1 stride 2 16->16 + relu."""
    rng = np.random.default_rng(5)
    shapes = {"w1": (16, 8, 3, 3), "w2": (16, 16, 1, 1), "w3": (16, 16, 3, 3), "w4": (16, 16, 1, 1)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"b{i}") for i in range(1, 5)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c3", "w4", "b4"], ["c4"], strides=[2, 2]),
        helper.make_node("Relu", ["c4"], ["y"]),
    ]
    out = -(-(-(-hw // 2)) // 2)
    g = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _update_unrolls(func) -> list[int]:
    """Extents (> 1) of the unrolled loops around the (first) multiply-accumulate update
    block, branches of a split ragged tile included."""
    import tvm
    from tvm import tirx

    found = []

    def visit(stmt, loops):
        if isinstance(stmt, tirx.For):
            visit(stmt.body, loops + [stmt])
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s, loops)
        elif isinstance(stmt, tirx.IfThenElse):
            visit(stmt.then_case, loops)
        elif isinstance(stmt, tvm.s_tir.SBlockRealize):
            if stmt.block.name_hint.endswith("_update"):
                found.append(sorted(int(lp.extent) for lp in loops
                                    if lp.kind == tirx.ForKind.UNROLLED and int(lp.extent) > 1))
            visit(stmt.block.body, loops)

    visit(func.body, [])
    return found[0] if found else []


@pytest.mark.parametrize("batch,hw", [(1, 14), (2, 7)])
def test_blocked_convs_take_the_tile_and_match_ort(batch, hw, monkeypatch):
    """At batch 2 the root blocks beside the tile take the parallel path of the injective
    schedule, as resnet50's do at batch 8 (there, the split ragged tile's renamed write-back
    was once scheduled too and the tile refused: the generic tile ran)."""
    import onnxruntime as ort
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    if batch > 1:
        monkeypatch.setattr(cb, "PARALLEL_MIN_ELEMENTS", 1)
    model = _model(batch, hw)
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
        assert _update_unrolls(f) == sorted([plan.blocks, plan.columns]), name  # the generic tile: rows only

    x = np.random.default_rng(1).standard_normal((batch, 8, hw, hw)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    vm = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert (want == 0).any() and (want > 0).any()  # the relu'd output has both
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


class _Mac:
    def __init__(self, extents):
        self.extents = extents


def _plan(out_channels: int, width: int, block: int, registers: int, lanes: int, window=()):
    from tvm import tirx

    occ, ow, ocb, ic = (tirx.Var(n, "int64") for n in ("occ", "ow", "ocb", "ic"))
    mac = _Mac({occ: out_channels // block, ow: width, ocb: block, ic: 64})
    conv = cb.BlockedConv(None, occ, None, ow, ocb, ic, block, window, 0)
    return cb.blocked_plan(mac, conv, CpuShape(registers * 16, registers, 1), lanes)


def test_plans_fit_the_registers():
    """AVX2 (16 registers, 8 lanes): 2 blocks x 4 columns on 56- and 28-wide images, 2 x 5
    (ragged) on 14, 2 x 4 (ragged) on 7; AVX-512 (32, 16 lanes, 16-channel blocks): 2 x 8 on
    56, 2 x 7 on 7; every tile within the registers less the spare ones."""
    got = {(w, r): _plan(512, w, 8 if r == 16 else 16, r, 8 if r == 16 else 16)
           for w in (56, 28, 14, 7) for r in (16, 32)}
    assert [(got[w, 16].blocks, got[w, 16].columns) for w in (56, 28, 14, 7)] == [(2, 4), (2, 4), (2, 5), (2, 4)]
    assert (got[56, 32].blocks, got[56, 32].columns) == (2, 8) and (got[7, 32].blocks, got[7, 32].columns) == (2, 7)
    for (w, r), p in got.items():
        assert cb.pressure(p.blocks, p.vectors, p.columns) <= r - cb.SPARE_REGISTERS
    wide = _plan(64, 56, 16, 16, 8)  # a 16-channel block on AVX2: two vectors a block
    assert wide.vectors == 2 and wide.lanes == 8
    assert _plan(8, 56, 8, 16, 8).blocks == 1  # one block of output channels


def test_odd_block_counts_take_three_blocks_with_32_registers(monkeypatch):
    """cpu_blocked_conv.MAX_BLOCKS_WIDE: 9 output blocks (efficientnet's 144 channels in NCHW16c)
    tile 3 blocks at a time with AVX-512's 32 registers (2: one at a time), within the
    registers; 16 registers keep MAX_BLOCKS (no 3)."""
    wide = _plan(144, 56, 16, 32, 16)
    assert wide.blocks == 3 and cb.pressure(wide.blocks, wide.vectors, wide.columns) <= 32 - cb.SPARE_REGISTERS
    assert _plan(72, 56, 8, 16, 8).blocks == 1  # 9 blocks of 8 on AVX2: 3 is over MAX_BLOCKS
    monkeypatch.setattr(cb, "MAX_BLOCKS_WIDE", 2)
    assert _plan(144, 56, 16, 32, 16).blocks == 1


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
    takes the new one."""
    from tvm import tirx

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
    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.kernels.analysis import cpu_shape
    from hetpart.targets import cpu_tvm_target

    monkeypatch.setattr(cb, "FULL_REGISTERS_MIN_REDUCTION", 0)
    model = _batched_model()
    graph = load(model, conv_block=16)
    target = cpu_tvm_target()
    if cpu_shape(target).registers >= 32:
        plans = [cb.plan_of(f, target) for gv, f in graph.module.functions_items() if "conv2d_NCHWc" in gv.name_hint]
        assert [(p.blocks, p.columns) for p in plans] == [(2, 14), (2, 14)]
    x = np.random.default_rng(2).standard_normal((2, 32, 14, 14)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    plain = relax.build(relax.transform.LegalizeOps()(graph.module), target)
    ref = relax.VirtualMachine(plain, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def test_batched_padding_is_computed_per_image(monkeypatch):
    """cpu_blocked_conv.BATCH_PADDING_PER_IMAGE: in the batch-2 NCHW16c build the padded 3x3's
    padding block sits under the batch loop (extent 2) beside the tile's update block; switched
    off, the padding is a pass of its own before the tile (no loop holds both)."""
    from tvm import tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    graph = load(_batched_model(), conv_block=16)
    target = cpu_tvm_target()

    def batch_loop_holds_both() -> bool:
        scheduled = kernels.schedule(graph.module, target)
        f = next(f for gv, f in scheduled.functions_items()
                 if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint and "pad" in f.script())
        return any(2 == int(lp.extent) and any("pad" in n for n in names) and any(n.endswith("_update") for n in names)
                   for lp, names in _loops_and_blocks(f.body))

    assert batch_loop_holds_both()
    monkeypatch.setattr(cb, "BATCH_PADDING_PER_IMAGE", False)
    assert not batch_loop_holds_both()


def _loops_and_blocks(stmt) -> list:
    """``(For, names of the blocks under it)`` for every loop of ``stmt``."""
    import tvm
    from tvm import tirx

    out = []

    def visit(node) -> list[str]:
        if isinstance(node, tirx.For):
            names = visit(node.body)
            out.append((node, names))
            return names
        if isinstance(node, tirx.SeqStmt):
            return [n for s in node.seq for n in visit(s)]
        if isinstance(node, tirx.IfThenElse):
            return visit(node.then_case) + (visit(node.else_case) if node.else_case is not None else [])
        if isinstance(node, tvm.s_tir.SBlockRealize):
            return [node.block.name_hint] + visit(node.block.body)
        if hasattr(node, "body"):
            return visit(node.body)
        return []

    visit(stmt)
    return out


def test_batched_images_in_parallel_match_the_unscheduled_result(monkeypatch):
    """cpu_blocked_conv.BATCH_IMAGES_PARALLEL (off by default): on a target of 2 cores, batch 2,
    the padded conv's batch loop is its one parallel loop (holding the padding and the tile),
    and the build equals the unscheduled module's result."""
    import tvm
    from tvm import relax, tirx

    from hetpart import kernels, load
    from hetpart.targets import cpu_tvm_target

    monkeypatch.setattr(cb, "BATCH_IMAGES_PARALLEL", True)
    target = tvm.target.Target({**{k: v for k, v in cpu_tvm_target().export().items()
                                   if k in ("kind", "mcpu", "mtriple", "mattr", "keys")}, "num-cores": 2})
    graph = load(_batched_model(), conv_block=16)
    scheduled = kernels.schedule(graph.module, target)
    f = next(f for gv, f in scheduled.functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint and "pad" in f.script())
    loops = _loops_and_blocks(f.body)
    parallel = [(lp, names) for lp, names in loops if lp.kind == tirx.ForKind.PARALLEL]
    assert len(parallel) == 1 and int(parallel[0][0].extent) == 2
    assert any("pad" in n for n in parallel[0][1]) and any(n.endswith("_update") for n in parallel[0][1])
    x = np.random.default_rng(3).standard_normal((2, 32, 14, 14)).astype(np.float32)
    got = relax.VirtualMachine(kernels.build(graph.module, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    plain = relax.build(relax.transform.LegalizeOps()(graph.module), target)
    ref = relax.VirtualMachine(plain, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
