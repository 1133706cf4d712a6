"""The QDQ integer conv path at 16 threads (issue 18, bench/results/cpu-int8-scale-2core.md):

* ``cpu_injective.TRANSPOSE_ROW_SPLIT``: an NCHW -> ``[H*W, C]`` transpose whose vector chunks
  are fewer than the target's cores (64 floats: 4 chunks) has its row loop split into the
  parallel loop (16 iterations on a 16-core target; 4 with the switch off), and the scheduled
  function, built for 16 cores and run here, gives numpy's transpose;
* ``cpu_int8_matmul.PARALLEL_PAD``: the row padding's 8-bit copy of a 100 x 640 A (64 Ki+ bytes
  padded) is a parallel loop (serial with the switch off), and the matmul stays numpy's exact
  product on the host;
* ``qdq_conv.WINDOW_PAD_IN_GATHER`` is in tests/test_importer_qdq_conv.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import relax

from onnx_cases import model

from hetpart import kernels, load
from hetpart.kernels.rules import cpu_injective
from hetpart.kernels.rules import cpu_int8_matmul as rule
from hetpart.kernels.rules.cpu_injective import CpuInjective
from hetpart.targets import cpu_tvm_target, host_triple
from int8_cases import int8_matmul

F32 = np.float32


def _parallel_extents(func) -> list[int]:
    found = []

    def visit(stmt):
        if isinstance(stmt, tvm.tirx.For) and stmt.kind == tvm.tirx.ForKind.PARALLEL:
            found.append(int(stmt.extent))

    _walk(func.body, visit)
    return found


def _walk(stmt, visit):
    """Every For / block body under ``stmt`` (pre-order)."""
    from tvm import s_tir

    visit(stmt)
    if isinstance(stmt, tvm.tirx.SeqStmt):
        for s in stmt.seq:
            _walk(s, visit)
    elif isinstance(stmt, s_tir.SBlockRealize):
        _walk(stmt.block.body, visit)
    elif hasattr(stmt, "body") and stmt.body is not None:
        _walk(stmt.body, visit)


def _rows_case(c, h, w):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]
    return model(nodes, [("x", (1, c, h, w), F32)], [("y", (h * w, c), F32)],
                 {"shape": np.array([h * w, c], np.int64)}, opset=13)


@pytest.mark.parametrize("split", [True, False])
def test_rows_transpose_is_split_over_the_cores(monkeypatch, split):
    monkeypatch.setattr(cpu_injective, "TRANSPOSE_ROW_SPLIT", split)
    c, h, w = 64, 16, 16  # 16 Ki outputs: the strided threshold; 64 floats: 4 chunks of 16
    graph = load(_rows_case(c, h, w))
    (kernel,) = [k for k in graph.kernels.values() if "transpose" in k.func]
    target = cpu_tvm_target(16)
    func = CpuInjective().apply(graph.module[kernel.func], target).mod["main"]
    assert _parallel_extents(func) == ([16] if split else [4])
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    x = np.random.default_rng(3).standard_normal((1, c, h, w)).astype(F32)
    out = tvm.runtime.tensor(np.zeros((h * w, c), F32))
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), x[0].transpose(1, 2, 0).reshape(h * w, c))


@pytest.mark.parametrize("on", [True, False])
def test_padding_copy_runs_in_parallel(monkeypatch, on):
    monkeypatch.setattr(rule, "_tile_permission", lambda: True)  # build only: the SPR schedule on any host
    monkeypatch.setattr(rule, "PARALLEL_PAD", on)
    mod, _ = int8_matmul((100, 640), 64)
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "sapphirerapids", "num-cores": 16})
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    done = kernels.schedule_primfunc(func, target)
    assert str(done.attrs[kernels.RULE_ATTR]) == "CpuInt8Matmul"
    assert len(_parallel_extents(done)) == (2 if on else 1)  # (the padding copy and) the tile loop


@pytest.mark.skipif(not rule.has_vnni(cpu_tvm_target()), reason="the host has no AVX-512 VNNI")
def test_padded_matmul_is_exact_on_the_host(monkeypatch):
    monkeypatch.setattr(rule, "PARALLEL_PAD", True)
    mod, w = int8_matmul((100, 640), 64)
    exe = kernels.build(mod, cpu_tvm_target(16))
    a = np.random.default_rng(5).integers(0, 256, (100, 640)).astype("uint8")
    a.flat[:64] = 255
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(a)).numpy()
    np.testing.assert_array_equal(got, (a.astype(np.int64) @ w.astype(np.int64)).astype(np.float32) * np.float32(0.5))


def _writeback_case(h, w, o):
    """``[H*W, O] -> [1, O, H, W]`` plus a residual in NCHW (qdq_conv's write-back + add)."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Add", ["t", "res"], ["y"])]
    return model(nodes, [("x", (h * w, o), F32), ("res", (1, o, h, w), F32)], [("y", (1, o, h, w), F32)],
                 {"shape": np.array([1, h, w, o], np.int64)}, opset=13)


@pytest.mark.parametrize("mixed", [True, False])
def test_residual_writeback_is_tiled(monkeypatch, mixed):
    """MIXED_TRANSPOSE_TILES: the write-back with a residual read along the output is tiled as a
    transpose (the tile's 16-lane vectors, 256 chunks of the 64x64 plane, parallel) -- numpy's values."""
    monkeypatch.setattr(cpu_injective, "MIXED_TRANSPOSE_TILES", mixed)
    h, w, o = 64, 64, 16
    graph = load(_writeback_case(h, w, o))
    (kernel,) = [k for k in graph.kernels.values() if "transpose" in k.func]
    target = cpu_tvm_target(16)
    func = CpuInjective().apply(graph.module[kernel.func], target).mod["main"]
    assert (_parallel_extents(func) == [256]) is mixed, _parallel_extents(func)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    rng = np.random.default_rng(4)
    x, res = rng.standard_normal((h * w, o)).astype(F32), rng.standard_normal((1, o, h, w)).astype(F32)
    out = tvm.runtime.tensor(np.zeros((1, o, h, w), F32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(res), out)
    np.testing.assert_array_equal(out.numpy(), x.reshape(1, h, w, o).transpose(0, 3, 1, 2) + res)
