"""Which GPU schedule rule each kernel gets in one precision against another (issue 17) -- no GPU needed.

    PYTHONPATH=. python tools/bf16_rule_coverage.py zoo:efficientnet zoo:convnext [--batch 1] [--md OUT.md]
    PYTHONPATH=. python tools/bf16_rule_coverage.py model.onnx --precisions tf32,bf16,fp32 --kernels

For each model and each CUDA precision (default ``tf32`` -- hetpart's default, the
corpus's "fp32, TF32 on" rows -- against ``bf16``), the model's all-CUDA kernels as
:func:`hetpart.compiler.compile` schedules them for sm_90: weights lowered to the
precision's storage (:func:`hetpart.compiler.precision.lower_plan_weights`, every
kernel on CUDA), the precision's kernel options
(:func:`~hetpart.compiler.precision.options_for`), weights marked layout-free
(:func:`hetpart.kernels.weight_prepack.mark_weights`) and every PrimFunc scheduled
(:func:`hetpart.kernels.schedule`).  Per precision (:class:`Coverage`):

* per rule (``hetpart.rule``): the op-graph kernels it got and the CUDA launches
  they make (a function of several thread-bound nests launches several kernels:
  split-K's partials and their sum);
* ``cast launches``: launches that only convert dtypes (every store a ``Cast`` of a
  load) in a function that launches others -- a weight widened in a pass of its own
  instead of as it is read -- and
  ``cast kernels``: op-graph kernels that are nothing but a cast;
* ``prepacked``: kernels whose weight repacking the rule hands to
  :mod:`~hetpart.kernels.weight_prepack` (done once at compile time, not per call).

Then, per kernel that differs between the precisions, the rule, launches and
launch shape (:func:`gpu_static_kernels.launch_shape`) of each (``--kernels`` lists
every kernel).  What it does not see: the CUDA C (``gpu_static_kernels.py``), the
GPU's time (``gpu_kernel_profile.py``) -- except, on a GPU machine, ``--time``: each
distinct tensor-core kernel (the rules that pack weights) built alone by the cost
model's microbenchmark (:mod:`hetpart.costmodel.kernel_bench`, weights packed before
timing as the build packs them) and timed in tf32, in bf16, and in bf16 with
``gpu_tensor_core.PACK_LOW_PRECISION`` off (its weight gathered in the kernel on every
call, as before the rule packed bf16 weights), all in one process.

    PYTHONPATH=. python tools/bf16_rule_coverage.py zoo:efficientnet --batch 32 --time [--max-kernels 12]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_static_kernels import launch_shape  # noqa: E402
from model_spec import all_cuda_plan, load_model  # noqa: E402
from tool_output import append_md  # noqa: E402


@dataclass(frozen=True)
class KernelRow:
    """One op-graph kernel as one precision schedules it."""

    kernel: str
    func: str
    rule: str
    launches: int
    grid: int
    block: int
    cast_launches: int
    prepacked: bool

    def shape(self) -> tuple:
        return (self.rule, self.launches, self.grid, self.block, self.cast_launches, self.prepacked)


@dataclass
class Coverage:
    """One model in one precision: a :class:`KernelRow` per op-graph kernel (graph order),
    and the op-graph kernels that are nothing but a cast."""

    precision: str
    rows: list[KernelRow] = field(default_factory=list)
    cast_kernels: int = 0

    def by_rule(self) -> dict[str, tuple[int, int]]:
        """``{rule: (kernels, launches)}``."""
        out: dict[str, list[int]] = {}
        for r in self.rows:
            entry = out.setdefault(r.rule, [0, 0])
            entry[0] += 1
            entry[1] += r.launches
        return {k: (v[0], v[1]) for k, v in out.items()}


# --- TIR facts ----------------------------------------------------------------------------------
def _nests(func):
    """The outermost thread-bound loops of ``func`` (one CUDA launch each)."""
    from tvm import tirx

    found: list = []

    def walk(stmt):
        if isinstance(stmt, tirx.For) and stmt.thread_binding is not None:
            found.append(stmt)
            return
        from gpu_static_kernels import _children

        for child in _children(stmt):
            walk(child)

    walk(func.body)
    return found


def is_cast_only(stmt) -> bool:
    """Whether every store under ``stmt`` writes a dtype conversion of a load (and there is one)."""
    import tvm_ffi
    from tvm import tirx
    from tvm.ir import TensorLoad

    stores: list = []
    tvm_ffi.structural_walk(stmt, (tirx.BufferStore, stores.append), order="post")

    def cast_of_load(value) -> bool:
        return isinstance(value, tirx.Cast) and isinstance(value.value, TensorLoad)

    return bool(stores) and all(cast_of_load(s.value) for s in stores)


def cast_launches(func) -> int:
    """Thread-bound nests of ``func`` that only convert dtypes, beside others that do the
    kernel's work (module doc); a kernel whose one launch converts -- a gather from a
    bf16 table, widened as it is read -- is its own work, not counted."""
    nests = _nests(func)
    return sum(1 for nest in nests if is_cast_only(nest)) if len(nests) > 1 else 0


def is_prepacked(func) -> bool:
    """Whether ``func`` has a block whose weight packing runs once at compile time."""
    from tvm import s_tir

    from hetpart.kernels.analysis import contains
    from hetpart.kernels.register_tile import LAYOUT_REWRITE_PREPROC

    return contains(func.body, s_tir.SBlock, lambda b: LAYOUT_REWRITE_PREPROC in b.annotations)


CAST_OPS = ("astype", "cast")


def is_cast_kernel(kernel) -> bool:
    """An op-graph kernel whose every op is a dtype conversion."""
    return bool(kernel.ops) and all(any(c in str(op).lower() for c in CAST_OPS) for op in kernel.ops)


# --- one model, one precision -----------------------------------------------------------------
def coverage(graph, precision: str, *, arch: str = "sm_90") -> Coverage:
    """``graph`` (an op graph) scheduled all-CUDA in ``precision`` (a CUDA format: tf32,
    fp32, bf16, fp16) as the compiler schedules it (module doc)."""
    from tvm import tirx

    from hetpart import kernels
    from hetpart.compiler.precision import lower_plan_weights, options_for
    from hetpart.contracts.precision import Precision
    from hetpart.kernels import weight_prepack
    from hetpart.kernels.analysis import RULE_ATTR
    from hetpart.kernels.options import resolve
    from hetpart.targets import cuda_tvm_target

    prec = Precision(cuda=precision)
    plan = all_cuda_plan(graph)
    lowered = lower_plan_weights(graph, plan, prec)
    options = options_for(resolve(cuda_arch=arch), prec)
    scheduled = kernels.schedule(weight_prepack.mark_weights(lowered.module), cuda_tvm_target(arch), options)
    funcs = {gv.name_hint: f for gv, f in scheduled.functions_items() if isinstance(f, tirx.PrimFunc)}
    out = Coverage(precision)
    for k in sorted(lowered.kernels.values(), key=lambda k: k.index):
        out.cast_kernels += is_cast_kernel(k)
        func = funcs.get(k.func)
        if func is None:  # not a call_tir kernel (a VM builtin)
            continue
        rule = str(func.attrs[RULE_ATTR]) if func.attrs is not None and RULE_ATTR in func.attrs else "-"
        launch = launch_shape(func)
        out.rows.append(KernelRow(k.id, k.func, rule, launch.kernels, launch.grid, launch.block,
                                  cast_launches(func), is_prepacked(func)))
    return out


# --- on the GPU: the tensor-core kernels timed -------------------------------------------------
TENSOR_CORE_RULES = ("GpuTensorCoreGemm", "GpuTensorCoreSplitK", "GpuTensorCoreConvSplitK")


@dataclass(frozen=True)
class TimedKernel:
    """One distinct tensor-core kernel: its occurrences, flops and median us per variant."""

    func: str
    count: int
    flops: int
    us: dict


def time_tensor_core_kernels(graph, cov: Coverage, *, arch: str = "sm_90", max_kernels: int = 0) -> list[TimedKernel]:
    """The distinct kernels ``cov`` (tf32) gives a tensor-core rule, the ``max_kernels`` with
    the most flops (0: all), each timed on the GPU in ``tf32``, ``bf16`` and ``bf16
    unpacked`` (module doc)."""
    import tvm
    from hetpart.bench.switches import switched

    from hetpart.compiler.precision import options_for
    from hetpart.contracts.precision import Precision
    from hetpart.costmodel import kernel_bench
    from hetpart.importer.low_precision import lower_weights
    from hetpart.kernels.options import resolve
    from hetpart.kernels.rules import gpu_tensor_core
    from hetpart.targets import cuda_tvm_target

    target, dev = cuda_tvm_target(arch), tvm.cuda(0)
    low = lower_weights(graph, list(graph.kernels), "bfloat16")
    tc = {r.kernel for r in cov.rows if r.rule in TENSOR_CORE_RULES}
    picked, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: -k.flops):
        if k.id in tc and k.signature not in seen:
            seen.add(k.signature)
            picked.append(k)
    variants = (("tf32", graph, "tf32", True), ("bf16", low, "bf16", True), ("bf16 unpacked", low, "bf16", False))
    out = []
    for k in picked[:max_kernels or None]:
        us = {}
        for name, g, fmt, pack in variants:
            options = options_for(resolve(cuda_arch=arch), Precision(cuda=fmt))
            kmod = kernel_bench.single_kernel_module(g, g.kernels[k.id])
            with switched([] if pack else [f"{gpu_tensor_core.__name__}.PACK_LOW_PRECISION=0"]):
                exe = kernel_bench.build_module(kmod.mod, target, options)
            us[name] = kernel_bench.measure(kmod, exe, dev, kernel_bench.MeasureSettings()).median_s * 1e6
        count = sum(1 for x in graph.kernels.values() if x.signature == k.signature)
        out.append(TimedKernel(k.func, count, int(k.flops), us))
        print(f"  {k.func}: " + ", ".join(f"{n} {v:.1f} us" for n, v in us.items()), flush=True)
    return out


def timing_table(title: str, rows: list[TimedKernel]) -> str:
    """Markdown: per kernel us in each variant (x its occurrences in the total)."""
    names = list(rows[0].us) if rows else []
    lines = [f"### {title}: tensor-core kernels timed alone (median us)", "",
             "| kernel | x | GFLOP | " + " | ".join(names) + " | bf16 / tf32 | bf16 / unpacked |",
             "|---|--:|--:|" + "--:|" * (len(names) + 2)]
    for r in rows:
        lines.append(f"| {r.func[:60]} | {r.count} | {r.flops / 1e9:.2f} | "
                     + " | ".join(f"{r.us[n]:.1f}" for n in names)
                     + f" | {r.us['bf16'] / r.us['tf32']:.2f} | {r.us['bf16'] / r.us['bf16 unpacked']:.2f} |")
    if rows:
        tot = {n: sum(r.us[n] * r.count for r in rows) for n in names}
        lines.append(f"| **total x count** | {sum(r.count for r in rows)} | | "
                     + " | ".join(f"{tot[n]:.1f}" for n in names)
                     + f" | {tot['bf16'] / tot['tf32']:.2f} | {tot['bf16'] / tot['bf16 unpacked']:.2f} |")
    return "\n".join(lines)


# --- report -----------------------------------------------------------------------------------
def table(title: str, covs: list[Coverage], all_kernels: bool = False) -> str:
    """Markdown: per rule kernels/launches in each precision, the cast and prepack counts,
    and the kernels that differ (every kernel with ``all_kernels``)."""
    names = [c.precision for c in covs]
    rules = sorted({r for c in covs for r in c.by_rule()}, key=lambda r: -max(c.by_rule().get(r, (0, 0))[0]
                                                                                for c in covs))
    head = " | ".join(f"{n} kernels | {n} launches" for n in names)
    lines = [f"### {title}", "", f"| rule | {head} |", "|---|" + "--:|" * (2 * len(names))]
    for rule in rules:
        cells = " | ".join("{} | {}".format(*c.by_rule().get(rule, (0, 0))) for c in covs)
        lines.append(f"| {rule} | {cells} |")
    totals = " | ".join(f"**{len(c.rows)}** | **{sum(r.launches for r in c.rows)}**" for c in covs)
    lines.append(f"| **total** | {totals} |")
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "--:|" * len(names)]
    lines.append("| cast launches | " + " | ".join(str(sum(r.cast_launches for r in c.rows)) for c in covs) + " |")
    lines.append("| cast kernels | " + " | ".join(str(c.cast_kernels) for c in covs) + " |")
    lines.append("| prepacked weights | " + " | ".join(str(sum(r.prepacked for r in c.rows)) for c in covs) + " |")
    base = {r.kernel: r for r in covs[0].rows}
    differ = [k for k in base if any(k in o and o[k].shape() != base[k].shape()
                                     for o in ({r.kernel: r for r in c.rows} for c in covs[1:]))]
    lines.append(f"| kernels scheduled unlike {names[0]} | - | "
                 + " | ".join(str(sum(1 for k in differ if any(r.kernel == k for r in c.rows))) for c in covs[1:])
                 + " |")
    shown = list(base) if all_kernels else differ
    if shown:
        lines += ["", "| kernel | function | " + " | ".join(f"{n}: rule, launches, grid x block, casts, prepacked"
                                                          for n in names) + " |",
                  "|---|---|" + "---|" * len(names)]
        index = [{r.kernel: r for r in c.rows} for c in covs]
        for k in shown:
            cells = []
            for ix in index:
                r = ix.get(k)
                cells.append("-" if r is None else
                             f"{r.rule}, {r.launches}, {r.grid}x{r.block}, {r.cast_launches}, "
                             f"{'yes' if r.prepacked else 'no'}")
            lines.append(f"| {k} | {base[k].func} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="zoo:NAME[:small][:key=value,...] or .onnx files")
    ap.add_argument("--batch", type=int, default=1, help="batch of the zoo models (default 1)")
    ap.add_argument("--precisions", default="tf32,bf16",
                    help="CUDA formats, the first the baseline (default tf32,bf16)")
    ap.add_argument("--kernels", action="store_true", help="list every kernel, not only those that differ")
    ap.add_argument("--md", help="append the tables to this markdown file")
    ap.add_argument("--time", action="store_true", help="(GPU) time the tensor-core kernels: tf32, bf16, bf16 unpacked")
    ap.add_argument("--max-kernels", type=int, default=0, help="with --time: the N with the most flops (0: all)")
    args = ap.parse_args(argv)
    if args.time:
        from hetpart.targets import cuda_available

        if not cuda_available():
            ap.error("--time needs a CUDA GPU")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    texts = []
    for spec in args.models:
        graph = load_model(spec, args.batch)
        covs = [coverage(graph, p) for p in precisions]
        texts.append(table(f"{spec} batch {args.batch}", covs, args.kernels))
        print(texts[-1] + "\n", flush=True)
        if args.time:
            rows = time_tensor_core_kernels(graph, coverage(graph, "tf32"), max_kernels=args.max_kernels)
            texts.append(timing_table(f"{spec} batch {args.batch}", rows))
            print(texts[-1] + "\n", flush=True)
    append_md(args.md, texts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
