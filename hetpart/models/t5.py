"""A T5 encoder, spelled with the ops torch.onnx's opset-17 export of HuggingFace's
``T5EncoderModel`` uses, with its relative position buckets computed in the graph.

Token embeddings (``Gather``), then per layer (pre-norm): T5's RMSNorm
(``Pow(x, 2)`` -> ``ReduceMean`` -> ... ; no mean subtraction, no bias), self-
attention without score scaling plus a learned relative position bias, residual,
RMSNorm, a ReLU feed-forward block, residual; a final RMSNorm.

The position bias is T5's log-bucketing (bidirectional): ``rel = key_pos -
query_pos``; half the buckets by sign (``Greater`` -> ``Cast`` -> ``Mul``); within
a half, distances below ``max_exact`` keep their own bucket, larger ones share
``max_exact + log(n / max_exact) / log(max_distance / max_exact) * (half -
max_exact)`` (``Log`` of a ``Cast`` to float, ``Cast`` back to int64, ``Min`` with
the last bucket), chosen by ``Where``; the buckets index a [buckets, heads] table.
Positions are counted from the ids (``CumSum`` of the non-padding mask, as
RoBERTa-style exports do), so the bucketing runs as kernels rather than being folded
away as constants.

Input ``input_ids`` int64 [batch, seq_len]; output ``last_hidden_state``.

Full: t5-small's encoder (6 layers, d_model 512, 8 heads of 64, d_ff 2048, seq 128,
vocab 32128, 32 buckets, max distance 128).  Small: 2 layers, d_model 64, 4 heads
of 16, d_ff 128, seq 16, vocab 256, 32 buckets, max distance 128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.llama import projection, rms_norm
from hetpart.models.registry import check, register

PAD_ID = 0


@dataclass(frozen=True)
class T5Config:
    layers: int = 6
    d_model: int = 512
    heads: int = 8
    d_kv: int = 64
    d_ff: int = 2048
    seq_len: int = 128
    vocab: int = 32128
    buckets: int = 32
    max_distance: int = 128


FULL = T5Config()
SMALL = T5Config(layers=2, d_model=64, heads=4, d_kv=16, d_ff=128, seq_len=16, vocab=256)


@register("t5enc", "T5 encoder: RMSNorm with Pow, relative position buckets (Log/Cast/Min/Where)",
          full=FULL, small=SMALL)
def build_t5_encoder(cfg: T5Config, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("t5enc", seed)
    ids = b.input("input_ids", (batch, cfg.seq_len), dtype="int64", index_limit=cfg.vocab)
    table = b.weight("shared.weight", (cfg.vocab, cfg.d_model), 1.0)
    x = b.op("Gather", [table, ids], "embed_tokens", axis=0)
    bias = _position_bias(b, ids, cfg)  # [B, heads, S, S], shared by every layer as in T5
    for i in range(cfg.layers):
        x = _layer(b, x, f"block.{i}", cfg, batch, bias)
    return b.finish({"last_hidden_state": rms_norm(b, x, "final_layer_norm", cfg.d_model)})


def _position_bias(b: GraphBuilder, ids: str, cfg: T5Config) -> str:
    name = "relative_attention_bias"
    i64 = {"to": onnx.TensorProto.INT64}
    keep = b.op("Not", [b.op("Equal", [ids, b.const("const.pad_id", PAD_ID)], f"{name}.is_pad")], f"{name}.keep")
    pos = b.op("CumSum", [b.op("Cast", [keep], f"{name}.keep_int", **i64), b.const("const.axis_1", 1)],
               f"{name}.positions")  # [B, S]
    query = b.op("Unsqueeze", [pos, b.const("const.axes_2", [2])], f"{name}.query")  # [B, S, 1]
    key = b.op("Unsqueeze", [pos, b.const("const.axes_1", [1])], f"{name}.key")  # [B, 1, S]
    rel = b.op("Sub", [key, query], f"{name}.relative")  # [B, S, S]
    half = cfg.buckets // 2
    exact = half // 2
    side = b.op("Cast", [b.op("Greater", [rel, b.const("const.zero_i", 0)], f"{name}.positive")],
                f"{name}.positive_int", **i64)
    side = b.op("Mul", [side, b.const(f"const.i{half}", half)], f"{name}.side")
    dist = b.op("Abs", [rel], f"{name}.distance")
    small = b.op("Less", [dist, b.const(f"const.i{exact}", exact)], f"{name}.is_small")
    ratio = b.op("Div", [b.op("Cast", [dist], f"{name}.distance_f", to=onnx.TensorProto.FLOAT),
                         b.const(f"const.f{exact}", float(exact))], f"{name}.ratio")
    scale = (half - exact) / math.log(cfg.max_distance / exact)
    large = b.op("Mul", [b.op("Log", [ratio], f"{name}.log"), b.const(f"{name}.log_scale", scale)],
                 f"{name}.log_scaled")
    large = b.op("Add", [b.op("Cast", [large], f"{name}.log_int", **i64), b.const(f"const.i{exact}", exact)],
                 f"{name}.large")
    large = b.op("Min", [large, b.const(f"const.i{half - 1}", half - 1)], f"{name}.large_capped")
    bucket = b.op("Add", [side, b.op("Where", [small, dist, large], f"{name}.within")], f"{name}.bucket")
    weights = b.weight(f"{name}.weight", (cfg.buckets, cfg.heads), 0.5)
    values = b.op("Gather", [weights, bucket], f"{name}.lookup", axis=0)  # [B, S, S, heads]
    return b.transpose(values, f"{name}.transpose", (0, 3, 1, 2))


def _layer(b, x, name, cfg: T5Config, batch, bias) -> str:
    h = rms_norm(b, x, f"{name}.layer.0.layer_norm", cfg.d_model)
    x = b.op("Add", [x, _attention(b, h, f"{name}.layer.0.SelfAttention", cfg, batch, bias)],
             f"{name}.residual1")
    h = rms_norm(b, x, f"{name}.layer.1.layer_norm", cfg.d_model)
    h = projection(b, h, f"{name}.layer.1.DenseReluDense.wi", cfg.d_model, cfg.d_ff, gain=2.0)
    h = b.op("Relu", [h], f"{name}.layer.1.DenseReluDense.relu")
    h = projection(b, h, f"{name}.layer.1.DenseReluDense.wo", cfg.d_ff, cfg.d_model)
    return b.op("Add", [x, h], f"{name}.residual2")


def _attention(b, x, name, cfg: T5Config, batch, bias) -> str:
    inner, s = cfg.heads * cfg.d_kv, cfg.seq_len

    def heads(kind: str, perm) -> str:
        t = projection(b, x, f"{name}.{kind}", cfg.d_model, inner)
        t = b.reshape(t, f"{name}.{kind}.split_heads", (batch, s, cfg.heads, cfg.d_kv))
        return b.transpose(t, f"{name}.{kind}.transpose", perm)

    # T5 folds 1/sqrt(d_kv) into its weight init; the scores are not scaled.
    scores = b.op("MatMul", [heads("q", (0, 2, 1, 3)), heads("k", (0, 2, 3, 1))], f"{name}.scores")
    scores = b.op("Add", [scores, bias], f"{name}.position_bias")
    probs = b.op("Softmax", [scores], f"{name}.softmax", axis=-1)
    ctx = b.op("MatMul", [probs, heads("v", (0, 2, 1, 3))], f"{name}.context")
    ctx = b.transpose(ctx, f"{name}.merge_heads.transpose", (0, 2, 1, 3))
    ctx = b.reshape(ctx, f"{name}.merge_heads", (batch, s, inner))
    return projection(b, ctx, f"{name}.o", inner, cfg.d_model)


def _validate(cfg: T5Config) -> None:
    check(min(cfg.layers, cfg.d_model, cfg.heads, cfg.d_kv, cfg.d_ff, cfg.seq_len, cfg.vocab) >= 1,
          f"t5enc: all sizes must be >= 1, got {cfg}")
    check(cfg.buckets >= 4 and cfg.buckets % 4 == 0 and cfg.max_distance > cfg.buckets // 4,
          f"t5enc: buckets must be a multiple of 4 (>= 4) and max_distance > buckets / 4, got {cfg}")
