"""Text report of an :class:`OpGraph`: what ``partition MODEL`` prints first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # op_graph calls render_summary: a type-only import keeps the two out of a loop
    from .op_graph import Kernel, OpGraph


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_flops(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.1f} {unit}FLOP"
        n /= 1000
    return f"{n:.1f} TFLOP"


def by_op_class(kernels: Iterable[Kernel]) -> dict[str, list[Kernel]]:
    """Kernels grouped by ``op_class``, in the order each class first appears."""
    out: dict[str, list[Kernel]] = {}
    for k in kernels:
        out.setdefault(k.op_class, []).append(k)
    return out


def render_summary(g: OpGraph, top: int = 5) -> str:
    lines = [
        f"model {g.name}: {len(g)} fused kernels, {human_flops(g.total_flops)}, "
        f"parameters {human_bytes(g.param_bytes)}",
        "inputs:  " + ", ".join(f"{t} {list(g.tensors[t].shape)} {g.tensors[t].dtype}" for t in g.inputs),
        "outputs: " + ", ".join(f"{t} {list(g.tensors[t].shape)} {g.tensors[t].dtype}" for t in g.outputs),
        "",
        f"{'op class':<10} {'kernels':>7} {'distinct':>8} {'FLOPs':>14} {'params':>11}",
    ]
    groups = sorted(by_op_class(g.kernels.values()).items(), key=lambda kv: -sum(k.flops for k in kv[1]))
    for cls, ks in groups:
        lines.append(
            f"{cls:<10} {len(ks):>7} {len({k.signature for k in ks}):>8} "
            f"{human_flops(sum(k.flops for k in ks)):>14} {human_bytes(sum(k.param_bytes for k in ks)):>11}"
        )
    inner = [t for t in g.tensors.values() if t.producer is not None and t.consumers]
    lines += ["", f"largest tensors between kernels (top {top}):" if inner
              else "no tensor passes between kernels (each kernel reads only inputs and weights)"]
    for t in sorted(inner, key=lambda t: -t.nbytes)[:top]:
        lines.append(f"  {t.name:<12} {human_bytes(t.nbytes):>10}  {list(t.shape)} {t.dtype}  {t.producer} -> {', '.join(t.consumers)}")
    return "\n".join(lines)
