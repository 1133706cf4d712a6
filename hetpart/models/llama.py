"""A LLaMA-style decoder, spelled with the ops torch.onnx's opset-17 export of
HuggingFace's ``LlamaModel`` uses.

Per layer (pre-norm): RMSNorm (``Pow(x, 2)`` -> ``ReduceMean`` -> ``Add eps`` ->
``Sqrt`` -> ``Reciprocal`` -> ``Mul``, then the weight), grouped-query attention
(``heads`` query heads sharing ``kv_heads`` key/value heads, repeated by
``Unsqueeze`` -> ``Expand`` -> ``Reshape``), rotary position embeddings (cos/sin of
``positions x inv_freq`` computed in the graph, ``rotate_half`` as ``Slice`` ->
``Neg`` -> ``Concat``), a causal mask (``Greater`` of key over query positions ->
``Where`` with float32's lowest value) added to the scores, and a SwiGLU MLP
(``x * Sigmoid(x)`` of the gate times the up projection).  Projections have no bias.

Input ``input_ids`` int64 [batch, seq_len]; output ``logits`` [batch, seq_len, vocab].

Full: 8 layers, hidden 512, 8 heads over 2 key/value heads, MLP 1408, seq 128,
vocab 32000 (the corpus's small LLaMA config).  Small: 2 layers, hidden 64, 4 heads
over 2, MLP 128, seq 16, vocab 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register

EMBEDDING_STD = 0.02


@dataclass(frozen=True)
class LlamaConfig:
    layers: int = 8
    hidden: int = 512
    heads: int = 8
    kv_heads: int = 2
    intermediate: int = 1408
    seq_len: int = 128
    vocab: int = 32000
    rope_theta: float = 10000.0


FULL = LlamaConfig()
SMALL = LlamaConfig(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, seq_len=16, vocab=256)


@register("llama", "LLaMA-style decoder: RMSNorm, rotary embeddings, grouped-query causal "
          "attention, SwiGLU", full=FULL, small=SMALL)
def build_llama(cfg: LlamaConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("llama", seed)
    x, cos, sin, mask = decoder_inputs(b, cfg, batch)
    for i in range(cfg.layers):
        x = _decoder_layer(b, x, f"layers.{i}", cfg, batch, cos, sin, mask)
    x = rms_norm(b, x, "norm", cfg.hidden)
    return b.finish({"logits": projection(b, x, "lm_head", cfg.hidden, cfg.vocab)})


# --- pieces shared with other decoders (t5 uses rms_norm) -----------------------------------
def decoder_inputs(b: GraphBuilder, cfg, batch: int) -> tuple[str, str, str, str]:
    """What a LLaMA-style decoder's layers read (llama, moe): the graph input ``input_ids
    [batch, seq_len]`` int64 and its embedding ``x [batch, seq_len, hidden]``, the rotary tables
    ``cos``, ``sin`` (:func:`rotary_tables`) and the causal mask (:func:`causal_mask`), as
    ``(x, cos, sin, mask)``.  ``cfg``: any config with ``vocab``, ``hidden``, ``heads``,
    ``seq_len`` and ``rope_theta`` (:class:`LlamaConfig`, ``MoEConfig``)."""
    ids = b.input("input_ids", (batch, cfg.seq_len), dtype="int64", index_limit=cfg.vocab)
    table = b.weight("embed_tokens.weight", (cfg.vocab, cfg.hidden), EMBEDDING_STD)
    x = b.op("Gather", [table, ids], "embed_tokens", axis=0)
    cos, sin = rotary_tables(b, "rotary_emb", cfg.seq_len, cfg.hidden // cfg.heads, cfg.rope_theta)
    mask = causal_mask(b, "causal_mask", cfg.seq_len)
    return x, cos, sin, mask


def rms_norm(b: GraphBuilder, x: str, name: str, dim: int, eps: float = 1e-6) -> str:
    """``x * rsqrt(mean(x**2) + eps) * weight`` as exported: the square is ``Pow(x, 2)``."""
    sq = b.op("Pow", [x, b.const("const.two_f", 2.0)], f"{name}.pow")
    var = b.op("ReduceMean", [sq], f"{name}.mean", axes=[-1], keepdims=1)
    var = b.op("Add", [var, b.const(f"const.eps_{eps:g}", eps)], f"{name}.add_eps")
    inv = b.op("Reciprocal", [b.op("Sqrt", [var], f"{name}.sqrt")], f"{name}.rsqrt")
    y = b.op("Mul", [x, inv], f"{name}.normalize")
    return b.op("Mul", [b.weight(f"{name}.weight", (dim,), 0.05, mean=1.0), y], name)


def projection(b: GraphBuilder, x: str, name: str, in_f: int, out_f: int, gain: float = 1.0) -> str:
    """A bias-free linear layer: ``MatMul`` by a [in, out] weight."""
    w = b.weight(f"{name}.weight", (in_f, out_f), math.sqrt(gain / in_f))
    return b.op("MatMul", [x, w], name)


def rotary_tables(b: GraphBuilder, name: str, seq: int, head_dim: int, theta: float) -> tuple[str, str]:
    """cos and sin [seq, head_dim] of ``positions x inv_freq``, duplicated over the
    two halves, computed in the graph as the export does."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    pos = b.const(f"{name}.positions_{seq}", np.arange(seq, dtype=np.float32)[:, None])
    freqs = b.op("Mul", [pos, b.const(f"{name}.inv_freq_{head_dim}", inv_freq[None, :])], f"{name}.freqs")
    emb = b.op("Concat", [freqs, freqs], f"{name}.emb", axis=-1)
    return b.op("Cos", [emb], f"{name}.cos"), b.op("Sin", [emb], f"{name}.sin")


def apply_rotary(b: GraphBuilder, x: str, name: str, cos: str, sin: str, head_dim: int) -> str:
    """``x * cos + rotate_half(x) * sin``; rotate_half = concat(-x2, x1) of the halves."""
    half = head_dim // 2
    x1 = b.op("Slice", [x, b.const("const.slice0", [0]), b.const(f"const.slice{half}", [half]),
                        b.const("const.axis_m1", [-1])], f"{name}.x1")
    x2 = b.op("Slice", [x, b.const(f"const.slice{half}", [half]), b.const("const.slice_end", [2**62]),
                        b.const("const.axis_m1", [-1])], f"{name}.x2")
    rotated = b.op("Concat", [b.op("Neg", [x2], f"{name}.neg"), x1], f"{name}.rotate_half", axis=-1)
    return b.op("Add", [b.op("Mul", [x, cos], f"{name}.mul_cos"),
                        b.op("Mul", [rotated, sin], f"{name}.mul_sin")], name)


def causal_mask(b: GraphBuilder, name: str, seq: int) -> str:
    """[seq, seq]: 0 where a query may see the key (key <= query), float32's lowest
    value elsewhere, from ``Greater`` of the position grids and ``Where``."""
    rows = b.const(f"{name}.query_positions_{seq}", np.arange(seq)[:, None])
    cols = b.const(f"{name}.key_positions_{seq}", np.arange(seq)[None, :])
    future = b.op("Greater", [cols, rows], f"{name}.future")
    lowest = b.const("const.float32_lowest", float(np.finfo(np.float32).min))
    return b.op("Where", [future, lowest, b.const("const.zero_f", 0.0)], name)


# --- the decoder layer ---------------------------------------------------------------------
def _decoder_layer(b, x, name, cfg: LlamaConfig, batch, cos, sin, mask) -> str:
    h = rms_norm(b, x, f"{name}.input_layernorm", cfg.hidden)
    x = b.op("Add", [x, _attention(b, h, f"{name}.self_attn", cfg, batch, cos, sin, mask)], f"{name}.residual1")
    h = rms_norm(b, x, f"{name}.post_attention_layernorm", cfg.hidden)
    return b.op("Add", [x, _swiglu(b, h, f"{name}.mlp", cfg)], f"{name}.residual2")


def _attention(b, x, name, cfg: LlamaConfig, batch, cos, sin, mask) -> str:
    d = cfg.hidden // cfg.heads
    s = cfg.seq_len

    def heads(kind: str, n: int) -> str:
        t = projection(b, x, f"{name}.{kind}_proj", cfg.hidden, n * d)
        t = b.reshape(t, f"{name}.{kind}.split_heads", (batch, s, n, d))
        return b.transpose(t, f"{name}.{kind}.transpose", (0, 2, 1, 3))  # [B, n, S, d]

    q = apply_rotary(b, heads("q", cfg.heads), f"{name}.q.rope", cos, sin, d)
    k = apply_rotary(b, heads("k", cfg.kv_heads), f"{name}.k.rope", cos, sin, d)
    k = _repeat_kv(b, k, f"{name}.k", cfg, batch)
    v = _repeat_kv(b, heads("v", cfg.kv_heads), f"{name}.v", cfg, batch)
    kt = b.transpose(k, f"{name}.k.transpose_t", (0, 1, 3, 2))
    scores = b.op("MatMul", [q, kt], f"{name}.scores")
    scores = b.op("Mul", [scores, b.const(f"const.inv_sqrt_{d}", 1.0 / math.sqrt(d))], f"{name}.scale")
    scores = b.op("Add", [scores, mask], f"{name}.mask")
    probs = b.op("Softmax", [scores], f"{name}.softmax", axis=-1)
    ctx = b.op("MatMul", [probs, v], f"{name}.context")
    ctx = b.transpose(ctx, f"{name}.merge_heads.transpose", (0, 2, 1, 3))
    ctx = b.reshape(ctx, f"{name}.merge_heads", (batch, s, cfg.hidden))
    return projection(b, ctx, f"{name}.o_proj", cfg.hidden, cfg.hidden)


def _repeat_kv(b, t, name, cfg: LlamaConfig, batch) -> str:
    """[B, kv, S, d] -> [B, heads, S, d]: each key/value head serves heads/kv queries."""
    rep = cfg.heads // cfg.kv_heads
    d, s = cfg.hidden // cfg.heads, cfg.seq_len
    t = b.op("Unsqueeze", [t, b.const("const.axes_2", [2])], f"{name}.repeat.unsqueeze")
    t = b.op("Expand", [t, b.const(f"{name}.repeat.shape", [batch, cfg.kv_heads, rep, s, d])], f"{name}.repeat.expand")
    return b.reshape(t, f"{name}.repeat", (batch, cfg.heads, s, d))


def _swiglu(b, x, name, cfg: LlamaConfig) -> str:
    gate = projection(b, x, f"{name}.gate_proj", cfg.hidden, cfg.intermediate)
    up = projection(b, x, f"{name}.up_proj", cfg.hidden, cfg.intermediate)
    silu = b.op("Mul", [gate, b.op("Sigmoid", [gate], f"{name}.sigmoid")], f"{name}.silu")
    h = b.op("Mul", [silu, up], f"{name}.gated")
    return projection(b, h, f"{name}.down_proj", cfg.intermediate, cfg.hidden)


def _validate(cfg: LlamaConfig) -> None:
    check(min(cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.intermediate, cfg.seq_len, cfg.vocab) >= 1,
          f"llama: all sizes must be >= 1, got {cfg}")
    check(cfg.hidden % cfg.heads == 0 and (cfg.hidden // cfg.heads) % 2 == 0,
          f"llama: hidden ({cfg.hidden}) must be an even multiple of heads ({cfg.heads})")
    check(cfg.heads % cfg.kv_heads == 0,
          f"llama: heads ({cfg.heads}) must be a multiple of kv_heads ({cfg.kv_heads})")
