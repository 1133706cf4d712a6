"""A broadcast operand over a batch of planes that hold no whole vectors (issue 18, batch 8/32;
bench/results/cpu-b32-nets-2core.md): :func:`hetpart.kernels.analysis.parallel_vectorize`
with ``BROADCAST_ROWS_PAST_SUFFIX``.

Squeeze-excite's gate ``g[n, c] * x[n, c, h, w]`` on 14x14 / 7x7 planes at batch >= 2, and a
per-channel BatchNormalization + ReLU (``(x[n, c, h, w] - m[c]) / s[c] * a[c] + b[c]``,
densenet121's norm1 where no Concat precedes it) at any batch: ``h, w`` (196, 49) hold no
whole vectors but ``c, h, w`` do, so the nest was vectorised across channels, each lane
gathering its channel's operand (``c = i // 196``) -- 2-4x slower than ONNX Runtime at batch
8/32.  Now ``n, c`` stay outside and the plane is one contiguous loop.

Cases against ONNX Runtime with negatives and zeros (every 7th element 0), then the schedule:
no batch or channel index of the output block reads the innermost loop's variable.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from onnx import helper, numpy_helper

from onnx_cases import assert_matches, block_nests, onnxruntime_outputs, run_on

from hetpart import importer, kernels
from hetpart.kernels import analysis
from hetpart.targets import cpu_tvm_target

# name -> (kind, channels, plane, batch); channels a multiple of 16, so c*h*w holds whole
# vectors of 8 and 16 lanes while h*w does not (the case the switch is about)
CASES = {
    "se hard 96x14 batch 2": ("hard", 96, 14, 2),
    "se sigmoid 48x7 batch 3": ("sigmoid", 48, 7, 3),
    "bn relu 64x14 batch 1": ("bn", 64, 14, 1),
    "bn relu 32x7 batch 2": ("bn", 32, 7, 2),
}


def _model(kind: str, c: int, hw: int, batch: int, seed: int = 0) -> onnx.ModelProto:
    """``kind`` "hard"/"sigmoid": x -> GlobalAveragePool -> conv -> ReLU -> conv -> gate ->
    Mul(gate, x) (squeeze-excite as hetpart.models.mobilenet writes it); "bn":
    BatchNormalization -> ReLU.  Input and output ``x``/``y`` of [batch, c, hw, hw]."""
    rng = np.random.default_rng(seed)
    if kind == "bn":
        arrays = [("s", rng.uniform(0.5, 1.5, c)), ("b", rng.standard_normal(c) * 0.1),
                  ("m", rng.standard_normal(c) * 0.1), ("v", rng.uniform(0.5, 1.5, c))]
        nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-5),
                 helper.make_node("Relu", ["bn"], ["y"])]
    else:
        sq = max(4, c // 4)
        arrays = [("w1", rng.standard_normal((sq, c, 1, 1)) * 2 / np.sqrt(c)), ("b1", rng.standard_normal(sq) * 0.5),
                  ("w2", rng.standard_normal((c, sq, 1, 1)) * 2 / np.sqrt(sq)), ("b2", rng.standard_normal(c) * 0.5)]
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                 helper.make_node("Conv", ["p", "w1", "b1"], ["f1"]), helper.make_node("Relu", ["f1"], ["a1"]),
                 helper.make_node("Conv", ["a1", "w2", "b2"], ["f2"]),
                 helper.make_node("HardSigmoid", ["f2"], ["g"], alpha=1.0 / 6, beta=0.5) if kind == "hard"
                 else helper.make_node("Sigmoid", ["f2"], ["g"]),
                 helper.make_node("Mul", ["g", "x"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in arrays]
    shape = [batch, c, hw, hw]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _input(c: int, hw: int, batch: int) -> np.ndarray:
    x = (np.random.default_rng(1).standard_normal((batch, c, hw, hw)) * 3).astype(np.float32)
    x.flat[::7] = 0.0
    return x


@pytest.mark.parametrize("case", list(CASES))
def test_matches_onnxruntime(case):
    kind, c, hw, batch = CASES[case]
    m, x = _model(kind, c, hw, batch), _input(c, hw, batch)
    got = run_on(m, "cpu", {"x": x})["y"]
    want = onnxruntime_outputs(m, {"x": x})[0]
    assert (want < 0).any() == (kind != "bn") and (want == 0).any(), "negatives (SE) and zeros in the case"
    assert_matches(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), what=case)


def _output_block(m: onnx.ModelProto, shape: tuple[int, ...]):
    """(the block realize writing the model's output -- of ``shape`` -- the loops around it,
    outermost first, its scheduled kernel) for this host's target."""
    mod = kernels.schedule(importer.load(m).module, cpu_tvm_target())
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        out = func.params[-1].name
        found += [(r, loops, func) for r, loops in block_nests(func)
                  if r.block.name_hint != "root" and any(w.source.name == out for w in r.block.writes)
                  and tuple(int(d) for d in r.block.writes[0].source.shape) == shape]
    assert len(found) == 1, [f[2].script() for f in found]
    return found[0]


@pytest.mark.parametrize("case", list(CASES))
def test_channel_is_one_scalar_per_row(case):
    """The output block's batch and channel bindings read no variable of its innermost loop
    (before: a vector across channels, ``c = (i * lanes + lane) // (h*w)`` per lane)."""
    kind, c, hw, batch = CASES[case]
    realize, loops, func = _output_block(_model(kind, c, hw, batch), (batch, c, hw, hw))
    inner = loops[-1].loop_var
    for value in realize.iter_values[:-2]:  # n (where bound) and c
        used = []
        tvm_ffi.structural_walk(value, (tvm.tirx.Var, used.append))
        assert not any(v.same_as(inner) for v in used), func.script()


def test_switch_off_keeps_the_channel_vectors(monkeypatch):
    """With the switch off the batched SE gate is vectorised across channels as before (what
    the A/B's before side builds)."""
    monkeypatch.setattr(analysis, "BROADCAST_ROWS_PAST_SUFFIX", False)
    kind, c, hw, batch = CASES["se hard 96x14 batch 2"]
    _, loops, func = _output_block(_model(kind, c, hw, batch), (batch, c, hw, hw))
    assert loops[-1].kind == tvm.tirx.ForKind.VECTORIZED, func.script()
