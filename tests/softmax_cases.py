"""Softmax / reduction rows and schedules shared by the CPU reduction-rule tests
(test_kernels_reduction_tail, _softmax, _softmax_row, _softmax_tail, _softmax_fold: ``from softmax_cases import ...``):

* ``special_rows(n, count, seed)``: rows of ``n`` with every special case (masks, NaN, Inf, tails);
* ``all_cpu_output(m, x)`` / ``ort_output(m, feeds)``: hetpart's all-CPU output "y" / ONNX Runtime's;
* ``softmax_matches_references(x, op)``: hetpart's all-CPU Softmax (LogSoftmax) of ``x`` against
  ONNX Runtime and onnx.reference (ONNX Runtime alone);
* ``fused_softmax(rows, n)``: a fused Relax softmax over ``[rows, n]`` and its PrimFunc;
* ``WIDTHS``; ``scheduled_reduction(n, mcpu, op)``: the CpuReduction schedule for that ``-mcpu``;
  ``for_loops(func)`` / ``shift_lefts(expr)``: its loops / the shifts left (``fast_exp``'s) in an expression.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import tvm
import tvm_ffi
from tvm import tirx

from onnx_cases import assert_matches, reference

from hetpart import load
from hetpart.backend import forced_plan
from hetpart.bench.cpu_softmax import softmax_model
from hetpart.kernels.rules.cpu_reduction import CpuReduction
from hetpart.targets import host_triple


def special_rows(n: int, count: int = 12, seed: int = 0) -> np.ndarray:
    """``count`` seeded rows of ``n`` (x4) with the special cases: zeros, negatives, -Inf masks, a
    fully masked row, NaN and Inf in the tail, the max in the tail or the first vector, exp underflow."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((count, n)) * 4).astype(np.float32)
    x[1] = 0.0
    x[2, ::2] = -30.0                      # negatives
    x[3, ::3] = -np.inf                    # masked attention
    x[4] = -np.inf                         # a fully masked row (NaN in ORT)
    x[5, n // 2] = np.nan
    x[6, n - 1] = np.nan                   # in the tail of a row that is not whole vectors
    x[7, n - 1] = np.inf
    x[8, :] = -np.inf
    x[8, n - 1] = 3.0                      # the one unmasked entry in the tail
    x[9, n - 1] = 50.0                     # the row's max in the tail
    x[10, 0] = 50.0                        # ... in the first vector
    x[11] = np.linspace(-200, 0, n)        # exp underflows
    return x


def all_cpu_output(m, x):
    """Output "y" of ``m`` on input ``x``, every kernel on the CPU, compiled and run in a Session."""
    import hetpart

    graph = load(m)
    with hetpart.Session(hetpart.compile(forced_plan(graph, "cpu"), graph, progress=False)) as s:
        return s.run({"x": x})["y"]


def ort_output(m, feeds):
    """ONNX Runtime's first output of ``m`` on ``feeds`` (CPU provider)."""
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


WIDTHS = {"haswell": 8, "skylake-avx512": 16}
"""Float32 lanes of a vector per ``-mcpu`` the schedules are read for."""


def scheduled_reduction(n: int, mcpu: str, op: str = "Softmax"):
    """The CpuReduction schedule of ``op`` over rows of ``n`` (a ``[4, n]`` model) for ``-mcpu=mcpu`` at 4 cores."""
    graph = load(softmax_model(op, (4, n)))
    func = next(f for f in graph.module.functions.values() if isinstance(f, tirx.PrimFunc))
    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 4})
    return CpuReduction().apply(func, target).mod["main"]


def for_loops(func) -> list:
    """The For loops of ``func``, outermost first (pre-order)."""
    loops = []
    tvm_ffi.structural_walk(func.body, (tirx.For, loops.append), order="pre")
    return loops


def shift_lefts(expr) -> int:
    """Shifts left in ``expr`` (each ``fast_exp`` builds its power of 2 with one or two)."""
    found = []
    tvm_ffi.structural_walk(expr, (type(tirx.shift_left(tirx.Var("a", "int32"), 1)), found.append))
    return len(found)


def softmax_matches_references(x: np.ndarray, op: str = "Softmax", what: str | None = None) -> None:
    """hetpart's all-CPU ``op`` (Softmax or LogSoftmax) over the last axis of ``x`` gives ONNX
    Runtime's answer and, for Softmax, onnx.reference's (its LogSoftmax is ``log(softmax)``: -inf
    where the softmax underflows).  ``what`` labels the failures (default ``n=<row length>``)."""
    what = what or f"n={x.shape[-1]}"
    m = softmax_model(op, x.shape)
    got = all_cpu_output(m, x)
    assert_matches(got, ort_output(m, {"x": x}), what=f"{what} vs ONNX Runtime")
    if op == "Softmax":
        with np.errstate(all="ignore"):
            want = reference(m, {"x": x})["y"]
        assert_matches(got, want, what=f"{what} vs onnx.reference")


def fused_softmax(rows: int, n: int):
    """Output: ``(func, mod)``: a Relax softmax over the last axis of a ``[rows, n]`` float32 input,
    fused (``importer.fusion.fuse``) into ``mod``, and its one PrimFunc ``func``."""
    from tvm import relax

    from hetpart.importer.fusion import fuse

    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((rows, n), "float32"))
    with bb.function("main", [a]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.softmax(a, axis=-1))
        bb.emit_func_output(out)
    mod = fuse(bb.get())
    return next(f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)), mod
