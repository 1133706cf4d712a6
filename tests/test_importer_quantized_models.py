"""Zoo models quantised by ONNX Runtime's own tool, run all-CPU through hetpart, against
ONNX Runtime's int8 output.

* ``quantize_static`` (QDQ format: QuantizeLinear/DequantizeLinear pairs around every
  Conv, Gemm and MatMul, calibrated on a few random feeds);
* ``quantize_dynamic`` (MatMulInteger and ConvInteger fed by DynamicQuantizeLinear).

Tolerance, the quantised model's own: the dynamic models' integer contractions are
exact, so only float rounding of the rescaling separates hetpart from ORT
(``rtol=1e-5``).  A QDQ model re-rounds every activation to its quantisation grid, so
a value a float rounding away from a tie lands one step off and the step travels on;
hetpart must stay within one step of the output's grid where the model is shallow
(mlp, mobilenet); for BERT (dozens of re-quantised activations deep, through layer
norms and softmax) within three steps of ORT running the QDQ graph as written, and
no further from the float model than ORT's own int8 result is.

ORT's int8 kernels are no exact reference on x86 without VNNI
(:func:`host_isa.ort_integer_exact`: MLAS's uint8 x int8 GEMM saturates int16 pair sums
there).  So the dynamic models are compared, on every host, with ORT running the model
with its integer contractions rewritten into float ops ORT computes exactly
(:func:`_exact_integer_contractions`; onnx.reference lacks this onnx version's
DequantizeLinear-13 and is minutes per model) -- and, where ORT's own int8 kernels are
exact, with those too.  The static QDQ models are compared with ORT running the QDQ
graph unfused (``session.disable_quant_qdq``: float Conv/MatMul between the Q/DQ pairs,
no int8 kernels) on hosts where its fused int8 kernels are not exact.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from host_isa import ort_integer_exact
from onnx_cases import plan_all_on

from hetpart import compiler, models
from hetpart.importer import load
from hetpart.runtime import Session

quantization = pytest.importorskip("onnxruntime.quantization")


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for i in (i for i in model.graph.input if i.name not in inits):
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            out[i.name] = rng.integers(0, 100, shape).astype(np.int64)
    return out


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, model):
        self._feeds = iter([_feeds(model, seed) for seed in range(8)])

    def get_next(self):
        return next(self._feeds, None)


def _quantize(name: str, mode: str, tmp_path) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(float model, ORT-quantised model) of zoo model ``name`` (small)."""
    fp = models.build(name, small=True)
    src, dst = tmp_path / f"{name}.onnx", tmp_path / f"{name}.{mode}.onnx"
    models.save(fp, src)
    if mode == "static":
        quantization.quantize_static(str(src), str(dst), _Calibration(fp), quant_format=quantization.QuantFormat.QDQ)
    else:
        quantization.quantize_dynamic(str(src), str(dst))
    return fp, onnx.load(str(dst))


def _ort(model: onnx.ModelProto, feeds, options: ort.SessionOptions | None = None) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


FLOAT_EXACT = 2 ** 24
"""Integers of magnitude below this are exact in float32, so a float Conv whose every
partial sum is an integer below it computes ConvInteger exactly, in any order."""


def _exact_integer_contractions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each MatMulInteger made ``Cast(MatMul(a - az, b - bz) in float64)``
    and each ConvInteger ``Cast(Conv(x - xz, w - wz) in float32)`` (ORT has no float64
    Conv; checked exact: every partial sum an integer below :data:`FLOAT_EXACT`).
    in: a dynamically quantised model (weights and their zero points initializers, the
    activations' zero points scalars). out: a model ORT runs with exact integer sums.
    invariant: the contractions' int32 outputs are the true integer products."""
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type not in ("MatMulInteger", "ConvInteger"):
            nodes.append(n)
            continue
        conv = n.op_type == "ConvInteger"
        dtype, elem = (np.float32, onnx.TensorProto.FLOAT) if conv else (np.float64, onnx.TensorProto.DOUBLE)
        ins = list(n.input) + [""] * (4 - len(n.input))
        a, w, az, wz = ins
        assert w in inits and (not wz or wz in inits), f"{n.name}: weight not a constant"
        wv = inits[w].astype(np.int64)
        if wz:
            z = inits[wz].astype(np.int64)
            wv = wv - (z.reshape(-1, *[1] * (wv.ndim - 1)) if conv and z.ndim == 1 else z)
        if conv:
            per_out = np.abs(wv).reshape(wv.shape[0], -1).sum(axis=1) * 255  # |x - xz| <= 255
            assert per_out.max() < FLOAT_EXACT, f"{n.name}: float32 Conv would round"
        m.graph.initializer.append(numpy_helper.from_array(wv.astype(dtype), f"{n.name}_exact_w"))
        nodes.append(helper.make_node("Cast", [a], [f"{n.name}_exact_a"], to=elem))
        centered = f"{n.name}_exact_a"
        if az:
            nodes.append(helper.make_node("Cast", [az], [f"{n.name}_exact_az"], to=elem))
            nodes.append(helper.make_node("Sub", [centered, f"{n.name}_exact_az"], [f"{n.name}_exact_ac"]))
            centered = f"{n.name}_exact_ac"
        op = helper.make_node("Conv" if conv else "MatMul", [centered, f"{n.name}_exact_w"], [f"{n.name}_exact_y"])
        if conv:
            op.attribute.extend(n.attribute)
        nodes.append(op)
        nodes.append(helper.make_node("Cast", [f"{n.name}_exact_y"], list(n.output), to=onnx.TensorProto.INT32))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in m.graph.initializer if t.name in used]  # the int8 weights now unread
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    onnx.checker.check_model(m)
    return m


def _hetpart(model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    graph = load(model)
    with Session(compiler.compile(plan_all_on(graph, "cpu"), progress=False)) as s:
        got = s.run(feeds)
    return [got[o.name] for o in model.graph.output]


def _output_steps(model: onnx.ModelProto) -> list[float | None]:
    """Per graph output: the scale of the DequantizeLinear producing it (None: not one)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    steps = []
    for o in model.graph.output:
        n = producer.get(o.name)
        steps.append(float(np.max(inits[n.input[1]])) if n is not None and n.op_type == "DequantizeLinear"
                     and n.input[1] in inits else None)
    return steps


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


SLOW = pytest.mark.slow
"""The heavy models (an import and a compile of 40-80 kernels, 7-15 s each alone) leave the
fast loop: the mlp (and for the dynamic path bert, whose attention has MatMulInteger of two
activations) stay in it, and ConvInteger / QDQ convolutions have their fast op-level tests
(test_importer_quantized.py, test_importer_qdq_conv.py).  CI runs them all."""


@pytest.mark.parametrize("name", ["mlp", pytest.param("mobilenet", marks=SLOW), "bert",
                                  pytest.param("gpt2", marks=SLOW)])
def test_dynamic_quantized_model_matches_onnxruntime(name, tmp_path):
    _, q = _quantize(name, "dynamic", tmp_path)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(q)
    feeds = _feeds(q, 100)
    got = _hetpart(q, feeds)
    references = [_ort(_exact_integer_contractions(q), feeds)]
    if ort_integer_exact(np.uint8, np.int8):  # ORT's own int8 kernels, where exact
        references.append(_ort(q, feeds))
    for want_all in references:
        for g, want in zip(got, want_all):
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("name", ["mlp", pytest.param("mobilenet", marks=SLOW)])
def test_static_qdq_model_is_within_one_step_of_onnxruntime(name, tmp_path):
    _, q = _quantize(name, "static", tmp_path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(q)
    feeds = _feeds(q, 100)
    options = ort.SessionOptions()
    if not ort_integer_exact(np.uint8, np.int8):  # QDQ as written: no saturating int8 kernels
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    for got, want, step in zip(_hetpart(q, feeds), _ort(q, feeds, options), _output_steps(q)):
        assert step is not None
        assert np.abs(got - want).max() <= step * 1.001


@SLOW
def test_static_qdq_bert_is_as_accurate_as_onnxruntime_int8(tmp_path):
    """Against ORT running the QDQ graph as written (no fusion into its int8 kernels,
    the semantics hetpart runs): within a few steps of the output grid; against the
    float model: no further off than ORT's int8 result is."""
    fp, q = _quantize("bert", "static", tmp_path)
    feeds = _feeds(q, 100)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    as_written = ort.InferenceSession(q.SerializeToString(), plain, providers=["CPUExecutionProvider"]).run(None, feeds)
    outputs = zip(_hetpart(q, feeds), as_written, _ort(q, feeds), _ort(fp, feeds), _output_steps(q))
    for got, written, int8, ref, step in outputs:
        if step is not None:
            assert np.abs(got - written).max() <= 3 * step
        assert np.abs(got - ref).max() <= 1.5 * np.abs(int8 - ref).max()
