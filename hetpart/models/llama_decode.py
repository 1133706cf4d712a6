"""The LLaMA-style decoder of :mod:`.llama` as served: a prefill over the prompt and
one decode step against a static KV cache (issue 19).

* ``llama_prefill``: :func:`.llama.build_llama` itself; full size TinyLlama-1.1B's
  shape (22 layers, hidden 2048, 32 query heads over 4 key/value heads, MLP 5632,
  vocab 32000, ~1.1B parameters, 4.4 GB of float32) over a 512-token prompt.
* ``llama_decode``: ONE generation step.  Inputs ``input_ids`` int64 [batch, 1], the
  token's ``position`` int64 [1] (``0 <= position < cache_len``), and per layer the
  cache ``past.<i>.key`` / ``past.<i>.value`` float32 [batch, kv_heads, cache_len,
  head_dim]; outputs ``logits`` [batch, 1, vocab] and ``present.<i>.key`` /
  ``present.<i>.value``, the caches with the new token's key and value written at
  ``position``.  The caches are an input and an output of the step, so a session can
  keep them on their device from one step to the next.

The step writes its position by a mask-select, ``Where(arange(cache_len) ==
position, new, past)``: elementwise, so it builds for every device (ScatterND /
ScatterElements are CPU kernels).  Attention reads the whole cache under the causal
mask ``key position > position -> lowest float``; positions not yet written are
masked out whatever they hold.  Rotary embeddings are those of ``position``.

The step's weights are drawn in the same order as :func:`.llama.build_llama`'s, so
the same config and seed give the same weights: a prompt run through the prefill
model and token by token through the decode step gives the same logits (tested).
Small: the llama small config with a 16-position cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.llama import EMBEDDING_STD, LlamaConfig, apply_rotary, build_llama, projection, rms_norm
from hetpart.models.llama import SMALL as LLAMA_SMALL
from hetpart.models.llama import _swiglu, _validate
from hetpart.models.registry import check, register

PREFILL_SEQ = 512
LLAMA_1B = LlamaConfig(layers=22, hidden=2048, heads=32, kv_heads=4, intermediate=5632, seq_len=PREFILL_SEQ,
                       vocab=32000)


@dataclass(frozen=True)
class DecodeConfig:
    layers: int = 22
    hidden: int = 2048
    heads: int = 32
    kv_heads: int = 4
    intermediate: int = 5632
    cache_len: int = 2048
    vocab: int = 32000
    rope_theta: float = 10000.0

    def llama(self) -> LlamaConfig:
        """The matching prefill config (one token)."""
        return LlamaConfig(self.layers, self.hidden, self.heads, self.kv_heads, self.intermediate, 1,
                           self.vocab, self.rope_theta)


DECODE_FULL = DecodeConfig()
DECODE_SMALL = DecodeConfig(layers=LLAMA_SMALL.layers, hidden=LLAMA_SMALL.hidden, heads=LLAMA_SMALL.heads,
                            kv_heads=LLAMA_SMALL.kv_heads, intermediate=LLAMA_SMALL.intermediate, cache_len=16,
                            vocab=LLAMA_SMALL.vocab)

register("llama_prefill", "LLaMA-style decoder at ~1.1B parameters (TinyLlama's shape), prefill of a "
         "512-token prompt", full=LLAMA_1B, small=LLAMA_SMALL)(build_llama)


@register("llama_decode", "one decode step of the LLaMA-style decoder against a static KV cache "
          "(2,048 positions; the caches are inputs and outputs)", full=DECODE_FULL, small=DECODE_SMALL)
def build_llama_decode(cfg: DecodeConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(dataclasses.replace(cfg.llama(), seq_len=cfg.cache_len))
    check(cfg.cache_len >= 1, f"llama_decode: cache_len must be >= 1, got {cfg.cache_len}")
    b = GraphBuilder("llama_decode", seed)
    d = cfg.hidden // cfg.heads
    ids = b.input("input_ids", (batch, 1), dtype="int64", index_limit=cfg.vocab)
    position = b.input("position", (1,), dtype="int64", index_limit=cfg.cache_len)
    table = b.weight("embed_tokens.weight", (cfg.vocab, cfg.hidden), EMBEDDING_STD)
    x = b.op("Gather", [table, ids], "embed_tokens", axis=0)
    cos, sin = _rotary_at(b, position, d, cfg.rope_theta)
    hit, mask = _cache_masks(b, position, cfg.cache_len)
    outputs = {}
    for i in range(cfg.layers):
        past = (b.input(f"past.{i}.key", (batch, cfg.kv_heads, cfg.cache_len, d)),
                b.input(f"past.{i}.value", (batch, cfg.kv_heads, cfg.cache_len, d)))
        x, key, value = _decode_layer(b, x, f"layers.{i}", cfg, batch, cos, sin, hit, mask, past)
        outputs[f"present.{i}.key"], outputs[f"present.{i}.value"] = key, value
    x = rms_norm(b, x, "norm", cfg.hidden)
    return b.finish({"logits": projection(b, x, "lm_head", cfg.hidden, cfg.vocab), **outputs})


def _rotary_at(b: GraphBuilder, position: str, head_dim: int, theta: float) -> tuple[str, str]:
    """cos and sin [1, head_dim] of ``position x inv_freq``, duplicated over the halves."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    pos = b.op("Cast", [position], "rotary_emb.position", to=onnx.TensorProto.FLOAT)
    pos = b.op("Unsqueeze", [pos, b.const("const.axes_1", [1])], "rotary_emb.position_column")
    freqs = b.op("Mul", [pos, b.const(f"rotary_emb.inv_freq_{head_dim}", inv_freq[None, :])], "rotary_emb.freqs")
    emb = b.op("Concat", [freqs, freqs], "rotary_emb.emb", axis=-1)
    return b.op("Cos", [emb], "rotary_emb.cos"), b.op("Sin", [emb], "rotary_emb.sin")


def _cache_masks(b: GraphBuilder, position: str, cache_len: int) -> tuple[str, str]:
    """(``hit`` bool [1, 1, cache_len, 1]: the slot the step writes; ``mask`` float
    [cache_len]: 0 for keys at or before ``position``, float32's lowest after it)."""
    slots = b.const(f"cache.positions_{cache_len}", np.arange(cache_len))
    hit = b.op("Equal", [slots, position], "cache.hit")
    hit = b.reshape(hit, "cache.hit_slots", (1, 1, cache_len, 1))
    future = b.op("Greater", [slots, position], "cache.future")
    lowest = b.const("const.float32_lowest", float(np.finfo(np.float32).min))
    return hit, b.op("Where", [future, lowest, b.const("const.zero_f", 0.0)], "cache.mask")


def _decode_layer(b, x, name, cfg: DecodeConfig, batch, cos, sin, hit, mask, past):
    h = rms_norm(b, x, f"{name}.input_layernorm", cfg.hidden)
    attn, key, value = _decode_attention(b, h, f"{name}.self_attn", cfg, batch, cos, sin, hit, mask, past)
    x = b.op("Add", [x, attn], f"{name}.residual1")
    h = rms_norm(b, x, f"{name}.post_attention_layernorm", cfg.hidden)
    return b.op("Add", [x, _swiglu(b, h, f"{name}.mlp", cfg.llama())], f"{name}.residual2"), key, value


def _decode_attention(b, x, name, cfg: DecodeConfig, batch, cos, sin, hit, mask, past):
    d = cfg.hidden // cfg.heads

    def heads(kind: str, n: int) -> str:
        t = projection(b, x, f"{name}.{kind}_proj", cfg.hidden, n * d)
        t = b.reshape(t, f"{name}.{kind}.split_heads", (batch, 1, n, d))
        return b.transpose(t, f"{name}.{kind}.transpose", (0, 2, 1, 3))  # [B, n, 1, d]

    q = apply_rotary(b, heads("q", cfg.heads), f"{name}.q.rope", cos, sin, d)
    k = apply_rotary(b, heads("k", cfg.kv_heads), f"{name}.k.rope", cos, sin, d)
    v = heads("v", cfg.kv_heads)
    # The new token's key/value written into its slot; every other slot is the past's.
    key = b.op("Where", [hit, k, past[0]], f"{name}.k.cache_write")
    value = b.op("Where", [hit, v, past[1]], f"{name}.v.cache_write")
    keys = _repeat_kv(b, key, f"{name}.k", cfg, batch)
    values = _repeat_kv(b, value, f"{name}.v", cfg, batch)
    kt = b.transpose(keys, f"{name}.k.transpose_t", (0, 1, 3, 2))
    scores = b.op("MatMul", [q, kt], f"{name}.scores")  # [B, heads, 1, cache_len]
    scores = b.op("Mul", [scores, b.const(f"const.inv_sqrt_{d}", 1.0 / math.sqrt(d))], f"{name}.scale")
    scores = b.op("Add", [scores, mask], f"{name}.mask")
    probs = b.op("Softmax", [scores], f"{name}.softmax", axis=-1)
    ctx = b.op("MatMul", [probs, values], f"{name}.context")  # [B, heads, 1, d]
    ctx = b.transpose(ctx, f"{name}.merge_heads.transpose", (0, 2, 1, 3))
    ctx = b.reshape(ctx, f"{name}.merge_heads", (batch, 1, cfg.hidden))
    return projection(b, ctx, f"{name}.o_proj", cfg.hidden, cfg.hidden), key, value


def _repeat_kv(b, t, name, cfg: DecodeConfig, batch) -> str:
    """[B, kv, L, d] -> [B, heads, L, d]: each key/value head serves heads/kv queries."""
    rep, d, s = cfg.heads // cfg.kv_heads, cfg.hidden // cfg.heads, cfg.cache_len
    t = b.op("Unsqueeze", [t, b.const("const.axes_2", [2])], f"{name}.repeat.unsqueeze")
    t = b.op("Expand", [t, b.const(f"{name}.repeat.shape", [batch, cfg.kv_heads, rep, s, d])],
             f"{name}.repeat.expand")
    return b.reshape(t, f"{name}.repeat", (batch, cfg.heads, s, d))
