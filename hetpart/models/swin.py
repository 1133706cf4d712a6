"""A Swin Transformer, spelled with the ops torchvision's opset-17 export of
``swin_t`` uses, shape arithmetic included.

Patch embedding (4x4 stride-4 conv -> NHWC -> LayerNorm), then stages of blocks
alternating plain and shifted window attention, joined by patch merging.  Where
torchvision computes sizes from ``x.shape``, so does this graph (``Shape`` ->
``Gather`` -> ``Mod``/``Div``/``Sub`` -> ``Concat``), which is what made Swin-T's
import fail ("Dynamic pads are not supported yet"):

* window attention pads H and W up to whole windows, ``pad_r = (ws - W % ws) % ws``
  (a ``Pad`` whose pads are computed), partitions windows with a reshape to
  ``(B, pad_H // ws, ws, pad_W // ws, ws, C)`` (computed: ONNX shape inference
  cannot see through it) and slices the padding off again with ends from ``Shape``;
* shifted blocks roll the map by half a window (``Slice`` + ``Concat``, as torch
  exports ``roll``) and add the -100 mask that keeps shifted-in pixels apart;
* attention adds a relative position bias (a learned table gathered by a constant
  index);
* patch merging pads H and W to even sizes (computed pads again), takes the four
  2x2 phases with strided ``Slice``, concatenates them, LayerNorm, Linear.

Input ``input`` float32 [batch, 3, image, image]; output ``logits`` [batch, classes].

Full: Swin-T (embed 96, depths 2/2/6/2, heads 3/6/12/24, window 7, 224x224).
Small: embed 16, depths 2/2, heads 2/4, window 4 on 40x40 images (10x10 tokens, so
the windows do need padding), 10 classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register

BIG = 2**62  # a Slice end past any dim


@dataclass(frozen=True)
class SwinConfig:
    image: int = 224
    embed: int = 96
    depths: tuple = (2, 2, 6, 2)
    heads: tuple = (3, 6, 12, 24)
    window: int = 7
    classes: int = 1000


FULL = SwinConfig()
SMALL = SwinConfig(image=40, embed=16, depths=(2, 2), heads=(2, 4), window=4, classes=10)


@register("swin", "Swin Transformer: shifted window attention, pads and window shapes "
          "computed from shapes, patch merging", full=FULL, small=SMALL)
def build_swin(cfg: SwinConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("swin", seed)
    x = b.input("input", (batch, 3, cfg.image, cfg.image))
    w = b.weight("features.0.0.weight", (cfg.embed, 3, 4, 4), math.sqrt(1.0 / 48))
    x = b.op("Conv", [x, w, b.weight("features.0.0.bias", (cfg.embed,), 0.05)], "features.0.0",
             kernel_shape=[4, 4], strides=[4, 4])
    x = b.transpose(x, "features.0.1", (0, 2, 3, 1))  # [B, H, W, C]
    x = b.layernorm(x, "features.0.2", cfg.embed, eps=1e-5)
    size, dim = cfg.image // 4, cfg.embed
    for stage, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads)):
        if stage:
            x = _patch_merging(b, x, f"features.{2 * stage}", dim)
            size, dim = (size + 1) // 2, 2 * dim
        window = min(cfg.window, size)
        for i in range(depth):
            shift = window // 2 if i % 2 and cfg.window < size else 0
            x = _block(b, x, f"features.{2 * stage + 1}.{i}", dim, heads, window, shift, size, batch)
    x = b.layernorm(x, "norm", dim, eps=1e-5)
    x = b.op("GlobalAveragePool", [b.transpose(x, "permute", (0, 3, 1, 2))], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    return b.finish({"logits": b.linear(x, "head", dim, cfg.classes, gain=1.0)})


# --- shape arithmetic, as traced ---------------------------------------------------------
def _dims(b: GraphBuilder, x: str, name: str) -> tuple[str, str]:
    """H and W of an NHWC value, as 1-element int64 tensors from ``Shape``."""
    s = b.op("Shape", [x], f"{name}.shape")
    h = b.op("Gather", [s, b.const("const.idx_1", [1])], f"{name}.H", axis=0)
    w = b.op("Gather", [s, b.const("const.idx_2", [2])], f"{name}.W", axis=0)
    return h, w


def _pad_to_multiple(b: GraphBuilder, x: str, name: str, multiple: int) -> str:
    """Pad H and W of NHWC ``x`` at the end up to a multiple: ``(m - n % m) % m``."""
    m = b.const(f"const.i{multiple}_1d", [multiple])
    h, w = _dims(b, x, name)

    def pad(n: str, axis: str) -> str:
        rest = b.op("Sub", [m, b.op("Mod", [n, m], f"{name}.{axis}_mod")], f"{name}.{axis}_rest")
        return b.op("Mod", [rest, m], f"{name}.pad_{axis}")

    zeros = b.const("const.zeros_5", [0] * 5)
    zero = b.const("const.zeros_1", [0])
    pads = b.op("Concat", [zeros, pad(h, "b"), pad(w, "r"), zero], f"{name}.pads", axis=0)
    return b.op("Pad", [x, pads], name)


def _roll(b: GraphBuilder, x: str, name: str, shift: int) -> str:
    """``torch.roll(x, (shift, shift), (1, 2))`` as exported: Slice + Concat per axis."""
    for axis in (1, 2):
        ax = b.const(f"const.axes_{axis}", [axis])
        tail = b.op("Slice", [x, b.const(f"const.start_{-shift}", [-shift]), b.const("const.big", [BIG]), ax],
                    f"{name}.{axis}.tail")
        head = b.op("Slice", [x, b.const("const.start_0", [0]), b.const(f"const.start_{-shift}", [-shift]), ax],
                    f"{name}.{axis}.head")
        x = b.op("Concat", [tail, head], f"{name}.{axis}", axis=axis)
    return x


# --- blocks ------------------------------------------------------------------------------
def _block(b, x, name, dim, heads, window, shift, size, batch) -> str:
    h = b.layernorm(x, f"{name}.norm1", dim, eps=1e-5)
    x = b.op("Add", [x, _window_attention(b, h, f"{name}.attn", dim, heads, window, shift, size, batch)],
             f"{name}.residual1")
    h = b.layernorm(x, f"{name}.norm2", dim, eps=1e-5)
    h = b.gelu(b.dense(h, f"{name}.mlp.0", dim, 4 * dim, gain=2.0), f"{name}.mlp.1")
    return b.op("Add", [x, b.dense(h, f"{name}.mlp.3", 4 * dim, dim)], f"{name}.residual2")


def _window_attention(b, x, name, dim, heads, ws, shift, size, batch) -> str:
    padded_size = -(-size // ws) * ws
    n, nw, d = ws * ws, (padded_size // ws) ** 2, dim // heads
    h, w = _dims(b, x, f"{name}.input")
    y = _pad_to_multiple(b, x, f"{name}.pad", ws)
    if shift:
        y = _roll(b, y, f"{name}.roll", shift)
    # view(B, pad_H // ws, ws, pad_W // ws, ws, C), sizes from the padded value's shape.
    ph, pw = _dims(b, y, f"{name}.padded")
    wsc = b.const(f"const.i{ws}_1d", [ws])
    view = b.op("Concat", [b.const(f"const.batch_{batch}", [batch]), b.op("Div", [ph, wsc], f"{name}.rows"), wsc,
                           b.op("Div", [pw, wsc], f"{name}.cols"), wsc, b.const(f"const.c{dim}", [dim])],
                f"{name}.window_shape", axis=0)
    y = b.op("Reshape", [y, view], f"{name}.windows")
    y = b.transpose(y, f"{name}.windows.transpose", (0, 1, 3, 2, 4, 5))
    y = b.reshape(y, f"{name}.windows.flat", (batch * nw, n, dim))
    qkv = b.dense(y, f"{name}.qkv", dim, 3 * dim)
    qkv = b.reshape(qkv, f"{name}.qkv.split", (batch * nw, n, 3, heads, d))
    qkv = b.transpose(qkv, f"{name}.qkv.transpose", (2, 0, 3, 1, 4))
    q, k, v = (b.op("Gather", [qkv, b.const(f"const.i{i}", i)], f"{name}.{part}", axis=0)
               for i, part in enumerate("qkv"))
    q = b.op("Mul", [q, b.const(f"const.inv_sqrt_{d}", 1.0 / math.sqrt(d))], f"{name}.q_scaled")
    attn = b.op("MatMul", [q, b.transpose(k, f"{name}.k.transpose", (0, 1, 3, 2))], f"{name}.scores")
    attn = b.op("Add", [attn, _relative_bias(b, f"{name}.relative_position_bias", heads, ws)], f"{name}.biased")
    if shift:
        attn = b.reshape(attn, f"{name}.per_image", (batch, nw, heads, n, n))
        mask = b.const(f"{name}.shift_mask", _shift_mask(padded_size, ws, shift)[None, :, None])
        attn = b.op("Add", [attn, mask], f"{name}.masked")
        attn = b.reshape(attn, f"{name}.per_window", (batch * nw, heads, n, n))
    probs = b.op("Softmax", [attn], f"{name}.softmax", axis=-1)
    y = b.op("MatMul", [probs, v], f"{name}.context")
    y = b.reshape(b.transpose(y, f"{name}.merge.transpose", (0, 2, 1, 3)), f"{name}.merge", (batch * nw, n, dim))
    y = b.dense(y, f"{name}.proj", dim, dim)
    g = padded_size // ws
    y = b.reshape(y, f"{name}.unwindow.split", (batch, g, g, ws, ws, dim))
    y = b.transpose(y, f"{name}.unwindow.transpose", (0, 1, 3, 2, 4, 5))
    y = b.reshape(y, f"{name}.unwindow", (batch, padded_size, padded_size, dim))
    if shift:
        y = _roll(b, y, f"{name}.unroll", -shift)
    ends = b.op("Concat", [h, w], f"{name}.unpad.ends", axis=0)
    return b.op("Slice", [y, b.const("const.zeros_2", [0, 0]), ends, b.const("const.axes_12", [1, 2])],
                f"{name}.unpad")


def _relative_bias(b: GraphBuilder, name: str, heads: int, ws: int) -> str:
    """[heads, n, n]: a (2ws-1)^2 x heads table gathered by the relative position index."""
    table = b.weight(f"{name}_table", ((2 * ws - 1) ** 2, heads), 0.5)
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (ws - 1)
    index = rel[..., 0] * (2 * ws - 1) + rel[..., 1]
    bias = b.op("Gather", [table, b.const(f"const.relative_index_{ws}", index.reshape(-1))], name, axis=0)
    bias = b.reshape(bias, f"{name}.view", (ws * ws, ws * ws, heads))
    return b.transpose(bias, f"{name}.transpose", (2, 0, 1))


def _shift_mask(size: int, ws: int, shift: int) -> np.ndarray:
    """[windows, n, n]: -100 between pixels from different regions of the rolled map."""
    regions = np.zeros((size, size), np.float32)
    count = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            regions[hs, wsl] = count
            count += 1
    g = size // ws
    regions = regions.reshape(g, ws, g, ws).transpose(0, 2, 1, 3).reshape(g * g, ws * ws)
    diff = regions[:, None, :] - regions[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0))


def _patch_merging(b: GraphBuilder, x: str, name: str, dim: int) -> str:
    x = _pad_to_multiple(b, x, f"{name}.pad", 2)
    parts = []
    for i, (r, c) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        start = b.const(f"const.phase_{r}{c}", [r, c])
        parts.append(b.op("Slice", [x, start, b.const("const.big_2", [BIG, BIG]), b.const("const.axes_12", [1, 2]),
                                    b.const("const.steps_22", [2, 2])], f"{name}.x{i}"))
    x = b.op("Concat", parts, f"{name}.concat", axis=-1)
    x = b.layernorm(x, f"{name}.norm", 4 * dim, eps=1e-5)
    w = b.weight(f"{name}.reduction.weight", (4 * dim, 2 * dim), math.sqrt(1.0 / (4 * dim)))
    return b.op("MatMul", [x, w], f"{name}.reduction")


def _validate(cfg: SwinConfig) -> None:
    check(len(cfg.depths) == len(cfg.heads) >= 1 and min(cfg.depths) >= 1 and min(cfg.heads) >= 1,
          f"swin: depths and heads must be equally long lists of ints >= 1, got {cfg}")
    check(all(cfg.embed * 2 ** i % h == 0 for i, h in enumerate(cfg.heads)),
          f"swin: each stage's width (embed x 2^stage) must be a multiple of its heads, got {cfg}")
    check(cfg.image % 4 == 0 and cfg.image >= 4 * 2 ** (len(cfg.depths) - 1) and cfg.window >= 2,
          f"swin: image must be a multiple of 4 with a token grid of at least 1 in the last stage, "
          f"and window >= 2, got {cfg}")
