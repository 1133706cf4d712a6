"""A PyTorch twin of the zoo's LLaMA decode step (:mod:`hetpart.models.llama_decode`),
so PyTorch on the CPU and accelerate's offload run the very step hetpart runs.

:func:`decode_twin` reads the sizes from the ONNX model (its inputs and weight
shapes) and takes its weights (the same float32 values), and returns an
``nn.Module`` computing the step as the ONNX graph spells it: embedding; per layer
RMSNorm, projections by ``x @ W``, rotary embeddings of ``position``, the cache slot
written by ``where(slot == position, new, past)``, key/value heads repeated, causal
mask over the cache, softmax attention, SwiGLU; the final RMSNorm and ``lm_head``.
Each layer is a module of its own (``DecodeLayer``, named in ``_no_split_modules``),
so accelerate places or offloads whole layers.  torch is imported only here, when
the twin is made.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-6
ROPE_THETA = 10000.0


def decode_twin(model) -> tuple[object, list[str]]:
    """(``nn.Module`` in eval mode, its input names in call order) for ``model``, a
    zoo ``llama_decode`` ModelProto."""
    import torch
    from onnx import numpy_helper

    weights = {t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in model.graph.initializer
               if t.name.endswith(".weight")}
    names = [i.name for i in model.graph.input]
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    _, kv_heads, cache_len, head_dim = dims["past.0.key"]
    hidden = weights["embed_tokens.weight"].shape[1]
    sizes = dict(hidden=hidden, heads=hidden // head_dim, kv_heads=kv_heads, head_dim=head_dim,
                 cache_len=cache_len, layers=sum(n.endswith(".input_layernorm.weight") for n in weights))
    return _module_class()(weights, sizes).eval(), names


def _module_class():
    import torch
    from torch import nn

    def param(t):
        return nn.Parameter(t, requires_grad=False)

    class RMSNorm(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.weight = param(w)

        def forward(self, x):
            return self.weight * (x * torch.reciprocal(torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS)))

    class MatMul(nn.Module):
        """``x @ W`` with W [in, out], as the ONNX graph stores it."""

        def __init__(self, w):
            super().__init__()
            self.weight = param(w)

        def forward(self, x):
            return x @ self.weight

    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    class DecodeLayer(nn.Module):
        def __init__(self, w, prefix, s):
            super().__init__()
            self.s = s
            self.input_layernorm = RMSNorm(w[f"{prefix}.input_layernorm.weight"])
            for kind in ("q", "k", "v", "o"):
                setattr(self, f"{kind}_proj", MatMul(w[f"{prefix}.self_attn.{kind}_proj.weight"]))
            self.post_attention_layernorm = RMSNorm(w[f"{prefix}.post_attention_layernorm.weight"])
            for kind in ("gate", "up", "down"):
                setattr(self, f"{kind}_proj", MatMul(w[f"{prefix}.mlp.{kind}_proj.weight"]))

        def forward(self, x, cos, sin, hit, mask, past_key, past_value):
            s, b = self.s, x.shape[0]
            h = self.input_layernorm(x)
            split = lambda t, n: t.view(b, 1, n, s["head_dim"]).transpose(1, 2)  # noqa: E731
            q = rope(split(self.q_proj(h), s["heads"]), cos, sin)
            k = rope(split(self.k_proj(h), s["kv_heads"]), cos, sin)
            v = split(self.v_proj(h), s["kv_heads"])
            key = torch.where(hit, k, past_key)
            value = torch.where(hit, v, past_value)
            rep = s["heads"] // s["kv_heads"]
            keys, values = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
            scores = (q @ keys.transpose(2, 3)) * (1.0 / math.sqrt(s["head_dim"])) + mask
            ctx = torch.softmax(scores, dim=-1) @ values
            x = x + self.o_proj(ctx.transpose(1, 2).reshape(b, 1, s["hidden"]))
            h = self.post_attention_layernorm(x)
            gate = self.gate_proj(h)
            return x + self.down_proj(gate * torch.sigmoid(gate) * self.up_proj(h)), key, value

    class DecodeStep(nn.Module):
        _no_split_modules = ["DecodeLayer"]

        def __init__(self, w, s):
            super().__init__()
            self.s = s
            self.embed_tokens = nn.Embedding.from_pretrained(w["embed_tokens.weight"], freeze=True)
            self.layers = nn.ModuleList(DecodeLayer(w, f"layers.{i}", s) for i in range(s["layers"]))
            self.norm = RMSNorm(w["norm.weight"])
            self.lm_head = MatMul(w["lm_head.weight"])

        def forward(self, input_ids, position, *caches):
            s = self.s
            x = self.embed_tokens(input_ids)
            d = s["head_dim"]
            inv_freq = (1.0 / ROPE_THETA ** (torch.arange(0, d, 2, dtype=torch.float64, device=position.device)
                                             / d)).to(torch.float32)
            freqs = position.to(torch.float32)[:, None] * inv_freq[None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            cos, sin = torch.cos(emb), torch.sin(emb)
            slots = torch.arange(s["cache_len"], device=position.device)
            hit = (slots == position).view(1, 1, -1, 1)
            lowest = torch.finfo(torch.float32).min
            mask = torch.where(slots > position, torch.tensor(lowest, device=position.device),
                               torch.tensor(0.0, device=position.device))
            present = []
            for i, layer in enumerate(self.layers):
                x, key, value = layer(x, cos, sin, hit, mask, caches[2 * i], caches[2 * i + 1])
                present += [key, value]
            return (self.lm_head(self.norm(x)), *present)

    return DecodeStep
