"""The CPU injective rule's threshold for quantising nests
(:data:`hetpart.kernels.rules.cpu_injective.HEAVY_PARALLEL_MIN_ELEMENTS`) and
DynamicQuantizeLinear's serial scale kernel (:mod:`hetpart.importer.integer_ops`).

Structure: the quantisation of a ``[1, 128, 768]`` activation (96 Ki outputs, under
the contiguous threshold) runs in parallel, a plain Add of the same size and a ``[1, 16,
768]`` quantisation do not; the scale / zero-point kernel has no
parallel loop.  Values: the quantisation built for 16 cores (and run here on this
machine's threads) equals ONNX Runtime's and onnx.reference's ``y``, scale and zero
point on negatives, zeros, all-negative, all-zero rows and an all-zero tensor (ORT's
scale 1 there; the reference's 1/255 gives the same ``y``).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import helper
from tvm import relax

from onnx_cases import model, reference

import hetpart
from hetpart import kernels
from hetpart.targets import cpu_tvm_target

F32, U8 = np.float32, np.uint8
SHAPE = (1, 128, 768)
RNG = np.random.default_rng(2604)


def _dql(shape=SHAPE):
    return model([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], [("x", shape, F32)],
                 [("y", shape, U8), ("s", (), F32), ("z", (), U8)], opset=13)


def _scheduled(m, cores: int, prefix: str):
    graph = hetpart.load(m)
    names = [k.func for k in graph.nodes if k.func.startswith(prefix)]
    assert len(names) == 1, [k.func for k in graph.nodes]
    mod = tvm.IRModule({"main": graph.module[names[0]]})
    return kernels.schedule(mod, cpu_tvm_target(cores))["main"]


@pytest.mark.parametrize("cores", [2, 16])
def test_quantize_of_a_transformer_row_block_is_parallel(cores):
    func = _scheduled(_dql(), cores, "quantize")
    text = func.script()
    assert func.attrs["hetpart.rule"] == "CpuInjective"
    assert "T.parallel" in text and "T.vectorized" in text, text


def test_small_quantize_stays_serial():
    """Under 32 Ki outputs (~3 us on one core) a wake-up does not pay."""
    assert "T.parallel" not in _scheduled(_dql((1, 16, 768)), 16, "quantize").script()


def test_plain_add_of_the_same_size_stays_serial_on_16_cores():
    """Only quantising nests get the lower threshold: a memory-bound Add keeps 256 Ki."""
    m = model([helper.make_node("Add", ["a", "b"], ["c"])], [("a", SHAPE, F32), ("b", SHAPE, F32)],
              [("c", SHAPE, F32)])
    func = _scheduled(m, 16, "add")
    assert func.attrs["hetpart.rule"] == "CpuInjective"
    assert "T.parallel" not in func.script()


@pytest.mark.parametrize("cores", [2, 16])
def test_scale_zero_point_kernel_has_no_parallel_loop(cores):
    """A handful of scalars: one serial kernel (a 2-way parallel loop cost a wake-up)."""
    text = _scheduled(_dql(), cores, "scale_zero_point").script()
    assert "T.parallel(T.int64(2))" not in text, text
    assert "T.parallel" not in text.replace("T.parallel(T.int64(1))", ""), text


def _values(kind: str) -> np.ndarray:
    x = RNG.standard_normal(SHAPE).astype(F32) * 4
    if kind == "negative":
        x = -np.abs(x) - 0.25
    elif kind == "with-zeros":
        x[..., ::5] = 0.0
        x[0, 7] = 0.0  # an all-zero row
        x[0, 100:103] = 0.0
    elif kind == "zeros":
        x = np.zeros(SHAPE, F32)
    elif kind == "ties":  # exact halves of the scale: round-half-to-even, as ORT
        x = (RNG.integers(-255, 256, SHAPE) / 2).astype(F32)
    return x


@pytest.mark.parametrize("kind", ["normal", "negative", "with-zeros", "zeros", "ties"])
def test_parallel_quantize_matches_onnxruntime_and_reference(kind):
    m = _dql()
    x = _values(kind)
    graph = hetpart.load(m)
    executable = kernels.build(graph.module, cpu_tvm_target(16))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    y, s, z = (np.asarray(v.numpy()) for v in vm["main"](tvm.runtime.tensor(x)))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip(["y", "s", "z"], sess.run(None, {"x": x})))
    ref = reference(m, {"x": x})
    got = {"y": y, "s": s, "z": z}
    for name in ("y", "s", "z"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{name} vs ONNX Runtime ({kind})")
    for name in ("y", "z") if kind == "zeros" else ("y", "s", "z"):
        np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{name} vs onnx.reference ({kind})")


def _quantized_conv(shape=(1, 8, 16, 16)):
    """DynamicQuantizeLinear feeding ConvInteger (ORT's ``quantize_dynamic`` form of a conv):
    its input nest is ``quantize -> cast -> cast(zp) -> subtract``."""
    w = RNG.integers(-127, 128, (4, shape[1], 1, 1)).astype(np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("ConvInteger", ["q", "w", "z"], ["y"])]
    return model(nodes, [("x", shape, F32)], [("y", (1, 4, *shape[2:]), np.int32)], {"w": w}, opset=13)


def test_quantized_conv_input_nest_is_scheduled_by_the_injective_rule():
    """The nest's 0-d zero-point cast (no loop, inlined away) once made the injective
    rule decline it: left to the fallback, three serial loops LLVM unrolled and
    vectorised apiece, the dynamically quantised MobileNet's costliest kernels to
    compile (~80 ms each) and scalar-slower to run."""
    func = _scheduled(_quantized_conv(), 2, "fused_quantize")
    assert func.attrs["hetpart.rule"] == "CpuInjective"
    assert "T.vectorized" in func.script()


def _most_repeated_load(func) -> int:
    """The most times one buffer element (same buffer, same indices) is read by one
    expression (an assignment's right-hand side) of ``func``, read off its TVMScript."""
    import re
    from collections import Counter

    worst = 0
    for line in func.script().splitlines():
        if " = " in line and not line.strip().startswith(("T.reads", "T.writes")):
            seen = Counter(re.findall(r"\b\w+\[[^\[\]]*\]", line.split(" = ", 1)[1]))
            worst = max([worst, *seen.values()])
    return worst


def test_scale_zero_point_kernel_reads_an_accumulator_at_most_thrice_an_expression():
    """Each NaN-propagating combine of the partial maxima reads its accumulator three
    times (the compare, the NaN test, the result); folded into one expression the
    accumulator was copied 3 ** (chains - 1) times, ~0.1 s of TVM's TIR passes a
    kernel (14 in the dynamically quantised MobileNet).  One stage a combine keeps
    every block's expression linear in its reads."""
    func = _scheduled(_dql(), 2, "scale_zero_point")
    assert _most_repeated_load(func) <= 3, func.script()
