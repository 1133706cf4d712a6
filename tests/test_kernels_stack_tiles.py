"""kernels.stack_tiles: per-task buffers of 1-4 KiB stay on the stack (no workspace call),
values unchanged; larger ones keep TVM's workspace."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from hetpart.kernels import stack_tiles


def _tiled_matmul(rows: int, cols: int, n: int = 64):
    """C = A @ B (n x n) as the register tile runs it: each parallel task accumulates a rows x
    cols tile in a write cache over one serial k loop, rows unrolled, columns a vector."""
    a = te.placeholder((n, n), name="A")
    b = te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    sch = s_tir.Schedule(te.create_prim_func([a, b, c]))
    block = sch.get_sblock("C")
    i, j, kk = sch.get_loops(block)
    io, ii = sch.split(i, factors=[None, rows])
    jo, ji = sch.split(j, factors=[None, cols])
    sch.reorder(io, jo, kk, ii, ji)
    outer = sch.fuse(io, jo)
    sch.parallel(outer)
    sch.unroll(ii)
    sch.vectorize(ji)
    wb = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(wb, outer)
    wr, wc = sch.get_loops(wb)[-2:]
    sch.unroll(wr)
    sch.vectorize(wc)
    return sch.mod


def _build(mod, pipeline: str):
    target = tvm.target.Target("llvm")
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target, tir_pipeline=pipeline)


def _calls_workspace(lib) -> bool:
    return "TVMBackendAllocWorkspace" in lib.mod.inspect_source("ll")


def _run(lib, n: int = 64):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype("float32")
    b = rng.standard_normal((n, n)).astype("float32")
    a[0, :4] = [0.0, -0.0, np.inf, -np.inf]
    b[3, 5] = np.nan
    out = tvm.runtime.tensor(np.zeros((n, n), "float32"))
    lib(tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    return out.numpy(), a, b


def test_a_one_kib_tile_leaves_the_workspace_and_computes_the_same():
    mod = _tiled_matmul(8, 32)  # 8 x 32 float32 = 1 KiB: TVM's default puts it in the workspace
    before, after = _build(mod, "default"), _build(mod, stack_tiles.register())
    assert _calls_workspace(before)
    assert not _calls_workspace(after)
    got, a, b = _run(after)
    ref, _, _ = _run(before)
    np.testing.assert_array_equal(got, ref)  # same sums in the same order
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows,cols", [(14, 32), (64, 32)])  # 1.75 and 8 KiB: past STACK_BYTES
def test_a_larger_buffer_keeps_the_workspace(rows, cols):
    assert rows * cols * 4 > stack_tiles.STACK_BYTES
    assert _calls_workspace(_build(_tiled_matmul(rows, cols), stack_tiles.register()))


def test_a_tile_under_a_window_keeps_the_workspace():
    """A tile whose reduction is a nest of serial loops (a conv's ic, ry, rx): promoted to
    registers there it spilled (resnet50's 7x7 stem 1.56x slower), so it is not marked."""
    mod = _tiled_matmul(8, 32)
    sch = s_tir.Schedule(mod)
    block = sch.get_sblock("C")
    k = sch.get_loops(block)[1]
    sch.split(k, factors=[8, 8])  # two serial reduction loops
    assert _calls_workspace(_build(sch.mod, stack_tiles.register()))
