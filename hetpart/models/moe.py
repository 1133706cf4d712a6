"""A mixture-of-experts decoder layer stack (issue 19): the LLaMA-style decoder of
:mod:`.llama` with each MLP replaced by ``experts`` SwiGLU experts and top-``top_k``
routing, as Mixtral and its kind are built.

Per layer: RMSNorm -> grouped-query causal attention (:mod:`.llama`'s) -> residual ->
RMSNorm -> the MoE MLP -> residual.  The MoE MLP, for tokens x [T, hidden]:

1. router logits ``x @ router`` [T, experts] -> ``TopK(k=top_k)`` -> the chosen
   experts' logits [T, k] and their ids [T, k];
2. routing weights: ``Softmax`` of the chosen logits over k (Mixtral's order);
3. ``Gather`` of the stacked expert weights by id, [experts, ...] -> [T, k, ...]:
   a step reads only the chosen experts' weights, not all of them;
4. per token and choice the SwiGLU expert ``(silu(x Wg) * (x Wu)) Wd`` as batched
   MatMuls, weighted and summed over the k choices.

Input ``input_ids`` int64 [batch, seq_len]; output ``logits`` [batch, seq_len, vocab].
The full model is one token at a time (``seq_len=1``, a decode-sized step without a
KV cache): 8 layers, hidden 1024, 16 heads over 4, 8 experts of MLP 2816, top-2,
vocab 32000 -- ~2.6 GB of float32 weights (2.2 GB of them experts), of which one step reads a quarter of the
experts.  Small: 2 layers, hidden 32, 8 experts of MLP 48, 4 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.llama import LlamaConfig, _attention, decoder_inputs, projection, rms_norm
from hetpart.models.llama import _validate as _validate_llama
from hetpart.models.registry import check, register


@dataclass(frozen=True)
class MoEConfig:
    layers: int = 8
    hidden: int = 1024
    heads: int = 16
    kv_heads: int = 4
    experts: int = 8
    top_k: int = 2
    intermediate: int = 2816  # per expert
    seq_len: int = 1
    vocab: int = 32000
    rope_theta: float = 10000.0

    def llama(self) -> LlamaConfig:
        return LlamaConfig(self.layers, self.hidden, self.heads, self.kv_heads, self.intermediate, self.seq_len,
                           self.vocab, self.rope_theta)


FULL = MoEConfig()
SMALL = MoEConfig(layers=2, hidden=32, heads=4, kv_heads=2, experts=8, top_k=2, intermediate=48, seq_len=4,
                  vocab=64)


@register("moe", "mixture-of-experts decoder: LLaMA-style attention, top-k routed SwiGLU experts "
          "(TopK + Gather of the chosen experts' weights)", full=FULL, small=SMALL)
def build_moe(cfg: MoEConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    llama = cfg.llama()
    b = GraphBuilder("moe", seed)
    x, cos, sin, mask = decoder_inputs(b, cfg, batch)
    for i in range(cfg.layers):
        name = f"layers.{i}"
        h = rms_norm(b, x, f"{name}.input_layernorm", cfg.hidden)
        x = b.op("Add", [x, _attention(b, h, f"{name}.self_attn", llama, batch, cos, sin, mask)],
                 f"{name}.residual1")
        h = rms_norm(b, x, f"{name}.post_attention_layernorm", cfg.hidden)
        x = b.op("Add", [x, _moe_mlp(b, h, f"{name}.moe", cfg, batch)], f"{name}.residual2")
    x = rms_norm(b, x, "norm", cfg.hidden)
    return b.finish({"logits": projection(b, x, "lm_head", cfg.hidden, cfg.vocab)})


def _moe_mlp(b: GraphBuilder, x: str, name: str, cfg: MoEConfig, batch: int) -> str:
    """[B, S, hidden] -> [B, S, hidden] through the top-k of ``cfg.experts`` experts."""
    t, h, e, k, inter = batch * cfg.seq_len, cfg.hidden, cfg.experts, cfg.top_k, cfg.intermediate
    tokens = b.reshape(x, f"{name}.tokens", (t, h))
    logits = projection(b, tokens, f"{name}.router", h, e)  # [T, E]
    chosen, ids = b.op("TopK", [logits, b.const(f"const.k_{k}", [k])], f"{name}.topk", num_outputs=2, axis=-1)
    weights = b.op("Softmax", [chosen], f"{name}.routing_weights", axis=-1)  # [T, k]
    gate = _experts(b, f"{name}.experts.gate_proj", ids, (e, h, inter), h)  # [T, k, h, inter]
    up = _experts(b, f"{name}.experts.up_proj", ids, (e, h, inter), h)
    down = _experts(b, f"{name}.experts.down_proj", ids, (e, inter, h), inter)  # [T, k, inter, h]
    xs = b.reshape(tokens, f"{name}.token_rows", (t, 1, 1, h))  # broadcast over the k choices
    g = b.op("MatMul", [xs, gate], f"{name}.gate")  # [T, k, 1, inter]
    u = b.op("MatMul", [xs, up], f"{name}.up")
    silu = b.op("Mul", [g, b.op("Sigmoid", [g], f"{name}.sigmoid")], f"{name}.silu")
    y = b.op("MatMul", [b.op("Mul", [silu, u], f"{name}.gated"), down], f"{name}.down")  # [T, k, 1, h]
    y = b.reshape(y, f"{name}.per_choice", (t, k, h))
    w = b.reshape(weights, f"{name}.weights_column", (t, k, 1))
    y = b.op("ReduceSum", [b.op("Mul", [y, w], f"{name}.weighted"), b.const("const.axes_1", [1])],
             f"{name}.combine", keepdims=0)  # [T, h]
    return b.reshape(y, f"{name}.out", (batch, cfg.seq_len, h))


def _experts(b: GraphBuilder, name: str, ids: str, shape: tuple[int, int, int], fan_in: int) -> str:
    """The stacked weight [E, in, out] of every expert, gathered for the chosen ids."""
    stacked = b.weight(f"{name}.weight", shape, math.sqrt(1.0 / fan_in))
    return b.op("Gather", [stacked, ids], f"{name}.chosen", axis=0)


def _validate(cfg: MoEConfig) -> None:
    _validate_llama(cfg.llama())
    check(1 <= cfg.top_k <= cfg.experts, f"moe: top_k ({cfg.top_k}) must be in 1..experts ({cfg.experts})")
