"""A GPT-2 decoder, spelled with the ops torch.onnx's opset-17 export of
HuggingFace's ``GPT2Model`` uses.

Token and position embeddings (``Gather``), then per layer (pre-norm):
``LayerNormalization``, a fused QKV projection (``MatMul`` + ``Add`` to 3 x hidden,
``Split`` into Q, K, V), heads, scores scaled by 1/sqrt(head_dim), the causal mask
as the export spells GPT-2's ``bias`` buffer (a constant lower-triangular bool
[1, 1, seq, seq] -> ``Where(mask, scores, lowest)``), softmax, the output
projection and residual; then LayerNorm and the MLP with ``gelu_new``,
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))`` (the cube is ``Pow(x, 3)``).
A final LayerNorm gives ``last_hidden_state``.

Input ``input_ids`` int64 [batch, seq_len]; output ``last_hidden_state``
[batch, seq_len, hidden].

Full: GPT-2 small (12 layers, hidden 768, 12 heads, seq 128, vocab 50257).
Small: 2 layers, hidden 64, 4 heads, seq 16, vocab 256.
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
class Gpt2Config:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    seq_len: int = 128
    vocab: int = 50257


FULL = Gpt2Config()
SMALL = Gpt2Config(layers=2, hidden=64, heads=4, seq_len=16, vocab=256)


@register("gpt2", "GPT-2 decoder: fused QKV, causal mask, gelu_new (tanh form with x**3)",
          full=FULL, small=SMALL)
def build_gpt2(cfg: Gpt2Config, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("gpt2", seed)
    ids = b.input("input_ids", (batch, cfg.seq_len), dtype="int64", index_limit=cfg.vocab)
    wte = b.weight("wte.weight", (cfg.vocab, cfg.hidden), EMBEDDING_STD)
    wpe = b.weight("wpe.weight", (cfg.seq_len, cfg.hidden), EMBEDDING_STD / 2)
    positions = b.const(f"const.positions_{cfg.seq_len}", np.arange(cfg.seq_len)[None, :])
    x = b.op("Add", [b.op("Gather", [wte, ids], "wte", axis=0),
                     b.op("Gather", [wpe, positions], "wpe", axis=0)], "embeddings")
    tril = np.tril(np.ones((cfg.seq_len, cfg.seq_len), dtype=bool))[None, None]
    mask = b.const(f"const.causal_bias_{cfg.seq_len}", tril)
    for i in range(cfg.layers):
        x = _block(b, x, f"h.{i}", cfg, batch, mask)
    return b.finish({"last_hidden_state": b.layernorm(x, "ln_f", cfg.hidden, eps=1e-5)})


def gelu_new(b: GraphBuilder, x: str, name: str) -> str:
    """GPT-2's tanh GELU; the cube is ``Pow(x, 3)``, as exported."""
    cube = b.op("Pow", [x, b.const("const.three_f", 3.0)], f"{name}.pow")
    inner = b.op("Add", [x, b.op("Mul", [cube, b.const("const.gelu_c", 0.044715)], f"{name}.mul_c")],
                 f"{name}.add")
    inner = b.op("Mul", [inner, b.const("const.sqrt_2_over_pi", math.sqrt(2.0 / math.pi))], f"{name}.scale")
    t = b.op("Add", [b.op("Tanh", [inner], f"{name}.tanh"), b.const("const.one", 1.0)], f"{name}.one_plus")
    half_x = b.op("Mul", [x, b.const("const.half", 0.5)], f"{name}.half_x")
    return b.op("Mul", [half_x, t], name)


def _block(b, x, name, cfg: Gpt2Config, batch, mask) -> str:
    h = b.layernorm(x, f"{name}.ln_1", cfg.hidden, eps=1e-5)
    x = b.op("Add", [x, _attention(b, h, f"{name}.attn", cfg, batch, mask)], f"{name}.residual1")
    h = b.layernorm(x, f"{name}.ln_2", cfg.hidden, eps=1e-5)
    h = gelu_new(b, b.dense(h, f"{name}.mlp.c_fc", cfg.hidden, 4 * cfg.hidden), f"{name}.mlp.act")
    h = b.dense(h, f"{name}.mlp.c_proj", 4 * cfg.hidden, cfg.hidden)
    return b.op("Add", [x, h], f"{name}.residual2")


def _attention(b, x, name, cfg: Gpt2Config, batch, mask) -> str:
    d, s = cfg.hidden // cfg.heads, cfg.seq_len
    qkv = b.dense(x, f"{name}.c_attn", cfg.hidden, 3 * cfg.hidden)
    split = b.const(f"const.split3_{cfg.hidden}", [cfg.hidden] * 3)
    q, k, v = b.op("Split", [qkv, split], f"{name}.split", num_outputs=3, axis=-1)

    def heads(t: str, kind: str, perm) -> str:
        t = b.reshape(t, f"{name}.{kind}.split_heads", (batch, s, cfg.heads, d))
        return b.transpose(t, f"{name}.{kind}.transpose", perm)

    scores = b.op("MatMul", [heads(q, "q", (0, 2, 1, 3)), heads(k, "k", (0, 2, 3, 1))], f"{name}.scores")
    scores = b.op("Div", [scores, b.const(f"const.sqrt_{d}", math.sqrt(d))], f"{name}.scale")
    lowest = b.const("const.float32_lowest", float(np.finfo(np.float32).min))
    scores = b.op("Where", [mask, scores, lowest], f"{name}.causal")
    probs = b.op("Softmax", [scores], f"{name}.softmax", axis=-1)
    ctx = b.op("MatMul", [probs, heads(v, "v", (0, 2, 1, 3))], f"{name}.context")
    ctx = b.transpose(ctx, f"{name}.merge_heads.transpose", (0, 2, 1, 3))
    ctx = b.reshape(ctx, f"{name}.merge_heads", (batch, s, cfg.hidden))
    return b.dense(ctx, f"{name}.c_proj", cfg.hidden, cfg.hidden)


def _validate(cfg: Gpt2Config) -> None:
    check(min(cfg.layers, cfg.hidden, cfg.heads, cfg.seq_len, cfg.vocab) >= 1,
          f"gpt2: all sizes must be >= 1, got {cfg}")
    check(cfg.hidden % cfg.heads == 0,
          f"gpt2: hidden ({cfg.hidden}) must be a multiple of heads ({cfg.heads})")
