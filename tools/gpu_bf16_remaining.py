"""Where a bf16 build's bytes and FLOPs go, per kernel category and instruction (issue 17) -- static, no GPU.

    PYTHONPATH=. python tools/gpu_bf16_remaining.py [--case vit_b_16:1 ...] [--md OUT.md] [--json OUT.json]

In:  the cases (:data:`CASES`: transformer encoders shaped as the corpus's ``vit_b_16``, ``distilbert`` and
     ``whisper_encoder``, built from hetpart's zoo graph builder; ``NAME:BATCH``), each built twice for sm_90
     in ``cuda=bf16`` with today's defaults (:func:`gpu_static_kernels.analyse`: one and two encoder layers,
     the CUDA C read for each kernel's instruction).
Out: per case, the kernels of the whole model (:func:`per_model`: a kernel whose count grows with the second
     layer is a layer's, scaled to the model's layers; the rest run once), grouped by :func:`group` (category,
     a dense layer's GEMM told from attention's batched products) and instruction, with count, bytes read +
     written, FLOPs and :func:`roofline` seconds; and the share of each group in the case's total.
Invariant: static and unmeasured -- a roofline (:data:`HBM_BPS`, :data:`RATES`, :data:`FLOOR_S` per launch)
over the build's own byte and flop counts; it ranks, the GPU measures.  What it leaves out: the models'
stems (ViT's patch embedding, Whisper's convolutions), the host side, and anything the roofline cannot see
(occupancy, tails, pipeline bubbles: ``gpu_static_kernels``' ``est.`` column has some of those).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_static_kernels import CUDA_CORES, analyse  # noqa: E402

HBM_BPS = 3.0e12
"""Bytes/s a streaming kernel reaches on the H100 (3.35 TB/s peak)."""
RATES = {"wgmma bf16": 95e12, "wgmma f32a": 50e12, "mma.sync bf16": 40e12, "mma.sync tf32": 40e12,
         "mma.sync f16": 40e12, "mma.sync": 40e12, CUDA_CORES: 25e12}
"""Flop/s by instruction: hetpart's wgmma GEMM with a bf16 A 85-106 TFLOP/s on ViT's shapes, with a float32 A
narrowed in the kernel (``f32a``) 41-57 (``gpu-wgmma-spike.md`` section 10, M = 197), its ``mma.sync`` kernels
~40 measured (bf16 storage, TF32 multiply: the same section's "hetpart bf16"), CUDA cores (float32 FMA) ~25 of
67 peak.  The H100's dense bf16 tensor-core peak (989 spec, ~800 reachable) is the ceiling none of these nears."""
FLOOR_S = 2e-6
"""Least seconds of one kernel launch in a CUDA graph (launch, ramp, drain)."""


@dataclass(frozen=True)
class Case:
    """An encoder shaped as a corpus model: ``pre_ln`` (ViT, Whisper: LayerNorm before attention and MLP, its
    output read by the GEMMs alone) or post-LN (BERT / DistilBERT: the LayerNorm output is the residual too)."""

    name: str
    layers: int
    tokens: int
    hidden: int
    heads: int
    mlp: int
    pre_ln: bool


CASES = {
    "vit_b_16": Case("vit_b_16", 12, 197, 768, 12, 3072, True),
    "distilbert": Case("distilbert", 6, 128, 768, 12, 3072, False),
    "whisper_encoder": Case("whisper_encoder", 4, 1500, 384, 6, 1536, True),
}
"""The corpus's transformer rows of ``gpu-bf16-defaults-nvidia-h100.md`` (``bench/corpus.py``'s shapes)."""


def build(case: Case, layers: int, batch: int):
    """The encoder's ONNX graph with ``layers`` layers: post-LN as the zoo's BERT (embeddings, pooler), pre-LN as
    ViT / Whisper's encoder spell a layer (input ``x`` float32 ``[batch, tokens, hidden]``, final LayerNorm)."""
    from hetpart import models

    if not case.pre_ln:
        return models.build("bert", False, layers=layers, batch=batch, seq_len=case.tokens, hidden=case.hidden,
                            heads=case.heads, intermediate=case.mlp, vocab=1000)
    from hetpart.models.bert import BertConfig, _self_attention
    from hetpart.models.graph_builder import GraphBuilder

    cfg = BertConfig(layers=layers, hidden=case.hidden, heads=case.heads, intermediate=case.mlp, seq_len=case.tokens)
    b = GraphBuilder(case.name, 0)
    x = b.input("x", (batch, case.tokens, case.hidden))
    for i in range(layers):
        h = b.layernorm(x, f"l{i}.ln1", case.hidden, eps=1e-6)
        attn = b.dense(_self_attention(b, h, f"l{i}.attn", cfg, batch), f"l{i}.attn.out", case.hidden, case.hidden)
        x = b.op("Add", [attn, x], f"l{i}.res1")
        h = b.layernorm(x, f"l{i}.ln2", case.hidden, eps=1e-6)
        y = b.gelu(b.dense(h, f"l{i}.fc1", case.hidden, case.mlp, gain=2.0), f"l{i}.gelu")
        x = b.op("Add", [b.dense(y, f"l{i}.fc2", case.mlp, case.hidden), x], f"l{i}.res2")
    return b.finish({"y": b.layernorm(x, "ln_final", case.hidden, eps=1e-6)})


def group(row) -> str:
    """``row``'s category, a matmul split into a dense layer's GEMM (a weight operand) and attention's
    batched products (``Q K^T``, ``P V``: no weight)."""
    if row.category == "matmul":
        return "dense GEMM" if row.weights else "attention bmm"
    return row.category


def roofline(nbytes: float, flops: float, instruction: str, launches: int) -> float:
    """Seconds: max(bytes / :data:`HBM_BPS`, flops / the instruction's rate, :data:`FLOOR_S` x launches)."""
    rate = RATES.get(instruction, RATES["wgmma bf16"] if instruction.startswith("wgmma") else RATES[CUDA_CORES])
    return max(nbytes / HBM_BPS, flops / rate, FLOOR_S * launches)


@dataclass
class Kernel:
    """One distinct kernel of the whole model: ``count`` its calls (layers x per layer + once)."""

    func: str
    group: str
    rule: str
    instruction: str
    count: int
    launches: int  # per call
    bytes: int  # per call
    flops: int  # per call
    seconds: float  # per call (:func:`roofline`)
    per_layer: bool


def per_model(case: Case, batch: int) -> list[Kernel]:
    """The model's kernels: built with one and two layers; a kernel whose count grows by ``d`` with the second
    layer runs ``d`` times per layer (``case.layers`` x ``d`` in all), plus its count at one layer less ``d``."""
    one = analyse(build(case, 1, batch), precision="bf16")
    two = {r.func: r for r in analyse(build(case, 2, batch), precision="bf16")}
    out = []
    for r in one:
        grow = max(0, (two[r.func].count if r.func in two else r.count) - r.count)
        count = case.layers * grow + (r.count - grow)
        out.append(Kernel(r.func, group(r), r.rule, r.instruction, count, r.kernels, r.bytes, r.flops,
                          roofline(r.bytes, r.flops, r.instruction, r.kernels), grow > 0))
    return out


def totals(kernels: list[Kernel], key) -> dict:
    """``{key(kernel): {"calls", "launches", "MB", "GFLOP", "ms"}}`` summed over the model's calls."""
    out: dict = {}
    for k in kernels:
        t = out.setdefault(key(k), {"calls": 0, "launches": 0, "MB": 0.0, "GFLOP": 0.0, "ms": 0.0})
        t["calls"] += k.count
        t["launches"] += k.count * k.launches
        t["MB"] += k.count * k.bytes / 1e6
        t["GFLOP"] += k.count * k.flops / 1e9
        t["ms"] += k.count * k.seconds * 1e3
    return out


LEVERS = (
    ("fused attention", "Q K^T, softmax and P V one kernel per layer on wgmma-class MMA (RATES['wgmma bf16']), "
     "the scores never in HBM: reads Q, K, V and writes the context, bf16 (4 x batch x tokens x hidden x 2 B)"),
    ("wgmma GEMM 2x", "the dense layers' wgmma kernels at twice their rate (bf16 190, f32a 100 TFLOP/s: larger "
     "CTA tiles, TMA, a persistent grid -- still a quarter of the bf16 peak)"),
    ("f32a -> bf16 A", "the f32a-family GEMMs (a post-LN model's q/k/v and fc1) at the bf16 family's rate: the "
     "LayerNorm writes a bf16 copy for them"),
    ("fold head transposes", "the per-layer element-wise kernels (q/k/v head split, the heads' merge) gone: the "
     "projection GEMMs write head-major, the context's GEMM reads it"),
    ("fuse LayerNorm", "the per-layer LayerNorms gone (into the residual GEMM's epilogue or the next GEMM's "
     "prologue)"),
)
"""The next levers (name, assumption) :func:`levers` prices, each alone (they overlap: not additive)."""


def levers(case: Case, batch: int, kernels: list[Kernel]) -> dict[str, float]:
    """Seconds each of :data:`LEVERS` saves on the model's roofline total."""
    def total(ks):
        return sum(k.count * k.seconds for k in ks)

    attention = [k for k in kernels if k.group in ("attention bmm", "softmax") and k.per_layer]
    flops = sum(k.count * k.flops for k in attention if k.group == "attention bmm") / case.layers
    fused = case.layers * roofline(4 * batch * case.tokens * case.hidden * 2, flops, "wgmma bf16", 1)
    wgmma = [k for k in kernels if k.instruction.startswith("wgmma")]
    doubled = sum(k.count * max(k.bytes / HBM_BPS, k.flops / (2 * RATES.get(k.instruction, RATES["wgmma bf16"])),
                                FLOOR_S * k.launches) for k in wgmma)
    f32a = [k for k in wgmma if k.instruction == "wgmma f32a"]
    as_bf16 = sum(k.count * roofline(k.bytes, k.flops, "wgmma bf16", k.launches) for k in f32a)
    return {
        "fused attention": max(0.0, total(attention) - fused) if attention else 0.0,
        "wgmma GEMM 2x": total(wgmma) - doubled,
        "f32a -> bf16 A": total(f32a) - as_bf16,
        "fold head transposes": total(k for k in kernels if k.group == "elementwise" and k.per_layer),
        "fuse LayerNorm": total(k for k in kernels if k.group == "norm" and k.per_layer),
    }


def lever_table(rows: dict[str, tuple[float, dict]]) -> str:
    """Per lever, per case: ms saved and the share of the case's roofline total (``rows``: case -> (total s,
    :func:`levers`))."""
    cases = list(rows)
    lines = ["| lever | " + " | ".join(cases) + " |", "|---|" + "--:|" * len(cases)]
    for name, _ in LEVERS:
        cells = [f"{rows[c][1][name] * 1e3:.3f} ms ({rows[c][1][name] / rows[c][0]:.0%})" for c in cases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| roofline total | " + " | ".join(f"{rows[c][0] * 1e3:.3f} ms" for c in cases) + " |")
    return "\n".join(lines)


def table(title: str, kernels: list[Kernel]) -> str:
    rows = totals(kernels, lambda k: (k.group, k.instruction))
    total = sum(t["ms"] for t in rows.values())
    lines = [f"### {title}", "",
             "| category | instruction (rule) | calls | launches | MB read+written | GFLOP | roofline ms | share |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    rules: dict = {}
    for k in kernels:
        rules.setdefault((k.group, k.instruction), set()).add(k.rule)
    for key, t in sorted(rows.items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(f"| {key[0]} | {key[1]} ({', '.join(sorted(rules[key]))}) | {t['calls']} | {t['launches']} | "
                     f"{t['MB']:.1f} | {t['GFLOP']:.2f} | {t['ms']:.3f} | {t['ms'] / total:.0%} |")
    s = totals(kernels, lambda k: "all")["all"]
    lines.append(f"| **total** | | {s['calls']} | {s['launches']} | {s['MB']:.1f} | {s['GFLOP']:.2f} | "
                 f"{s['ms']:.3f} | 100% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", metavar="NAME:BATCH",
                    help=f"a case (NAME one of {', '.join(CASES)}); default: each at batch 1 and 32")
    ap.add_argument("--md", help="write the tables here")
    ap.add_argument("--json", help="write every kernel here")
    args = ap.parse_args(argv)
    cases = args.case or [f"{n}:{b}" for n in CASES for b in (1, 32)]
    texts, dump, saved = [], {}, {}
    for spec in cases:
        name, _, batch = spec.partition(":")
        if name not in CASES:
            ap.error(f"unknown case {name!r}; one of {', '.join(CASES)}")
        kernels = per_model(CASES[name], int(batch or 1))
        texts.append(table(f"{name} batch {int(batch or 1)}", kernels))
        saved[f"{name} b{int(batch or 1)}"] = (sum(k.count * k.seconds for k in kernels),
                                              levers(CASES[name], int(batch or 1), kernels))
        dump[spec] = [asdict(k) for k in kernels]
        print(texts[-1] + "\n", flush=True)
    texts.append("### Levers, each alone (ms saved on the roofline total, share of it)\n\n" + lever_table(saved)
                 + "\n\n" + "\n".join(f"* {n}: {a}." for n, a in LEVERS))
    print(texts[-1])
    if args.md:
        Path(args.md).write_text("\n\n".join(texts) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
