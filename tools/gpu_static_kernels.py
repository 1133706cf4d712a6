"""Static view of a model's CUDA kernels as hetpart builds them -- no GPU needed.

    PYTHONPATH=. python tools/gpu_static_kernels.py zoo:efficientnet [--batch 1] [--md OUT.md] [--json OUT.json]
    PYTHONPATH=. python tools/gpu_static_kernels.py model.onnx [--no-source]
    PYTHONPATH=. python tools/gpu_static_kernels.py zoo:bert:seq_len=197 --rates h200  # a ViT-B/16-shaped layer stack
    PYTHONPATH=. python tools/gpu_static_kernels.py zoo:bert --set hetpart.importer.concat_projections.CONCAT_PROJECTIONS=1

For every fused kernel of the model's all-CUDA build (cross-compiled for sm_90 with
the default :class:`~hetpart.kernels.options.KernelOptions`: TF32 on, split-K, 132
SMs): the schedule rule that got it (``hetpart.rule``), its launch shape read from
the scheduled TIR (grid = product of the ``blockIdx`` loop extents, block = product
of the ``threadIdx`` ones; a function of several kernels shows the largest of each),
the stores each thread executes (:func:`serial_stores`: the serial trip counts of the
loops around each store, multiplied, summed over stores -- the work one thread does
in sequence), whether its CUDA C has ``cvt.rna`` (the TF32 rounding of tensor-core
operands), the tensor-core instruction it issues (``mma.sync <A type>`` read from the CUDA
C, ``CUDA cores`` when none; a dense layer the build replaces by the hand-written Hopper
GEMM -- :mod:`hetpart.kernels.wgmma_substitute`, a bf16 build's default above one 128-row
tile -- is ``wgmma <family>`` with rule ``WgmmaGemm`` and the variant's launch), its
category (``tools/gpu_kernel_categories.py``), bytes and flops, and two time estimates:

* ``roofline``: max(bytes / :data:`HBM_BPS`, flops / peak) with peak
  :data:`TC_FLOPS` for tensor-core rules, :data:`SIMT_FLOPS` otherwise, never under
  :data:`MIN_KERNEL_S` (a kernel's own latency in a CUDA graph);
* ``est.`` (what the schedule allows), the largest of: the roofline with bandwidth and
  flop rate scaled by the share of SMs the grid occupies (min(1, grid / SMs); the
  bandwidth by the widest of a function's kernels, the flops by the one shown), never
  under :data:`MIN_KERNEL_S` per kernel of the function (split-K's two: 4 us); for a
  grid smaller than the SM count (one block per SM at most: no latency hiding), the
  serial stores per thread to memory x :data:`SERIAL_STORE_S` plus those to registers
  x :data:`SERIAL_REGISTER_S`; for a kernel that gives each
  output element a thread block of its own (dlight's ``GeneralReduction`` on a sliding
  window: blocks == outputs), blocks x :data:`NS_PER_OUTPUT_BLOCK` -- the rate
  measured on the H200 for MobileNet-v2 at batch 32 before ``gpu_window`` (77.5 ms for
  ~7.4e7 such blocks).  Rough by design: it ranks kernels, the GPU run measures them.

Flags (:func:`flags`): ``block/output`` (the above), ``<SMs`` (grid smaller than the
SM count: idle SMs), ``serial>N`` (more than :data:`SERIAL_LIMIT` stores per thread),
``simt-gemm`` (a contraction of > :data:`SIMT_GEMM_FLOPS` flops on CUDA cores with TF32 on).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_kernel_categories import feeds_se, hetpart_category, kernel_name_pattern  # noqa: E402

HBM_BPS = 3.3e12
"""Bytes/s a streaming kernel reaches on the H200 (4.8 TB/s peak)."""
TC_FLOPS = 300e12
"""TF32 tensor-core flop/s a good GEMM reaches on the H200 (495 dense peak)."""
SIMT_FLOPS = 40e12
"""float32 CUDA-core flop/s of a good SIMT kernel (67 peak)."""
MIN_KERNEL_S = 2e-6
"""Least time of one kernel node in a CUDA graph (launch, ramp, drain)."""
NS_PER_OUTPUT_BLOCK = 1.0e-9
"""Seconds per 256-thread block of a block-per-output window reduction (see module doc)."""
SERIAL_STORE_S = 25e-9
"""Seconds per serial store to global/shared memory of a thread on an otherwise idle SM
(each such store waits on a global load: ~600 cycles of latency over the ~16
iterations nvcc's unrolling keeps in flight): rough."""
SERIAL_REGISTER_S = 1e-9
"""Seconds per serial store to a register (a multiply-add of a register tile): rough."""
SERIAL_LIMIT = 2048
SIMT_GEMM_FLOPS = 20e6
WGMMA_RULE = "WgmmaGemm"
"""``hetpart.rule`` of a dense layer :mod:`hetpart.kernels.wgmma_substitute` replaces
(:data:`hetpart.kernels.wgmma_substitute.RULE`; the tool reads the substitution, see :func:`analyse`)."""
TC_RULES = ("GpuTensorCoreGemm", "GpuTensorCoreSplitK", "GpuTensorCoreConvSplitK", WGMMA_RULE)
MEMORY_SCOPES = ("global", "shared", "shared.dyn", "")
"""Storage scopes counted as memory (any other -- local, warp, fragments -- is registers)."""


@dataclass
class Launch:
    """``serial``: stores a thread executes in sequence; ``serial_memory``: those to
    global or shared memory (the rest go to registers)."""

    grid: int
    block: int
    serial: int
    serial_memory: int = 0
    kernels: int = 1
    wide_grid: int = 0  # the largest grid of any of the function's kernels (0: ``grid``)


@dataclass
class Row:
    id: str
    func: str
    count: int
    category: str
    rule: str
    grid: int
    block: int
    serial: int
    serial_memory: int
    kernels: int
    outputs: int
    cvt_rna: bool | None
    bytes: int
    flops: int
    roofline_us: float
    estimate_us: float
    flags: list
    instruction: str = "-"  # wgmma <family> (bf16, f32a), else :func:`instruction_by_function`'s, else mma.sync or CUDA cores
    weights: int = 0  # constant arguments (weight, bias): a dense layer's matmul has some, attention's products none


# --- launch shape from TIR --------------------------------------------------------------------
def _children(stmt):
    """The statements directly under ``stmt`` (loop bodies, sequences, blocks, branches)."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.SeqStmt):
        return list(stmt.seq)
    if isinstance(stmt, s_tir.SBlockRealize):
        return [stmt.block]
    if isinstance(stmt, s_tir.SBlock):
        return [s for s in (stmt.init, stmt.body) if s is not None]
    if isinstance(stmt, tirx.IfThenElse):
        return [s for s in (stmt.then_case, stmt.else_case) if s is not None]
    body = getattr(stmt, "body", None)
    return [body] if body is not None else []


def launch_shape(func) -> Launch:
    """Grid, block and serial stores per thread of a scheduled PrimFunc (module doc).
    A function of several kernels (a thread-bound nest each, launched one after the
    other: split-K's partial products, then their sum): the grid and block of the
    kernel whose threads do the most serial work (split-K's first), ``kernels`` their
    number, the serial stores summed over them.  A weight-layout rewrite
    (:mod:`hetpart.kernels.weight_prepack`'s, run at compile time) is not counted."""
    from tvm import tirx

    kernels: list[dict] = []
    inside = [False]

    from tvm import s_tir

    from hetpart.kernels.register_tile import LAYOUT_REWRITE_PREPROC

    def walk(stmt, mult: int) -> tuple[int, int]:
        if isinstance(stmt, s_tir.SBlock) and LAYOUT_REWRITE_PREPROC in stmt.annotations:
            return 0, 0  # a weight packed once at compile time (weight_prepack), not per call
        if isinstance(stmt, tirx.BufferStore):
            return mult, (mult if stmt.buffer.scope() in MEMORY_SCOPES else 0)
        if isinstance(stmt, tirx.For):
            extent = int(stmt.extent) if isinstance(stmt.extent, tirx.IntImm) else 1
            if stmt.thread_binding is None:
                return walk(stmt.body, mult * extent)
            if inside[0]:
                tags = kernels[-1]["tags"]
                tag = str(stmt.thread_binding.thread_tag)
                tags[tag] = max(tags.get(tag, 1), extent)
                return walk(stmt.body, mult)
            # The outermost thread-bound loop of a nest: a kernel of its own.
            kernels.append({"tags": {str(stmt.thread_binding.thread_tag): extent}})
            inside[0] = True
            found = walk(stmt.body, mult)
            inside[0] = False
            kernels[-1]["serial"] = found
            return found
        parts = [walk(s, mult) for s in _children(stmt)]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    serial, memory = walk(func.body, 1)

    def size(tags, prefix):
        return math.prod(v for k, v in tags.items() if k.startswith(prefix))

    if not kernels:
        return Launch(1, 1, serial, memory, 1)
    main = max(kernels, key=lambda k: (k["serial"][0], size(k["tags"], "blockIdx") * size(k["tags"], "threadIdx")))
    wide = max(size(k["tags"], "blockIdx") for k in kernels)
    return Launch(size(main["tags"], "blockIdx"), size(main["tags"], "threadIdx"), serial, memory, len(kernels), wide)


# --- CUDA source ------------------------------------------------------------------------------
TF32_ROUNDING = ("cvt.rna", "__float_to_tf32")
"""How TVM's CUDA C rounds to TF32: PTX inline, or the wmma helper (``cvt.rna.tf32.f32``)."""
_KERNEL_RE = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\((\d+)\) )?(\w+)\(')
_MMA_RE = re.compile(r"mma\.sync\.aligned\.m\d+n\d+k\d+\.row\.col\.f32\.(\w+?)\.")
WGMMA_PTX = "wgmma.mma_async"
CUDA_CORES = "CUDA cores"


def kernels_in_source(source: str) -> dict[str, dict]:
    """``{kernel name: {"threads": launch bound or None, "cvt_rna": bool, "mma": set}}`` from TVM's
    CUDA C (each ``__global__`` definition's text up to the next one); ``mma``: the tensor-core
    instructions it issues, ``"wgmma"`` or ``"mma.sync <A type>"`` (``bf16``, ``tf32``, ``f16``)."""
    found = list(_KERNEL_RE.finditer(source))
    out: dict[str, dict] = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(source)
        body = source[m.end():end]
        entry = out.setdefault(m.group(2), {"threads": None, "cvt_rna": False, "mma": set()})
        if m.group(1):
            entry["threads"] = int(m.group(1))
        entry["cvt_rna"] = entry["cvt_rna"] or any(m in body for m in TF32_ROUNDING)
        entry["mma"] |= {f"mma.sync {t}" for t in _MMA_RE.findall(body)}
        if WGMMA_PTX in body:
            entry["mma"].add("wgmma")
    return out


def instruction_by_function(source_kernels: dict[str, dict], funcs) -> dict[str, str]:
    """Per PrimFunc name (its kernels as :func:`cvt_rna_by_function` finds them): the
    tensor-core instruction its kernels issue (several joined by ``+``), :data:`CUDA_CORES`
    when none does; functions with no kernel in the source are left out."""
    out = {}
    for f in funcs:
        mine = [v for k, v in source_kernels.items() if k == f or re.fullmatch(kernel_name_pattern(f), k)]
        if mine:
            kinds = sorted(set().union(*(v.get("mma", set()) for v in mine)))
            out[f] = "+".join(kinds) or CUDA_CORES
    return out


def cvt_rna_by_function(source_kernels: dict[str, dict], funcs) -> dict[str, bool]:
    """Per PrimFunc name: True when any CUDA kernel named after it (``<func>_kernel*``;
    ``<func>_prepacked_kernel*`` once :mod:`hetpart.kernels.weight_prepack` has split
    the weight packing off) rounds to TF32; None when no kernel is found."""
    out = {}
    for f in funcs:
        mine = [v for k, v in source_kernels.items() if k == f or re.fullmatch(kernel_name_pattern(f), k)]
        out[f] = any(v["cvt_rna"] for v in mine) if mine else None
    return out


def cuda_source(executable) -> str:
    """The CUDA C of every device module under ``executable`` (a build may hold several)."""
    def walk(mod) -> list[str]:
        try:
            src = mod.inspect_source()
        except Exception:  # noqa: BLE001 - host modules have no CUDA source
            src = ""
        own = [src] if "__global__" in src else []
        return own + [s for m in mod.imports for s in walk(m)]

    return "\n".join(walk(executable.mod if hasattr(executable, "mod") else executable))


# --- estimates --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """The machine the estimates assume: HBM bytes/s, tensor-core and SIMT flop/s a good
    kernel reaches; ``low_occupancy_warps``: warps per SM up to which a grid of a block
    per SM or more still pays its threads' serial work in latency (0: only grids under
    the SM count, as before)."""

    hbm_bps: float = HBM_BPS
    tc_flops: float = TC_FLOPS
    simt_flops: float = SIMT_FLOPS
    low_occupancy_warps: int = 0


DEFAULT_RATES = Rates()
BRIEF_RATES = Rates(hbm_bps=4.8e12, tc_flops=0.5 * 495e12, simt_flops=60e12, low_occupancy_warps=8)
"""``--rates h200``: the H200's 4.8 TB/s, half its 495 TFLOP/s dense TF32 tensor-core peak,
60 TFLOP/s on CUDA cores; a grid of at most 8 warps per SM (a 128-thread block or two:
one or two warps per scheduler, nothing to switch to while a load is in flight) pays
its serial work as a grid under the SM count does."""


def estimates(rule: str, launch: Launch, outputs: int, nbytes: int, flops: int,
              sm_count: int = 132, rates: Rates = DEFAULT_RATES) -> tuple[float, float]:
    """(roofline, schedule) estimates in seconds (module doc) at ``rates``."""
    peak = rates.tc_flops if rule in TC_RULES else rates.simt_flops
    floor = MIN_KERNEL_S * max(launch.kernels, 1)  # each kernel node of the function its own
    roof = max(nbytes / rates.hbm_bps, flops / peak, floor)
    share = min(1.0, max(launch.grid, 1) / sm_count)  # of the kernel with the serial work
    wide = min(1.0, max(launch.wide_grid, launch.grid, 1) / sm_count)  # of the widest kernel
    est = max(nbytes / (rates.hbm_bps * wide), flops / (peak * share), floor)
    warps_per_sm = launch.grid * launch.block / 32 / sm_count
    if launch.grid < sm_count or warps_per_sm <= rates.low_occupancy_warps:
        memory = launch.serial_memory
        est = max(est, memory * SERIAL_STORE_S + (launch.serial - memory) * SERIAL_REGISTER_S)
    if block_per_output(rule, launch, outputs):
        est = max(est, launch.grid * NS_PER_OUTPUT_BLOCK)
    return roof, est


def block_per_output(rule: str, launch: Launch, outputs: int) -> bool:
    return rule == "GeneralReduction" and outputs > 0 and launch.grid >= outputs


def flags(rule: str, category: str, launch: Launch, outputs: int, flops: int, sm_count: int, tf32: bool = True) -> list:
    out = []
    if block_per_output(rule, launch, outputs):
        out.append("block/output")
    if launch.grid < sm_count:
        out.append("<SMs")
    if launch.serial > SERIAL_LIMIT:
        out.append(f"serial>{SERIAL_LIMIT}")
    if tf32 and rule not in TC_RULES and category in ("pointwise conv", "conv", "matmul") and flops > SIMT_GEMM_FLOPS:
        out.append("simt-gemm")
    return out


def wgmma_launch(found, sm_count: int) -> Launch:
    """The launch of the ``wgmma`` GEMM replacing the match ``found`` (a
    :class:`hetpart.kernels.wgmma_match.WgmmaGemm`): :func:`hetpart.kernels.wgmma_variant.choose`'s
    variant -- grid N / bn x ceil(M / (64 x consumers)) x split, 128 threads per consumer
    warpgroup (and one producer warpgroup more for ``producer="warp"``), a second kernel (the
    reduction) when split -- and each consumer thread's serial stores taken as its share of the
    output tile (the accumulators it writes)."""
    from hetpart.kernels import wgmma_variant as wv

    v = wv.choose(found.m, found.n, found.k, found.precision, sms=sm_count)
    tile_m = 64 * v.consumers
    grid = (found.n // v.bn) * -(-found.m // tile_m) * v.split
    threads = 128 * v.consumers
    per_thread = tile_m * v.bn // threads
    if v.producer == "warp":  # the producer warpgroup (wgmma_ws) stores nothing
        threads += 128
    return Launch(grid, threads, per_thread, per_thread, 2 if v.split > 1 else 1, grid)


def replaced_by_wgmma(module, target, options) -> dict:
    """``{PrimFunc name: WgmmaGemm}`` of the kernels :func:`hetpart.kernels.build` replaces by the
    hand-written ``wgmma`` GEMM (:mod:`hetpart.kernels.wgmma_substitute`: with the bf16 defaults,
    a bf16 build's dense layers above one 128-row tile on sm_90): those it takes whose PrimFunc
    the substituted module no longer has."""
    from hetpart.kernels import wgmma_substitute

    taken = wgmma_substitute.taken(module, target, options)
    if not taken:
        return {}
    left = {gv.name_hint for gv in wgmma_substitute.substitute(module, target, options).get_global_vars()}
    return {name: found for name, found in taken.items() if name not in left}


# --- the model --------------------------------------------------------------------------------
def analyse(model, *, source: bool = True, options=None, rates: Rates = DEFAULT_RATES,
            precision: str | None = None) -> list[Row]:
    """One :class:`Row` per distinct kernel signature of ``model`` (an ONNX ModelProto
    or path), in graph order, ``count`` its occurrences.  ``precision`` (a CUDA format:
    tf32, fp32, bf16, fp16): build as :func:`hetpart.compiler.compile` does in it --
    weights lowered to its storage on every kernel, its kernel options, weights marked
    layout-free (so the tensor-core rules pack them at compile time); bytes then count
    the stored weights.  None: the float32 graph with the default options, weights not
    marked (the tool's tables before precisions).  A kernel the build replaces by the
    hand-written ``wgmma`` GEMM (:func:`replaced_by_wgmma`) gets rule :data:`WGMMA_RULE` and
    :func:`wgmma_launch`'s shape and instruction ``wgmma <family>`` (``bf16``: A stored bf16; ``f32a``:
    a float32 A narrowed in the kernel); the others' instruction is read from the CUDA C (``source``),
    else ``mma.sync`` for the tensor-core rules, :data:`CUDA_CORES`."""
    from tvm import tirx

    from hetpart import kernels, load
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels.analysis import RULE_ATTR
    from hetpart.kernels.options import resolve
    from hetpart.targets import cuda_tvm_target

    options = options or resolve(cuda_arch="sm_90")
    target = cuda_tvm_target("sm_90")
    graph = load(model)
    module = graph.module
    if precision is not None:
        from model_spec import all_cuda_plan

        from hetpart.compiler.precision import lower_plan_weights, options_for
        from hetpart.contracts.precision import Precision
        from hetpart.kernels import weight_prepack

        prec = Precision(cuda=precision)
        graph = lower_plan_weights(graph, all_cuda_plan(graph), prec)
        options = options_for(options, prec)
        module = weight_prepack.mark_weights(graph.module)
    wgmma = replaced_by_wgmma(module, target, options)
    scheduled = kernels.schedule(module, target, options)
    funcs = {gv.name_hint: f for gv, f in scheduled.functions_items() if isinstance(f, tirx.PrimFunc)}
    rna, instr = {}, {}
    if source:
        exe = kernels.build(module, target, cuda_graph=False, options=options)
        found = kernels_in_source(cuda_source(exe))
        rna = cvt_rna_by_function(found, funcs)
        instr = instruction_by_function(found, funcs)
    counts = Counter(k.signature for k in graph.kernels.values())
    rows, seen = [], set()
    for k in sorted(graph.kernels.values(), key=lambda k: k.index):
        if k.signature in seen or k.func not in funcs:
            continue
        seen.add(k.signature)
        func = funcs[k.func]
        rule = str(func.attrs[RULE_ATTR]) if func.attrs is not None and RULE_ATTR in func.attrs else "-"
        launch = launch_shape(func)
        if k.func in wgmma:
            rule, launch = WGMMA_RULE, wgmma_launch(wgmma[k.func], options.sm_count)
        ins = (f"wgmma {wgmma[k.func].precision}" if k.func in wgmma else
               instr.get(k.func, "mma.sync" if rule in TC_RULES else CUDA_CORES))
        kmod = kernel_bench.single_kernel_module(graph, k)
        weights = [a.shape for a in kmod.args if a.weight]
        shapes = [graph.tensors[t].shape for t in k.inputs]
        category = hetpart_category(k.ops, k.op_class, shapes, weights, se_pool=feeds_se(graph, k))
        outputs = sum(math.prod(graph.tensors[t].shape) for t in k.outputs)
        nbytes = int(k.bytes_read + k.bytes_written)
        roof, est = estimates(rule, launch, outputs, nbytes, int(k.flops), options.sm_count, rates)
        rows.append(Row(k.id, k.func, counts[k.signature], category, rule, launch.grid, launch.block,
                        launch.serial, launch.serial_memory, launch.kernels, outputs,
                        None if k.func in wgmma else rna.get(k.func), nbytes, int(k.flops), roof * 1e6, est * 1e6,
                        flags(rule, category, launch, outputs, int(k.flops), options.sm_count, options.tf32),
                        ins, len(weights)))
    return rows



# --- report -----------------------------------------------------------------------------------
def table(rows: list[Row], title: str) -> str:
    lines = [f"### {title}", "",
             "| kernel | x | category | rule | instruction | launches | grid | block | serial/thr (mem) | outputs | cvt.rna | "
             "MB | MFLOP | roofline us | est. us | flags |",
             "|---|--:|---|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|---|"]
    for r in rows:
        rna = "-" if r.cvt_rna is None else ("yes" if r.cvt_rna else "no")
        lines.append(f"| {r.func} | {r.count} | {r.category} | {r.rule} | {r.instruction} | {r.kernels} | {r.grid} | "
                     f"{r.block} | {r.serial} ({r.serial_memory}) | "
                     f"{r.outputs} | {rna} | {r.bytes / 1e6:.2f} | {r.flops / 1e6:.1f} | {r.roofline_us:.1f} | "
                     f"{r.estimate_us:.1f} | {' '.join(r.flags)} |")
    return "\n".join(lines)


def summary(rows: list[Row], title: str) -> str:
    """Per category, per instruction and per rule: kernels, roofline and schedule estimates (x count)."""
    lines = [f"### {title}: per category", "",
             "| category | kernels | roofline us | est. us | flagged kernels |", "|---|--:|--:|--:|--:|"]
    cats: dict[str, list] = {}
    for r in rows:
        cats.setdefault(r.category, []).append(r)
    tot = [0, 0.0, 0.0, 0]
    for cat, rs in sorted(cats.items(), key=lambda kv: -sum(r.estimate_us * r.count for r in kv[1])):
        n = sum(r.count for r in rs)
        roof = sum(r.roofline_us * r.count for r in rs)
        est = sum(r.estimate_us * r.count for r in rs)
        flagged = sum(r.count for r in rs if r.flags)
        tot = [tot[0] + n, tot[1] + roof, tot[2] + est, tot[3] + flagged]
        lines.append(f"| {cat} | {n} | {roof:.0f} | {est:.0f} | {flagged} |")
    lines.append(f"| **total** | {tot[0]} | {tot[1]:.0f} | {tot[2]:.0f} | {tot[3]} |")
    lines += ["", "| instruction | kernels | MB | GFLOP | est. us |", "|---|--:|--:|--:|--:|"]
    instrs: dict[str, list] = {}
    for r in rows:
        instrs.setdefault(r.instruction, []).append(r)
    for ins, rs in sorted(instrs.items(), key=lambda kv: -sum(r.estimate_us * r.count for r in kv[1])):
        lines.append(f"| {ins} | {sum(r.count for r in rs)} | {sum(r.bytes * r.count for r in rs) / 1e6:.1f} | "
                     f"{sum(r.flops * r.count for r in rs) / 1e9:.2f} | {sum(r.estimate_us * r.count for r in rs):.0f} |")
    lines += ["", "| rule | kernels | grid < SMs | est. us |", "|---|--:|--:|--:|"]
    rules: dict[str, list] = {}
    for r in rows:
        rules.setdefault(r.rule, []).append(r)
    for rule, rs in sorted(rules.items(), key=lambda kv: -sum(r.count for r in kv[1])):
        lines.append(f"| {rule} | {sum(r.count for r in rs)} | {sum(r.count for r in rs if '<SMs' in r.flags)} | "
                     f"{sum(r.estimate_us * r.count for r in rs):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="zoo:NAME[:key=value,...] or an .onnx file")
    ap.add_argument("--batch", type=int, default=1, help="batch of a zoo model (default 1)")
    ap.add_argument("--no-source", action="store_true", help="skip the CUDA build (no cvt.rna column)")
    ap.add_argument("--md", help="append the tables to this markdown file")
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--precision", choices=("tf32", "fp32", "bf16", "fp16"),
                    help="build as hetpart.compile does in this CUDA format (weights lowered and marked; analyse())")
    ap.add_argument("--rates", choices=("default", "h200"), default="default",
                    help="the machine the estimates assume (Rates): default, or h200 (BRIEF_RATES)")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="set a module switch before the build (e.g. hetpart.importer.concat_projections."
                         "CONCAT_PROJECTIONS=1; hetpart.bench.switches' syntax); repeatable")
    args = ap.parse_args(argv)
    from hetpart.bench.switches import apply_switches, parse_switches
    from hetpart.errors import HetpartError

    try:
        apply_switches(parse_switches(args.set))
    except HetpartError as exc:
        ap.error(f"--set: {exc}")
    if args.model.startswith("zoo:"):
        from hetpart.models import build, parse_zoo_spec

        name, small, cfg = parse_zoo_spec(args.model)  # zoo:bert:seq_len=197,layers=2 too
        model = build(name, small, **{**cfg, "batch": args.batch})
    else:
        import onnx

        model = onnx.load(args.model)
    rows = analyse(model, source=not args.no_source, rates=BRIEF_RATES if args.rates == "h200" else DEFAULT_RATES,
                   precision=args.precision)
    title = f"{args.model} batch {args.batch}" + (f" {args.precision}" if args.precision else "")
    text = summary(rows, title) + "\n\n" + table(rows, title) + "\n"
    print(text)
    if args.md:
        with open(args.md, "a") as fh:
            fh.write(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
