"""cpu_matmul.GEMV_PACKED_PARTS: a one-row product by a model weight, scheduled for 16 cores,
reads the weight packed into its 16 column parts ``[part, k, column]`` (each core's part one
contiguous stream: llama_decode's N=2048 / N=256 projections; bench/results/cpu-decode-gemv-2core.md),
and computes what the unpacked row stream and numpy compute; a ragged N (1000: parts unequal)
and an activation operand are left as they were."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from hetpart import kernels
from hetpart.importer.fusion import fuse
from hetpart.kernels import weight_prepack
from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import cpu_tvm_target

CORES = 16


def _module(k: int, n: int, weight: bool = True) -> tvm.IRModule:
    """``main(x[1, k], r[1, n], w[k, n]) = x @ w + r``; ``w`` a weight (past ``num_input``) or not."""
    x = relax.Var("x", relax.TensorType([1, k], "float32"))
    r = relax.Var("r", relax.TensorType([1, n], "float32"))
    w = relax.Var("w", relax.TensorType([k, n], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, r, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, w)), r)))
        bb.emit_func_output(out)
    mod = fuse(bb.get())
    mod["main"] = mod["main"].with_attr("num_input", 2 if weight else 3)
    return mod


def _gemv(mod) -> tirx.PrimFunc:
    sched = kernels.schedule(weight_prepack.mark_weights(mod), cpu_tvm_target(CORES))
    return next(f for gv, f in sched.functions_items() if isinstance(f, tirx.PrimFunc) and "matmul" in gv.name_hint)


def _run(mod, x, r, w) -> np.ndarray:
    from hetpart.costmodel.kernel_bench import TRANSFORM_PARAMS, _has_function

    vm = relax.VirtualMachine(kernels.build(mod, cpu_tvm_target(CORES)), tvm.cpu())
    ws = [tvm.runtime.tensor(w)]
    if _has_function(vm, TRANSFORM_PARAMS):
        ws = list(vm[TRANSFORM_PARAMS](ws))
    return vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(r), *ws).numpy()


def _feeds(k: int, n: int):
    rng = np.random.default_rng(3)
    x, r, w = (rng.standard_normal(s).astype(np.float32) for s in ((1, k), (1, n), (k, n)))
    x.reshape(-1)[::7] = 0.0
    return x, r, w


@pytest.mark.parametrize("k,n", [(256, 2048), (1024, 256)])
def test_equal_parts_are_packed_and_match_the_row_stream_and_numpy(monkeypatch, k, n):
    monkeypatch.setattr(cpu_matmul, "GEMV_PACKED_PARTS", True)
    mod = _module(k, n)
    text = _gemv(mod).script()
    assert f"T.int64({CORES}), T.int64({k}), T.int64({n // CORES})" in text  # [part, k, column in part]
    assert "layout_rewrite_preproc" in text
    x, r, w = _feeds(k, n)
    got = _run(mod, x, r, w)
    monkeypatch.setattr(cpu_matmul, "GEMV_PACKED_PARTS", False)
    assert "layout_rewrite_preproc" not in _gemv(mod).script()
    before = _run(mod, x, r, w)
    np.testing.assert_array_equal(got, before)  # the same sums in the same order
    want = x.astype(np.float64) @ w.astype(np.float64) + r
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("k,n,weight", [(512, 1000, True), (256, 2048, False)])
def test_ragged_parts_and_activation_operands_are_not_packed(monkeypatch, k, n, weight):
    mod = _module(k, n, weight)
    monkeypatch.setattr(cpu_matmul, "GEMV_PACKED_PARTS", False)
    before = _gemv(mod).script()
    monkeypatch.setattr(cpu_matmul, "GEMV_PACKED_PARTS", True)
    assert _gemv(mod).script() == before
