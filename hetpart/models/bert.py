"""A BERT encoder (BERT-base by default), spelled with the ops an opset-17 export uses.

Embeddings: token and position tables looked up with ``Gather``, summed, then
``LayerNormalization``.  Each of ``layers`` post-LN encoder layers has multi-head
self-attention (MatMul+Add for Q, K and V; Reshape/Transpose into heads; Q.K^T
scaled by 1/sqrt(head_dim); Softmax; times V; heads merged; output projection;
residual; LayerNorm) and a GELU feed-forward block (erf-form GELU; residual;
LayerNorm).  A pooler (first token -> Gemm -> Tanh) gives ``pooled_output``.

Input ``input_ids`` int64 [batch, seq_len]; outputs ``last_hidden_state``
[batch, seq_len, hidden] and ``pooled_output`` [batch, hidden].  There is no
attention mask and no token-type input (every token attends to every token).

Full: 12 layers, hidden 768, 12 heads, FFN 3072, seq 128, vocab 30522 (~109M
parameters).  Small: 2 layers, hidden 64, 2 heads, FFN 256, seq 16, vocab 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register

# BERT's initializer_range: the std of its embedding tables.
EMBEDDING_STD = 0.02


@dataclass(frozen=True)
class BertConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    seq_len: int = 128
    vocab: int = 30522


FULL = BertConfig()
SMALL = BertConfig(layers=2, hidden=64, heads=2, intermediate=256, seq_len=16, vocab=1000)


@register("bert", "BERT encoder (BERT-base by default) with a pooler", full=FULL, small=SMALL)
def build_bert(cfg: BertConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("bert", seed)
    ids = b.input("input_ids", (batch, cfg.seq_len), dtype="int64", index_limit=cfg.vocab)
    x = _embeddings(b, ids, cfg)
    for i in range(cfg.layers):
        x = _encoder_layer(b, x, f"encoder.layer.{i}", cfg, batch)
    return b.finish({"last_hidden_state": x, "pooled_output": _pooler(b, x, cfg)})


def _embeddings(b: GraphBuilder, ids: str, cfg: BertConfig) -> str:
    words = b.weight("embeddings.word_embeddings.weight", (cfg.vocab, cfg.hidden), EMBEDDING_STD)
    positions = b.weight(
        "embeddings.position_embeddings.weight", (cfg.seq_len, cfg.hidden), EMBEDDING_STD
    )
    x = b.op("Gather", [words, ids], "embeddings.word_embeddings", axis=0)
    # Position ids are 0..seq_len-1 for every sequence: a constant, broadcast over batch.
    pos_ids = b.const("embeddings.position_ids", list(range(cfg.seq_len)))
    pos = b.op("Gather", [positions, pos_ids], "embeddings.position_embeddings", axis=0)
    x = b.op("Add", [x, pos], "embeddings.add")
    return b.layernorm(x, "embeddings.LayerNorm", cfg.hidden)


def _encoder_layer(b: GraphBuilder, x: str, name: str, cfg: BertConfig, batch: int) -> str:
    attn = _self_attention(b, x, f"{name}.attention.self", cfg, batch)
    attn = b.dense(attn, f"{name}.attention.output.dense", cfg.hidden, cfg.hidden)
    attn = b.op("Add", [attn, x], f"{name}.attention.output.residual")
    x = b.layernorm(attn, f"{name}.attention.output.LayerNorm", cfg.hidden)
    y = b.dense(x, f"{name}.intermediate.dense", cfg.hidden, cfg.intermediate, gain=2.0)
    y = b.gelu(y, f"{name}.intermediate.gelu")
    y = b.dense(y, f"{name}.output.dense", cfg.intermediate, cfg.hidden)
    y = b.op("Add", [y, x], f"{name}.output.residual")
    return b.layernorm(y, f"{name}.output.LayerNorm", cfg.hidden)


def _self_attention(b: GraphBuilder, x: str, name: str, cfg: BertConfig, batch: int) -> str:
    """Multi-head scaled dot-product attention; returns the merged heads [B, S, H]."""
    head_dim = cfg.hidden // cfg.heads
    split = (batch, cfg.seq_len, cfg.heads, head_dim)

    def heads(kind: str, perm: tuple[int, ...]) -> str:
        t = b.dense(x, f"{name}.{kind}", cfg.hidden, cfg.hidden)
        t = b.reshape(t, f"{name}.{kind}.split_heads", split)
        return b.transpose(t, f"{name}.{kind}.transpose", perm)

    q = heads("query", (0, 2, 1, 3))  # [B, heads, S, d]
    k = heads("key", (0, 2, 3, 1))  # [B, heads, d, S]: transposed for Q.K^T
    v = heads("value", (0, 2, 1, 3))  # [B, heads, S, d]
    scores = b.op("MatMul", [q, k], f"{name}.scores")
    scale = b.const(f"const.inv_sqrt_head_dim_{head_dim}", 1.0 / math.sqrt(head_dim))
    scores = b.op("Mul", [scores, scale], f"{name}.scale")
    probs = b.op("Softmax", [scores], f"{name}.softmax", axis=-1)
    ctx = b.op("MatMul", [probs, v], f"{name}.context")
    ctx = b.transpose(ctx, f"{name}.merge_heads.transpose", (0, 2, 1, 3))
    return b.reshape(ctx, f"{name}.merge_heads", (batch, cfg.seq_len, cfg.hidden))


def _pooler(b: GraphBuilder, x: str, cfg: BertConfig) -> str:
    """BERT's pooler: the first ([CLS]) token through a dense layer and tanh."""
    first = b.op("Gather", [x, b.const("const.zero", 0)], "pooler.first_token", axis=1)
    pooled = b.linear(first, "pooler.dense", cfg.hidden, cfg.hidden, gain=1.0)
    return b.op("Tanh", [pooled], "pooler.activation")


def _validate(cfg: BertConfig) -> None:
    check(min(cfg.layers, cfg.hidden, cfg.heads, cfg.intermediate, cfg.seq_len, cfg.vocab) >= 1,
          f"bert: all sizes must be >= 1, got {cfg}")
    check(cfg.hidden % cfg.heads == 0,
          f"bert: hidden ({cfg.hidden}) must be a multiple of heads ({cfg.heads})")
