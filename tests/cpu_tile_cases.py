"""Small CPU convolutions built, scheduled and run for explicit x86 targets, and the register
tiles read back from their scheduled TIR (shared by the CPU tile tests: ``from cpu_tile_cases import ...``).

* ``conv(ic, oc, hw, k, stride, pad, epilogue, batch)``: a seeded Conv (+ bias) model, then
  ReLU, a residual Add (input ``r``) or nothing;
* ``matmul(m, k, n, epilogue)``: a seeded ``[m, k] @ [k, n]`` + bias model, then ReLU or a
  residual Add;
* ``mcpu_target(mcpu)``: an LLVM target for this host's triple with that ``-mcpu`` (2 cores);
  ``avx512_target(cores)``: ``sapphirerapids`` (32 vector registers) at ``cores`` cores;
* ``as_32_registers(monkeypatch)``: the conv and matmul rules see this host with 32 registers;
* ``random_feeds(m)`` / ``build_and_run(m, feeds, target)`` / ``matches_onnxruntime(m, case)``:
  seeded inputs; the all-CPU build run once; hetpart's output against ONNX Runtime's;
* ``host_has_avx2()``: whether this host can run an AVX2 build;
* ``scheduled(m, mcpu)``: the CpuMatmul / CpuConv2d PrimFunc scheduled for that ``-mcpu``;
  ``conv2d_script(m, mcpu)``: the script of the CpuConv2d one;
* ``update_chains(func)`` / ``tile_shape(func)`` / ``tile_rows(func)``: the loops around each
  ``*_update`` block; the ``(rows, vectors, lanes)`` register tile; its rows;
* ``indices_along_tile_loop(func, dims, steps)`` / ``constant_values(exprs)``: the update block's
  iterators along the parallel tile loop; their values as ints.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import tvm
import tvm_ffi
from onnx import helper
from tvm import relax
from tvm.sym.analyzer import Analyzer

from onnx_cases import assert_matches, model, onnxruntime_outputs, scheduled_by

from hetpart import kernels, load
from hetpart.kernels.rules import cpu_conv2d, cpu_matmul
from hetpart.targets import cpu_tvm_target, host_triple


def conv(ic, oc, hw, k=1, stride=1, pad=0, epilogue="relu", batch=1):
    """Conv ``k x k`` (+ bias) on ``[batch, ic, hw, hw]``, then ReLU, a residual Add
    (input ``r``) or nothing."""
    rng = np.random.default_rng(ic * 1000 + oc + k)
    w = (rng.standard_normal((oc, ic, k, k)) / np.sqrt(ic * k * k)).astype(np.float32)
    b = (rng.standard_normal(oc) * 0.5).astype(np.float32)
    o = (hw + 2 * pad - k) // stride + 1
    inputs = [("x", (batch, ic, hw, hw), np.float32)]
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride, stride],
                            pads=[pad] * 4)
    if epilogue == "relu":
        tail = [helper.make_node("Relu", ["c"], ["y"])]
    elif epilogue == "add":
        tail = [helper.make_node("Add", ["c", "r"], ["y"])]
        inputs.append(("r", (batch, oc, o, o), np.float32))
    else:
        tail = [helper.make_node("Identity", ["c"], ["y"])]
    return model([node] + tail, inputs, [("y", [batch, oc, o, o], np.float32)], {"w": w, "b": b}, opset=13)


def matmul(m: int, k: int, n: int, epilogue: str = "relu") -> onnx.ModelProto:
    """``[m, k] @ [k, n]`` (a constant weight) + bias, then ReLU or a residual Add."""
    rng = np.random.default_rng(m * 7 + k + n)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(n) * 0.5).astype(np.float32)
    inputs = [("x", (m, k), np.float32)]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "b"], ["c"])]
    if epilogue == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
        inputs.append(("r", (m, n), np.float32))
    return model(nodes, inputs, [("y", [m, n], np.float32)], {"w": w, "b": b}, opset=13)


def mcpu_target(mcpu: str) -> tvm.target.Target:
    """An LLVM target for this host's triple with ``-mcpu=mcpu`` and 2 cores."""
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 2})


def avx512_target(cores: int = 16) -> tvm.target.Target:
    """An LLVM ``sapphirerapids`` target (AVX-512: 32 vector registers) for this host's triple at ``cores`` cores."""
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "sapphirerapids", "num-cores": cores})


def as_32_registers(monkeypatch) -> None:
    """The conv and matmul rules see this host's target with 32 vector registers."""
    for rule in (cpu_conv2d, cpu_matmul):
        real = rule.cpu_shape
        monkeypatch.setattr(rule, "cpu_shape", lambda t, real=real: dataclasses.replace(real(t), registers=32))


def random_feeds(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Seeded float32 inputs of ``m`` (standard normal x 3, every 7th element zero)."""
    rng = np.random.default_rng(7)
    feeds = {}
    for i in m.graph.input:
        a = (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 3).astype(np.float32)
        a.flat[::7] = 0.0
        feeds[i.name] = a
    return feeds


def build_and_run(m: onnx.ModelProto, feeds: dict, target: tvm.target.Target) -> np.ndarray:
    """The all-CPU module built by :func:`hetpart.kernels.build` for ``target``, run once."""
    vm = relax.VirtualMachine(kernels.build(load(m).module, target), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[i.name]) for i in m.graph.input])
    return out.numpy()


def matches_onnxruntime(m, case: str) -> None:
    """``m`` built by hetpart for this CPU gives ONNX Runtime's output (a ReLU case's
    output must hold both zeros and positives, so the clamp is exercised)."""
    feeds = random_feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    got = build_and_run(m, feeds, cpu_tvm_target())
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


def host_has_avx2() -> bool:
    """Whether ``/proc/cpuinfo`` lists AVX2 (False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def scheduled(m: onnx.ModelProto, mcpu: str):
    """The CpuMatmul or CpuConv2d PrimFunc that ``m`` fuses into, scheduled for ``mcpu_target(mcpu)``."""
    func = scheduled_by(m, mcpu_target(mcpu), "CpuMatmul", "CpuConv2d")
    return func


def conv2d_script(m, mcpu: str = "haswell") -> str:
    """The TVMScript of ``m``'s CpuConv2d PrimFunc scheduled for ``mcpu_target(mcpu)``."""
    func = scheduled_by(m, mcpu_target(mcpu), "CpuConv2d")
    return func.script()


def update_chains(func) -> list[tuple[list, object]]:
    """Per ``*_update`` block of ``func`` (a multiply-accumulate's): ``(the loops around
    it, outermost first; its SBlockRealize)``."""
    chains = []

    def walk(stmt, loops):
        if isinstance(stmt, tvm.tirx.For):
            walk(stmt.body, loops + [stmt])
        elif isinstance(stmt, tvm.s_tir.SBlockRealize):
            if stmt.block.name_hint.endswith("_update"):
                chains.append((loops, stmt))
            walk(stmt.block.body, loops)
        elif isinstance(stmt, tvm.tirx.SeqStmt):
            for s in stmt.seq:
                walk(s, loops)
        elif isinstance(stmt, tvm.tirx.IfThenElse):  # a split ragged row tile (ragged_rows)
            walk(stmt.then_case, loops)
        elif hasattr(stmt, "body"):
            walk(stmt.body, loops)

    walk(func.body, [])
    return chains


def tile_shape(func) -> tuple[int, int, int]:
    """``(rows, vectors, lanes)`` of the multiply-accumulate's register tile: the two
    unrolled loops and the vectorised one around the ``*_update`` block."""
    ((loops, _),) = update_chains(func)
    unrolled = [lp for lp in loops if lp.kind == tvm.tirx.ForKind.UNROLLED]
    assert loops[-1].kind == tvm.tirx.ForKind.VECTORIZED and len(unrolled) == 2, func.script()
    return int(unrolled[0].extent), int(unrolled[1].extent), int(loops[-1].extent)


def tile_rows(func) -> int:
    """The rows of :func:`tile_shape`'s register tile."""
    return tile_shape(func)[0]


def _update_in_parallel_loop(func):
    """``(parallel loop, update block realize)`` of the multiply-accumulate's tile."""
    ((loops, realize),) = update_chains(func)
    parallel = [lp for lp in loops if lp.kind == tvm.tirx.ForKind.PARALLEL]
    assert parallel, func.script()
    return parallel[-1], realize


def constant_values(exprs) -> list[int]:
    """The constants of ``exprs``; the other loops' variables set to 0 where one is left."""
    vals = []
    for e in exprs:
        if isinstance(e, tvm.tirx.IntImm):
            vals.append(int(e.value))
        else:
            raise AssertionError(f"binding not constant along the tile loop: {e}")
    return vals


def indices_along_tile_loop(func, dims, steps: int | None = None) -> list[list]:
    """For each block iterator in ``dims``, its value (simplified) at each of the first
    ``steps`` iterations (all when None) of the parallel tile loop around the update
    block, every loop inside that one at 0."""
    par, realize = _update_in_parallel_loop(func)
    inner = []
    tvm_ffi.structural_walk(par.body, (tvm.tirx.For, lambda f: inner.append(f.loop_var)))
    out = []
    for dim in dims:
        vals = []
        for f in range(int(par.extent) if steps is None else steps):
            a = Analyzer()
            a.bind(par.loop_var, f)
            for v in inner:
                a.bind(v, 0)
            vals.append(a.simplify(realize.iter_values[dim]))
        out.append(vals)
    return out
