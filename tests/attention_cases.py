"""Attention cases shared by the bf16 attention tests: the two batched matmuls of a BERT layer lowered
for an all-CUDA ``cuda=bf16`` build, the inputs their emulated schedules are fed, and the check that
an emulated schedule computes what the unscheduled kernel does; ``onnx_attention`` /
``attention_feeds``: an ONNX attention block as HF and torchvision export it (scale by Mul, Div or
on Q; optional mask, head dim, a second reader of the scores) and its inputs; ``masked_attention`` /
``masked_feeds``: transformers' eager BERT / DistilBERT self-attention with an ``attention_mask``
input and its inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper

from hetpart import load, models
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision as lp
from hetpart.importer import low_precision_attention as lpq

from onnx_cases import model
from precision_cases import all_on
from tir_loops import serial_everywhere


def attention_bmms(seq_len: int, hidden: int, heads: int, storage: bool):
    """``(lowered graph, [Q K^T kernel, P V kernel])`` of the zoo's BERT layer lowered for an
    all-CUDA ``cuda=bf16`` build (default switches; Q, K, V in bf16 with ``storage``)."""
    graph = load(models.build("bert", True, layers=1, batch=1, seq_len=seq_len, hidden=hidden, heads=heads,
                              intermediate=4 * hidden, vocab=1000))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", storage)
        lowered = lower_plan_weights(graph, all_on(graph, "cuda"), Precision(cuda="bf16"))
    bmms = [k for k in lowered.kernels.values() if k.op_class == "matmul" and len(k.inputs) == 2 and not k.param_bytes]
    assert len(bmms) == 2
    return lowered, bmms


def bf16_value(shape, dtype, rng):
    """Standard normal (negatives), a tenth exactly zero, rounded to bf16 where ``dtype`` is."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = 0
    return lp.to_low(x, "bfloat16") if dtype == "bfloat16" else x


def assert_schedule_computes_kernel(func, scheduled, seed: int) -> None:
    """``scheduled`` (its tensor-core intrinsics emulated, every loop made serial) built for the CPU
    computes ``func``'s result on :func:`bf16_value` inputs: within 1e-5 for a float32 output, one
    bf16 rounding (2^-7) for a bf16 one."""
    rng = np.random.default_rng(seed)
    args = [bf16_value([int(d) for d in p.shape], str(p.dtype), rng) for p in func.params[:-1]]
    out = func.params[-1]
    results = []
    for f in (func, serial_everywhere(scheduled)):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
        tensors = [tvm.runtime.tensor(x) for x in args]
        tensors.append(tvm.runtime.empty([int(d) for d in out.shape], str(out.dtype)))
        lib["main"](*tensors)
        results.append(np.asarray(tensors[-1].numpy(), np.float32))
    want, got = results
    rtol = 1e-5 if str(out.dtype) == "float32" else 2 ** -7  # a bf16 output: one rounding either way
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


T = 40  # onnx_attention's default tokens


def onnx_attention(scale: str = "mul", heads: int = 2, hd: int = 64, mask: bool = False, extra_use: bool = False,
               seed: int = 0, tokens: int = T):
    """``x [1, T, heads*hd]`` -> Q, K, V projections (K without bias) -> heads -> attention -> out proj.
    ``scale``: "mul" (scores * c), "div" (scores / sqrt(hd)), "pre" (Q * c, scores unscaled);
    ``mask``: an additive mask input ``m [1, 1, T, T]`` on the scores; ``extra_use``: the scores
    are a model output too; ``tokens``: T."""
    T = tokens
    rng = np.random.default_rng(seed)
    d = heads * hd
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    inits = {"wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d),
             "bq": rng.standard_normal(d).astype(np.float32), "bv": rng.standard_normal(d).astype(np.float32),
             "shape": np.array([1, T, heads, hd], np.int64), "back": np.array([1, T, d], np.int64),
             "c": np.array(hd ** -0.5, np.float32), "root": np.array(hd ** 0.5, np.float32)}
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q_mm"]), n("Add", ["q_mm", "bq"], ["q0"]),
             n("MatMul", ["x", "wk"], ["k"]), n("MatMul", ["x", "wv"], ["v_mm"]), n("Add", ["v_mm", "bv"], ["v"])]
    q = "q0"
    if scale == "pre":
        nodes.append(n("Mul", ["q0", "c"], ["q"]))
        q = "q"
    for name, src, perm in (("qh", q, [0, 2, 1, 3]), ("kh", "k", [0, 2, 1, 3]), ("vh", "v", [0, 2, 1, 3])):
        nodes += [n("Reshape", [src, "shape"], [name + "_r"]), n("Transpose", [name + "_r"], [name], perm=perm)]
    nodes += [n("Transpose", ["kh"], ["khT"], perm=[0, 1, 3, 2]), n("MatMul", ["qh", "khT"], ["s"])]
    s = "s"
    if scale in ("mul", "div"):
        nodes.append(n("Mul" if scale == "mul" else "Div", ["s", "c" if scale == "mul" else "root"], ["s2"]))
        s = "s2"
    inputs, outputs = [("x", (1, T, d), np.float32)], [("y", (1, T, d), np.float32)]
    if mask:
        nodes.append(n("Add", [s, "m"], ["sm"]))
        inputs.append(("m", (1, 1, T, T), np.float32))
        s = "sm"
    if extra_use:
        outputs.append(("s", (1, heads, T, T), np.float32))
    nodes += [n("Softmax", [s], ["p"], axis=-1), n("MatMul", ["p", "vh"], ["o"]),
              n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), n("Reshape", ["ot", "back"], ["a"]),
              n("MatMul", ["a", "wo"], ["y"])]
    return model(nodes, inputs, outputs, inits)


def attention_feeds(d: int, seed: int = 1, mask: bool = False, tokens: int = T) -> dict:
    """x with negatives and zeros (every 5th element, one whole token); a 0/-1e4 mask."""
    T = tokens
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal((1, T, d))).astype(np.float32)
    x.flat[::5] = 0.0
    x[0, 3] = 0.0
    feeds = {"x": x}
    if mask:
        feeds["m"] = np.where(rng.random((1, 1, T, T)) < 0.2, -1e4, 0.0).astype(np.float32)
    return feeds


def masked_attention(style: str = "where", batch: int = 1, seq: int = 40, heads: int = 2, hd: int = 64, seed: int = 0,
                     fill: float | None = None):
    """Self-attention with a key-padding mask as torch.onnx (TorchScript exporter, opset 17) exports
    transformers' eager attention: input ``attention_mask [batch, seq]`` int64 (1 keep, 0 pad).
    ``style`` "where": DistilBERT (``scores.masked_fill((mask == 0).view(b, 1, 1, s).expand_as(scores),
    finfo.min)``: Equal -> Reshape -> Expand -> ``Where(mask, min, scores)``, q divided by sqrt(hd)
    before Q K^T); "add": BERT / RoBERTa (``(1 - mask[:, None, None, :].float()) * finfo.min`` added
    to ``Q K^T / sqrt(hd)``); ``fill``: the masked value (default ``finfo(float32).min``)."""
    rng = np.random.default_rng(seed)
    d = heads * hd
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    fmin = np.array(np.finfo(np.float32).min if fill is None else fill, np.float32)
    inits = {"wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d),
             "bq": rng.standard_normal(d).astype(np.float32), "bk": rng.standard_normal(d).astype(np.float32),
             "bv": rng.standard_normal(d).astype(np.float32),
             "shape": np.array([batch, seq, heads, hd], np.int64), "back": np.array([batch, seq, d], np.int64),
             "root": np.array(hd ** 0.5, np.float32), "fmin": fmin, "one": np.array(1.0, np.float32),
             "zero": np.array(0, np.int64), "mshape": np.array([batch, 1, 1, seq], np.int64),
             "sshape": np.array([batch, heads, seq, seq], np.int64),
             "ax1": np.array([1], np.int64), "ax2": np.array([2], np.int64)}
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q_mm"]), n("Add", ["q_mm", "bq"], ["q0"]),
             n("MatMul", ["x", "wk"], ["k_mm"]), n("Add", ["k_mm", "bk"], ["k"]),
             n("MatMul", ["x", "wv"], ["v_mm"]), n("Add", ["v_mm", "bv"], ["v"])]
    q = "q0"
    if style == "where":
        nodes.append(n("Div", ["q0", "root"], ["q1"]))
        q = "q1"
    for name, src, perm in (("qh", q, [0, 2, 1, 3]), ("kh", "k", [0, 2, 1, 3]), ("vh", "v", [0, 2, 1, 3])):
        nodes += [n("Reshape", [src, "shape"], [name + "_r"]), n("Transpose", [name + "_r"], [name], perm=perm)]
    nodes += [n("Transpose", ["kh"], ["khT"], perm=[0, 1, 3, 2]), n("MatMul", ["qh", "khT"], ["s"])]
    if style == "where":
        nodes += [n("Equal", ["attention_mask", "zero"], ["pad"]), n("Reshape", ["pad", "mshape"], ["pad4"]),
                  n("Expand", ["pad4", "sshape"], ["padx"]), n("Where", ["padx", "fmin", "s"], ["sm"])]
    else:
        nodes += [n("Div", ["s", "root"], ["s2"]), n("Unsqueeze", ["attention_mask", "ax1"], ["m1"]),
                  n("Unsqueeze", ["m1", "ax2"], ["m2"]), n("Cast", ["m2"], ["mf"], to=TensorProto.FLOAT),
                  n("Sub", ["one", "mf"], ["inv"]), n("Mul", ["inv", "fmin"], ["bias"]),
                  n("Add", ["s2", "bias"], ["sm"])]
    nodes += [n("Softmax", ["sm"], ["p"], axis=-1), n("MatMul", ["p", "vh"], ["o"]),
              n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), n("Reshape", ["ot", "back"], ["a"]),
              n("MatMul", ["a", "wo"], ["y"])]
    inputs = [("x", (batch, seq, d), np.float32), ("attention_mask", (batch, seq), np.int64)]
    return model(nodes, inputs, [("y", (batch, seq, d), np.float32)], inits)


def masked_feeds(batch: int = 1, seq: int = 40, d: int = 128, seed: int = 1, full_pad_row: bool = False) -> dict:
    """x with negatives and zeros; ``attention_mask`` padding a different tail per batch row (row 0
    keeps every key); ``full_pad_row``: the last batch row pads every key."""
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal((batch, seq, d))).astype(np.float32)
    x.flat[::5] = 0.0
    mask = np.ones((batch, seq), np.int64)
    for i in range(1, batch):
        mask[i, seq - (7 * i) % seq:] = 0
    if full_pad_row:
        mask[-1] = 0
    return {"x": x, "attention_mask": mask}
