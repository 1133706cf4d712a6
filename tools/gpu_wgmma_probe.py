"""On a Hopper GPU: is the hand-written ``wgmma`` GEMM (:mod:`hetpart.kernels.wgmma_gemm`,
issue 17 spike) right, and how fast is it against hetpart's ``mma.sync`` rule?

    PYTHONPATH=. python3 tools/gpu_wgmma_probe.py --json OUT.json        # ~60-90 s on an H100
    PYTHONPATH=. python3 tools/gpu_wgmma_probe.py --dry --json OUT.json  # no GPU: builds only
    PYTHONPATH=. python3 tools/gpu_wgmma_probe.py --only tf32 --only f32a --only splitk --budget 300 --json OUT2.json
                                                          # steps 7-9 only (after 1-6 the default budget is spent)

Steps, each shape and variant caught on its own (a failure is recorded with its error and
the probe goes on), the JSON rewritten after every step, anything left skipped (and listed)
once ``--budget`` seconds have passed.  Order, most telling first: 1 (main variant),
2 (three variants), 3 (bf16), 4 (three more variants), 5 (tf32), 6 (other variants):

1. correctness: the test shapes (M in {64, 197}, N in {128, 768}, K in {64, 768}) with
   the main variants, each run once on bf16 inputs (negatives, every 7th element zero,
   C pre-filled with NaN) against numpy (float64 sums of the same bf16 values): max
   |C - ref| / max |ref|; expected ~1e-6 (float32 sums), a layout error gives O(1).  If
   the first one is wrong, the same shape with the descriptor's LBO/SBO exchanged
   (``swapped_descriptor``) says whether the ISA reading of the two fields is the issue.
2. ViT-B/16 at batch 1 (M = 197): qkv 2304x768, proj 768x768, fc1 3072x768, fc2 768x3072
   (N x K), every variant (bn, stages): checked as in 1, then timed.  Two timings: ``raw``
   (the kernel's host function called 50 times back to back, then a sync; median of 5)
   and ``vm`` (the kernel called from a Relax VM ``main`` by
   :func:`hetpart.costmodel.kernel_bench.time_executable`, median of repeats of >= 4 ms --
   the same harness as the baseline, VM call overhead included in both).
3. baseline: the same GEMM as an ONNX MatMul (x [1, 197, K] float32 @ W [K, N]) built by
   :func:`hetpart.kernels.build` for sm_90 -- ``bf16`` (weights stored in bf16,
   ``gpu_tensor_core.LOW_PRECISION_MMA`` on: bf16 ``mma.sync`` m16n8k16, what issue 17
   compares) and ``tf32`` (the default build) -- timed by the same VM harness; its error
   against numpy reported too (against the bf16-rounded product for bf16).

Then the variants of the second spike (``wgmma_layout``/``wgmma_splitk``), each group after
all of the above so the first part's results stay comparable (``--only`` picks groups: ``bf16``
is steps 1-6, the others are these; a group's baseline is built here if step 3/5 did not run):

7. ``tf32`` (float32 A and B, ``m64nNk8.f32.tf32.tf32``): correctness on the test shapes
   (inputs rounded to tf32 first; ``rel_err_unrounded`` is the same kernel on the raw float32
   inputs against their float64 product: the tensor core drops the low mantissa bits, where
   hetpart's TF32 rule rounds), then the ViT shapes timed, against hetpart's ``tf32`` build;
   then ``tf32r`` (A rounded ``cvt.rna`` on the register path, B pre-rounded: hetpart's TF32
   numerics; ``rel_err_unrounded`` against the raw float32 A and B) the same way.
8. ``f32a`` (float32 A narrowed to bf16 on the way to shared memory, bf16 B: what hetpart's
   bf16 builds feed a GEMM): correctness, then the ViT shapes, against hetpart's ``bf16`` build
   (the same inputs and dtypes: the fair comparison of issue 17).
9. ``splitk``: every ViT shape with ``wgmma_splitk.choose_split``'s split (proj/fc2: 6 at
   bn = 128), f32a and bf16, timed as the whole GEMM (partials + reduction; ``raw`` calls both
   PrimFuncs), and fc1 with the bias + GELU epilogue (split 1 in the store, split 2 in the
   reduction) to price the fusion.

Then the third spike's layouts (``--only swizzle``; :class:`wgmma_layout.PipelinePlan`), run by
themselves (``--only swizzle --budget 170 --json OUT3.json``, ~2-3 min on an H100):

10. ``swizzle``: the 128-byte swizzled layout (``swizzle=128b``) and two consumer warpgroups per
    CTA (``consumers=2``: 128-row tiles, 256 threads), bn up to 256 (:data:`SWIZZLE_VARIANTS`):
    the bf16 ones on the ViT shapes first (checked against float64 numpy as in 7-9, then timed),
    hetpart's bf16 build, then every variant on two test shapes (M 64 and 197, untimed), then the
    tf32 / f32a ones on the ViT shapes, hetpart's tf32 build, then split-K (``choose_split`` with
    the variant's consumers) of proj / fc2 with the best-guess layout.  Rows carry ``swizzle``
    and ``consumers``; the summary prints the best per shape against hetpart's build.

Then the substitution's own choice (``--only rule``, ~1 min on an H100; device step 152):

11. ``rule``: per ViT shape the variant :func:`hetpart.kernels.wgmma_variant.choose` picks for
    ``bf16`` and for ``f32a`` (what ``WGMMA_GEMM`` builds into a model), then (group ``f32a64``) the
    f32a variants step 150 did not time: bn 64, two consumers, 128B swizzle, 4 stages, unsplit and,
    where K >= N, at ``choose_split``'s split for bn 64; hetpart's bf16 build.  Summaries (and
    ``best_variants``) ``rule_bf16``, ``rule_f32a`` and ``f32a64``.

Then batch 32 (``--only large``, ~2-3 min on an H100; device step 160):

12. ``large``: ViT-B/16's four GEMMs at batch 32 (M = 6304, :data:`LARGE`), each layout of
    :data:`LARGE_VARIANTS` (bf16 and f32a, 128B swizzle, two consumers, unsplit: at this M every
    launch has waves of CTAs, so ``choose_split`` gives 1 and the rule's own pick is among them,
    marked ``rule``), checked against float64 numpy and timed; beside them cuBLAS through PyTorch
    (``torch.nn.functional.linear`` on bf16 tensors, CUDA events over 50 back-to-back calls,
    median of 5: the rate a user's PyTorch gets), row ``cublas``.  Decides
    :data:`hetpart.kernels.wgmma_variant.LARGE_M_BN`; summary ``best_variants["large"]``.
    12w: the warp-specialised spike (``producer="warp"``, :data:`LARGE_WS_VARIANTS`: a TMA producer
    warpgroup and full / empty mbarriers, :mod:`hetpart.kernels.wgmma_ws`), rows ``producer=warp``.
    12e: the batch-32 spike's main-loop and epilogue options (:data:`LARGE_EPI_VARIANTS`): ``inflight=1``
    (``wgmma.wait_group 1``, one K tile's wgmmas left in flight: :mod:`hetpart.kernels.wgmma_schedule`)
    and ``store=pairs`` (8-byte stores of the D fragment's column pairs), rows ``inflight=1`` / ``store=pairs``;
    compare each with the cp.async row of the same precision, bn and stages above it.

Then the TF32 family's layouts (``--only tf32x``, ~3-4 min on an H100; ``--budget 300``):

13. ``tf32x``: ViT-B/16's four GEMMs at batch 1 (M = 197) then batch 32 (M = 6304), each with cuBLAS TF32 through
    PyTorch (float32 tensors, ``allow_tf32``; row ``cublas_tf32``), hetpart's TF32 build (``mma.sync``, what a TF32
    build runs today: ``WGMMA_GEMM`` is off) and the ``tf32r`` layouts of :data:`TF32X_VARIANTS` -- the rule's
    (:func:`hetpart.kernels.wgmma_variant.choose` with the ``TF32_*`` switches at their defaults, marked ``rule``),
    then the pair store, deeper pipelines, 128B swizzle with two consumers and bn 64 (the ``TF32_*`` switches'
    values), each at ``choose_split``'s split for its tile and consumers, checked against float64 numpy and timed.
    Decides the ``TF32_*`` switches; summary ``best_variants["tf32x"]`` (raw times: cuBLAS has no VM harness).

Printed: one line per result (ms, TFLOP/s); JSON: ``{"device", "correctness": [...],
"vit": [...], "baseline": [...], "variants": [...], "skipped": [...], "elapsed_s"}``
(``variants``: the rows of steps 7-9, with ``precision``, ``split``, ``epilogue``, ``group``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEST_SHAPES = [(m, n, k) for m in (64, 197) for n in (128, 768) for k in (64, 768)]
VIT = {"qkv": (197, 2304, 768), "proj": (197, 768, 768), "fc1": (197, 3072, 768), "fc2": (197, 768, 3072)}
"""name -> (M, N, K) of ViT-B/16's GEMMs at batch 1."""
CHECK_VARIANTS = [(128, 3), (128, 1), (64, 2)]
"""(bn, stages) checked on every test shape (the first in step 1, the others last)."""
VIT_VARIANTS = [(128, 3), (64, 3), (128, 1), (128, 2), (128, 4), (64, 4)]
"""(bn, stages) timed on the ViT shapes (the first three in step 2, the others in step 4)."""


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"


def bf16_inputs(m: int, n: int, k: int, seed: int = 0):
    """(A [m, k], B [n, k]) bf16 (ml_dtypes): :func:`variant_inputs`'s bf16 operands (normal
    values, B scaled by 1/sqrt(k), every 7th element zero)."""
    return variant_inputs(m, n, k, "bf16", seed)[0][:2]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    if np.isnan(got).any():
        return float("nan")
    return float(np.abs(got.astype(np.float64) - want).max() / max(float(np.abs(want).max()), 1e-30))


def tflops(m: int, n: int, k: int, ms: float) -> float:
    return 2.0 * m * n * k / (ms * 1e-3) / 1e12


# --- the wgmma kernel ------------------------------------------------------------------------
def wgmma_vm_module(m: int, n: int, k: int, bn: int, stages: int, swapped: bool = False):
    """A Relax module whose ``main(A, B)`` calls the wgmma PrimFunc once (``tirx.is_scheduled``
    keeps the CUDA pipeline's dlight rules off it)."""
    import tvm
    from tvm import relax

    from hetpart.kernels import wgmma_gemm as wg

    prim = wg.wgmma_gemm(m, n, k, bn, stages=stages, swapped_descriptor=swapped)
    prim = prim.with_attr("global_symbol", "wgmma_gemm").with_attr("tirx.is_scheduled", True)
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([m, k], "bfloat16"))
    b = relax.Var("b", relax.TensorType([n, k], "bfloat16"))
    gv = bb.add_func(prim, "wgmma_gemm")
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gv, [a, b], relax.TensorType([m, n], "float32")))
        bb.emit_func_output(out)
    mod = bb.get()
    tgt = wg.target()
    with tgt:
        return tvm.compile(mod, target=tgt, tir_pipeline=wg.TIR_PIPELINE)


def check(m, n, k, bn, stages, dev, dry: bool, swapped: bool = False) -> dict:
    """Build the kernel (in its Relax module: one compile serves both timings) and, with a
    GPU, run it once against numpy.  The row keeps the executable and the GPU arguments
    under ``_exe``/``_args`` for :func:`vit_row`."""
    import tvm

    from hetpart.kernels import wgmma_gemm as wg

    row = {"m": m, "n": n, "k": k, "bn": bn, "stages": stages, "swapped_descriptor": swapped}
    t0 = time.time()
    try:
        exe = wgmma_vm_module(m, n, k, bn, stages, swapped)
        row["build_s"] = round(time.time() - t0, 2)
        if dry:
            row["wgmma_in_source"] = "wgmma.mma_async" in wg.cuda_source(exe)
            return row
        a, b = bf16_inputs(m, n, k)
        args = [tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev),
                tvm.runtime.tensor(np.full((m, n), np.nan, np.float32), dev)]
        kernel = exe.jit().get_function("wgmma_gemm", query_imports=True)
        kernel(*args)
        dev.sync()
        row["rel_err"] = rel_err(args[2].numpy(), a.astype(np.float64) @ b.astype(np.float64).T)
        row["ok"] = bool(row["rel_err"] <= 1e-4)
        row["_exe"], row["_kernel"], row["_args"] = exe, kernel, args
    except Exception as e:  # noqa: BLE001 - one variant's failure is a result
        row["error"] = _error(e)
        row["traceback"] = traceback.format_exc()[-2000:]
    return row


def time_raw(kernel, args, dev, number: int = 50, repeat: int = 5) -> float:
    """ms per call of the kernel's host function: ``number`` calls back to back, then a
    sync; median of ``repeat`` (launches queue asynchronously, so a kernel longer than a
    launch is timed by itself)."""
    kernel(*args)
    dev.sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            kernel(*args)
        dev.sync()
        times.append((time.perf_counter() - t0) / number)
    return float(np.median(times)) * 1e3


def time_vm(exe, inputs, dev) -> float:
    from hetpart.costmodel import kernel_bench

    return kernel_bench.time_executable(exe, inputs, dev, kernel_bench.MeasureSettings.quick()).median_s * 1e3


def vit_row(name, m, n, k, bn, stages, dev, dry: bool) -> dict:
    row = check(m, n, k, bn, stages, dev, dry)
    row["shape"] = name
    exe, kernel, args = row.pop("_exe", None), row.pop("_kernel", None), row.pop("_args", None)
    if dry or "error" in row:
        return row
    try:
        row["raw_ms"] = time_raw(kernel, args, dev)
        row["raw_tflops"] = tflops(m, n, k, row["raw_ms"])
        row["vm_ms"] = time_vm(exe, args[:2], dev)
        row["vm_tflops"] = tflops(m, n, k, row["vm_ms"])
    except Exception as e:  # noqa: BLE001
        row["error"] = _error(e)
        row["traceback"] = traceback.format_exc()[-2000:]
    return row


# --- hetpart's current rule --------------------------------------------------------------------
def matmul_model(tokens: int, k: int, n: int, seed: int = 0):
    """ONNX ``y = x @ W``: x [1, tokens, k] float32, W [k, n] (seeded, / sqrt(k))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(seed).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, n])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, w


def baseline_row(name, m, n, k, precision: str, dev, dry: bool) -> dict:
    """hetpart's build of the GEMM (module doc, step 3), timed by the VM harness."""
    import tvm

    from hetpart import importer, kernels
    from hetpart.importer import low_precision as lp
    from hetpart.kernels import weight_prepack
    from hetpart.kernels.rules import gpu_tensor_core as tc
    from hetpart.targets import cuda_tvm_target

    row = {"shape": name, "m": m, "n": n, "k": k, "precision": precision}
    old = tc.LOW_PRECISION_MMA
    t0 = time.time()
    try:
        model, w = matmul_model(m, k, n)
        graph = importer.load(model)
        if precision == "bf16":
            graph = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
        tc.LOW_PRECISION_MMA = precision == "bf16"
        exe = kernels.build(weight_prepack.mark_weights(graph.module), cuda_tvm_target("sm_90"), cuda_graph=False)
        row["build_s"] = round(time.time() - t0, 2)
        src = "".join(m_.inspect_source("cuda") for m_ in _cuda_modules(exe.mod))
        row["mma"] = sorted({s for s in ("m16n8k16.row.col.f32.bf16", "m16n8k8.row.col.f32.tf32", "wgmma")
                             if s in src})
        row["kernels"] = src.count('extern "C" __global__') // 2
        if dry:
            return row
        rng = np.random.default_rng(1)
        x = rng.standard_normal((1, m, k)).astype(np.float32)
        x.flat[::7] = 0.0
        xt = tvm.runtime.tensor(x, dev)
        row["vm_ms"] = time_vm(exe, [xt], dev)
        row["vm_tflops"] = tflops(m, n, k, row["vm_ms"])
        from tvm import relax

        out = relax.VirtualMachine(exe, dev)["main"](xt)
        got = (out.numpy() if hasattr(out, "numpy") else out[0].numpy()).reshape(m, n)
        if precision == "bf16":
            want = lp.to_low(x, "bfloat16").astype(np.float64).reshape(m, k) @ lp.to_low(w, "bfloat16").astype(np.float64)
        else:
            want = x.astype(np.float64).reshape(m, k) @ w.astype(np.float64)
        row["rel_err"] = rel_err(got, want)
    except Exception as e:  # noqa: BLE001
        row["error"] = _error(e)
        row["traceback"] = traceback.format_exc()[-2000:]
    finally:
        tc.LOW_PRECISION_MMA = old
    return row


def _cuda_modules(mod):
    if mod.kind == "cuda":
        yield mod
    for sub in mod.imports:
        yield from _cuda_modules(sub)


# --- the second spike's variants (steps 7-9) -------------------------------------------------
GROUPS = ("bf16", "tf32", "f32a", "splitk", "swizzle", "rule", "large", "tf32x")
"""``--only`` choices: ``bf16`` the steps 1-6 above, the others steps 7, 8, 9, 10 and 11 (``swizzle``
and ``rule`` are not in the default run: each has its own budget, see the module doc)."""
DEFAULT_GROUPS = ("bf16", "tf32", "f32a", "splitk")
SWIZZLE_VARIANTS = [  # (precision, bn, stages, swizzle, consumers); bf16 first (step 10's order)
    ("bf16", 128, 4, "128b", 2), ("bf16", 128, 4, "128b", 1), ("bf16", 256, 3, "128b", 2), ("bf16", 128, 4, "none", 2),
    ("bf16", 64, 4, "128b", 2),
    ("tf32", 128, 3, "128b", 2), ("tf32", 256, 2, "128b", 2), ("f32a", 128, 4, "128b", 2), ("f32a", 256, 3, "128b", 2),
]
"""The third spike's layouts timed on the ViT shapes (step 10)."""
TF32_VARIANTS = [(128, 3), (64, 3), (128, 4), (128, 1)]
TF32R_VARIANTS = [(128, 3), (64, 3)]
F32A_VARIANTS = [(128, 3), (64, 3), (128, 4), (128, 1)]
"""(bn, stages) of steps 7 and 8 on the ViT shapes (the first also on the test shapes)."""
LARGE = {name: (32 * m, n, k) for name, (m, n, k) in VIT.items()}
"""ViT-B/16's GEMMs at batch 32 (step 12)."""
LARGE_VARIANTS = [("bf16", 64, 4), ("bf16", 128, 4), ("bf16", 256, 3), ("f32a", 128, 4), ("f32a", 256, 3)]
"""(precision, bn, stages) timed at batch 32, 128B swizzle, two consumers, unsplit (step 12)."""
LARGE_EPI_VARIANTS = [("bf16", 64, 4, 1, "scalar"), ("bf16", 64, 4, 0, "pairs"), ("bf16", 64, 5, 1, "pairs"),
                      ("bf16", 128, 5, 1, "pairs"), ("bf16", 256, 4, 1, "pairs"), ("f32a", 256, 4, 1, "pairs")]
"""(precision, bn, stages, inflight, store) of the batch-32 spike's options (step 12e, 128B swizzle, two
consumers, unsplit): (a) alone and (b) alone against the rule's ``bf16`` bn 64 / 4 stages, then both at one
stage more (``inflight=1`` keeps ``stages - 2`` tiles of loads in flight), at bn 128, at bn 256 (CUTLASS's
128 x 256 tile; 4 stages, 193 KiB) and on ``f32a``'s bn 256 (its rule's 3 stages would leave one)."""
LARGE_WS_VARIANTS = [("bf16", 128, 4), ("bf16", 128, 6), ("bf16", 256, 4)]
"""(precision, bn, stages) of the warp-specialised spike (``producer="warp"``: a TMA producer
warpgroup, mbarriers; :mod:`hetpart.kernels.wgmma_ws`) timed beside them at batch 32 (step 12w)."""
TF32X_VARIANTS = [("tf32r", 128, 3, "none", 1, "scalar"), ("tf32r", 128, 3, "none", 1, "pairs"),
                  ("tf32r", 128, 5, "none", 1, "pairs"), ("tf32r", 128, 4, "128b", 2, "scalar"),
                  ("tf32r", 128, 4, "128b", 2, "pairs"), ("tf32r", 128, 6, "128b", 2, "pairs"),
                  ("tf32r", 64, 6, "128b", 2, "pairs"), ("tf32", 128, 6, "128b", 2, "pairs")]
"""(precision, bn, stages, swizzle, consumers, store) of step 13, each at ``choose_split``'s split for its tile and
consumers (what :func:`hetpart.kernels.wgmma_variant.choose` builds with the ``TF32_*`` switches so set): the first
spike's variant (the rule today), (1) the pair store alone, (3) a deeper pipeline of that layout (5 stages, 120
KiB), (2) 128B swizzle and two consumers at 4 stages, with the pair store, at 6 stages, at bn 64; last ``tf32``
(A by cp.async, truncated by the tensor core) at the same layout: the price of ``tf32r``'s register path."""
TF32X_SHAPES = {**VIT, **{f"{name}_b32": mnk for name, mnk in LARGE.items()}}
"""Step 13's shapes: ViT-B/16's GEMMs at batch 1 (the corpus rows issue 17 compares), then at batch 32."""


def variant_inputs(m: int, n: int, k: int, precision: str, seed: int = 0, rounded: bool = True):
    """(A, B, bias) as numpy arrays in the precision's global dtypes, and (A, B) as float64
    holding the values the tensor core multiplies: bf16 operands rounded to bf16 (ml_dtypes,
    RNE); tf32 ones rounded to tf32 (cvt.rna) unless ``rounded`` is False; f32a's and tf32r's
    A float32 (the kernel narrows / rounds it: its float64 twin is the rounding), tf32r's B
    rounded (a packed weight)."""
    from hetpart.importer.low_precision import to_low
    from hetpart.kernels.wgmma_substitute import round_tf32  # cvt.rna, as the packed weights are rounded

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    a.flat[::7] = 0.0
    b.flat[3::7] = 0.0
    bias = rng.standard_normal(n).astype(np.float32)
    tf32 = round_tf32
    if precision == "tf32":
        if rounded:
            a, b = tf32(a), tf32(b)
        return (a, b, bias), (a.astype(np.float64), b.astype(np.float64))
    if precision == "tf32r":
        return (a, tf32(b), bias), (tf32(a).astype(np.float64), tf32(b).astype(np.float64))
    b16 = to_low(b, "bfloat16")
    a_dev = a if precision == "f32a" else to_low(a, "bfloat16")
    return (a_dev, b16, bias), (to_low(a, "bfloat16").astype(np.float64), b16.astype(np.float64))


def _with_epilogue(c: np.ndarray, bias: np.ndarray, epilogue) -> np.ndarray:
    if epilogue is None:
        return c
    from math import erf

    y = c + bias.astype(np.float64)
    return y if epilogue == "bias" else 0.5 * y * (1.0 + np.vectorize(erf)(y / np.sqrt(2.0)))


def variant_row(group, name, m, n, k, precision, bn, stages, split, epilogue, dev, dry: bool,
                timed: bool = True, swizzle: str = "none", consumers: int = 1, producer: str = "threads",
                inflight: int = 0, store: str = "scalar") -> dict:
    """Build :func:`wgmma_splitk.build_relax` (one compile: the PrimFuncs for ``raw``, the VM
    ``main`` for ``vm``), run it once against numpy (C pre-filled with NaN), then time it."""
    import tvm

    from hetpart.kernels import wgmma_gemm as wg
    from hetpart.kernels import wgmma_splitk as sk

    row = {"group": group, "shape": name, "m": m, "n": n, "k": k, "precision": precision, "bn": bn,
           "stages": stages, "split": split, "epilogue": epilogue}
    if swizzle != "none" or consumers != 1:
        row.update(swizzle=swizzle, consumers=consumers)
    if producer != "threads":
        row["producer"] = producer
    spike = {}  # the batch-32 spike's options, only where set (12e)
    if inflight:
        spike["inflight"] = inflight
    if store != "scalar":
        spike["store"] = store
    row.update(spike)
    t0 = time.time()
    try:
        exe = sk.build_relax(m, n, k, bn, stages=stages, precision=precision, split=split, epilogue=epilogue,
                             swizzle=swizzle, consumers=consumers, producer=producer, **spike)
        row["build_s"] = round(time.time() - t0, 2)
        if dry:
            row["wgmma_in_source"] = "wgmma.mma_async" in wg.cuda_source(exe)
            return row
        lib = exe.jit()
        gemm = lib.get_function(sk.GEMM_SYMBOL, query_imports=True)
        reduction = lib.get_function(sk.REDUCE_SYMBOL, query_imports=True) if split > 1 else None

        def tensors(arrays):
            return [tvm.runtime.tensor(x, dev) for x in arrays]

        def run_once(dev_args):
            c = tvm.runtime.tensor(np.full((m, n), np.nan, np.float32), dev)
            bias = dev_args[2:] if epilogue is not None else []
            if reduction is None:
                call = (gemm, [*dev_args[:2], *bias, c])
                calls = [call]
            else:
                part = tvm.runtime.tensor(np.full((split * m, n), np.nan, np.float32), dev)
                calls = [(gemm, [*dev_args[:2], part]), (reduction, [part, *bias, c])]
            for f, f_args in calls:
                f(*f_args)
            dev.sync()
            return c, calls

        (a, b, bias), (a64, b64) = variant_inputs(m, n, k, precision)
        dev_args = tensors([a, b, bias] if epilogue is not None else [a, b])
        c, calls = run_once(dev_args)
        row["rel_err"] = rel_err(c.numpy(), _with_epilogue(a64 @ b64.T, bias, epilogue))
        row["ok"] = bool(row["rel_err"] <= 1e-4)
        if precision == "tf32":  # the raw float32 inputs, truncated by the tensor core
            (ra, rb, rbias), _ = variant_inputs(m, n, k, precision, rounded=False)
            rc, _ = run_once(tensors([ra, rb, rbias] if epilogue is not None else [ra, rb]))
            row["rel_err_unrounded"] = rel_err(
                rc.numpy(), _with_epilogue(ra.astype(np.float64) @ rb.astype(np.float64).T, rbias, epilogue))
        if precision == "tf32r":  # against the raw float32 A and B (hetpart's TF32 rule's error measure)
            (ra, rb, _), _ = variant_inputs(m, n, k, "tf32", rounded=False)  # same seed: the unrounded twins
            row["rel_err_unrounded"] = rel_err(
                c.numpy(), _with_epilogue(ra.astype(np.float64) @ rb.astype(np.float64).T, bias, epilogue))
        if not timed or "error" in row:
            return row

        def kernel():
            for f, f_args in calls:
                f(*f_args)

        row["raw_ms"] = time_raw(kernel, [], dev)
        row["raw_tflops"] = tflops(m, n, k, row["raw_ms"])
        row["vm_ms"] = time_vm(exe, dev_args, dev)
        row["vm_tflops"] = tflops(m, n, k, row["vm_ms"])
    except Exception as e:  # noqa: BLE001 - one variant's failure is a result
        row["error"] = _error(e)
        row["traceback"] = traceback.format_exc()[-2000:]
    return row


def cublas_row(name: str, m: int, n: int, k: int, dtype: str = "bf16", group: str = "large") -> dict:
    """cuBLAS's time for ``A[m, k] @ B[n, k].T`` through PyTorch (the peer's GEMM): ``dtype`` ``bf16``
    (bfloat16 tensors) or ``tf32`` (float32 tensors, ``torch.backends.cuda.matmul.allow_tf32`` on while timed:
    what PyTorch runs with TF32 on); CUDA events around 50 back-to-back ``F.linear`` calls, median of 5
    repeats; or the error.  Row ``precision`` ``cublas_<dtype>``."""
    row = {"group": group, "shape": name, "m": m, "n": n, "k": k, "precision": f"cublas_{dtype}"}
    try:
        import torch

        tdtype = {"bf16": torch.bfloat16, "tf32": torch.float32}[dtype]
        old_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32" or old_tf32
        try:
            a = torch.randn(m, k, device="cuda", dtype=tdtype)
            b = torch.randn(n, k, device="cuda", dtype=tdtype)
            torch.nn.functional.linear(a, b)
            times = []
            for _ in range(5):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(50):
                    torch.nn.functional.linear(a, b)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 50)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
        row["raw_ms"] = float(np.median(times))
        row["raw_tflops"] = tflops(m, n, k, row["raw_ms"])
    except Exception as e:  # noqa: BLE001 - no torch is a result too
        row["error"] = _error(e)
    return row


# --- the run -----------------------------------------------------------------------------------
def _line(row: dict) -> str:
    head = " ".join(f"{key}={row[key]}" for key in ("shape", "precision", "m", "n", "k", "bn", "stages",
                                                   "swapped_descriptor", "split", "epilogue", "swizzle", "consumers",
                                                   "producer", "inflight", "store")
                    if key in row)
    parts = [head]
    if "rel_err" in row:
        parts.append(f"rel_err {row['rel_err']:.2e}")
    if "rel_err_unrounded" in row:
        parts.append(f"unrounded {row['rel_err_unrounded']:.2e}")
    for key in ("raw", "vm"):
        if f"{key}_ms" in row:
            parts.append(f"{key} {row[f'{key}_ms'] * 1e3:.1f} us ({row[f'{key}_tflops']:.1f} TFLOP/s)")
    if "mma" in row:
        parts.append(f"mma {row['mma']} kernels {row.get('kernels')}")
    if "error" in row:
        parts.append(f"ERROR {row['error']}")
    return "  " + ", ".join(parts)


def _large_summary(result: dict) -> None:
    """Print and record (``best_variants["large"]``) per batch-32 shape and precision family the
    fastest layout (raw timing: cuBLAS has no VM harness) against cuBLAS and the rule's pick."""
    rows = [r for r in result["variants"] if r.get("group") == "large" and "raw_ms" in r]
    print("batch 32: best layout per shape and family (raw) vs cuBLAS bf16 and the rule:", flush=True)
    for name in LARGE:
        cublas = next((r for r in rows if r["shape"] == name and r["precision"] == "cublas_bf16"), None)
        for precision in ("bf16", "f32a"):
            cands = [r for r in rows if r["shape"] == name and r["precision"] == precision and r.get("ok")]
            if not cands:
                continue
            best = min(cands, key=lambda r: r["raw_ms"])
            rule = next((r for r in cands if r.get("rule")), None)
            vs = f", cuBLAS {cublas['raw_ms'] * 1e3:.1f} us -> {best['raw_ms'] / cublas['raw_ms']:.2f}x" if cublas else ""
            vs += f", rule bn={rule['bn']} {rule['raw_ms'] * 1e3:.1f} us" if rule else ""
            ws = [r for r in cands if r.get("producer") == "warp"]
            if ws:  # the warp-specialised spike's best (12w)
                w = min(ws, key=lambda r: r["raw_ms"])
                vs += f", producer=warp bn={w['bn']} stages={w['stages']} {w['raw_ms'] * 1e3:.1f} us"
            spike = [r for r in cands if r.get("inflight") or r.get("store")]
            if spike:  # the main-loop / store spike's best (12e)
                e = min(spike, key=lambda r: r["raw_ms"])
                vs += (f", spike bn={e['bn']} stages={e['stages']} inflight={e.get('inflight', 0)} "
                       f"store={e.get('store', 'scalar')} {e['raw_ms'] * 1e3:.1f} us")
            print(f"  {name} {precision}: bn={best['bn']} stages={best['stages']}"
                  f"{' producer=warp' if best.get('producer') else ''}"
                  f"{' inflight=1' if best.get('inflight') else ''}"
                  f"{' store=' + best['store'] if best.get('store') else ''} {best['raw_ms'] * 1e3:.1f} us "
                  f"({best['raw_tflops']:.1f} TFLOP/s){vs}", flush=True)
            result.setdefault("best_variants", {}).setdefault("large", {})[f"{name}_{precision}"] = {
                "bn": best["bn"], "stages": best["stages"], "producer": best.get("producer", "threads"),
                "inflight": best.get("inflight", 0), "store": best.get("store", "scalar"),
                "raw_ms": best["raw_ms"],
                "cublas_ms": cublas["raw_ms"] if cublas else None, "rule_ms": rule["raw_ms"] if rule else None}


def tf32x_rows(m: int, n: int, k: int) -> list[dict]:
    """Step 13's layouts for one shape: :data:`TF32X_VARIANTS` that tile N, each with ``choose_split``'s split for
    its tile and consumers, as ``variant()`` keyword arguments; ``rule`` True on the one
    :func:`hetpart.kernels.wgmma_variant.choose` picks now (its ``TF32_*`` switches as they are)."""
    from hetpart.kernels import wgmma_splitk as sk
    from hetpart.kernels import wgmma_variant as wv

    rule = wv.choose(m, n, k, "tf32r")
    rows = []
    for precision, bn, stages, swizzle, consumers, store in TF32X_VARIANTS:
        if n % bn:
            continue
        split = sk.choose_split(m, n, k, bn, precision, consumers=consumers)
        mine = wv.Variant(precision, bn, stages, swizzle, consumers, split, store=store)
        rows.append(dict(precision=precision, bn=bn, stages=stages, split=split, swizzle=swizzle,
                         consumers=consumers, store=store, rule=mine == rule))
    return rows


def _tf32x_summary(result: dict) -> None:
    """Print and record (``best_variants["tf32x"]``) per step-13 shape the fastest ``tf32r`` layout (raw timing)
    beside the rule's row, hetpart's TF32 ``mma.sync`` build (vm) and cuBLAS TF32 (raw)."""
    rows = [r for r in result["variants"] if r.get("group") == "tf32x" and "raw_ms" in r]
    base = {(r["m"], r["n"], r["k"]): r for r in result["baseline"] if r.get("precision") == "tf32" and "vm_ms" in r}
    print("tf32: best layout per shape (raw) vs the rule, hetpart's TF32 mma.sync (vm) and cuBLAS TF32:", flush=True)
    for name, (m, n, k) in TF32X_SHAPES.items():
        mine = [r for r in rows if r["shape"] == name and r["precision"] == "tf32r" and r.get("ok")]
        cublas = next((r for r in rows if r["shape"] == name and r["precision"] == "cublas_tf32"), None)
        rule = next((r for r in mine if r.get("rule")), None)
        if not mine:
            continue
        best = min(mine, key=lambda r: r["raw_ms"])
        mma = base.get((m, n, k))
        print(f"  {name}: bn={best['bn']} stages={best['stages']} split={best['split']} swizzle={best.get('swizzle', 'none')} "
              f"consumers={best.get('consumers', 1)} store={best.get('store', 'scalar')} {best['raw_ms'] * 1e3:.1f} us"
              + (f", rule {rule['raw_ms'] * 1e3:.1f}" if rule else "")
              + (f", mma.sync {mma['vm_ms'] * 1e3:.1f} (vm)" if mma else "")
              + (f", cuBLAS {cublas['raw_ms'] * 1e3:.1f}" if cublas else ""), flush=True)
        result.setdefault("best_variants", {}).setdefault("tf32x", {})[name] = {
            key: best.get(key) for key in ("bn", "stages", "split", "swizzle", "consumers", "store", "raw_ms", "vm_ms")}
        result["best_variants"]["tf32x"][name].update(
            rule_ms=rule["raw_ms"] if rule else None, mma_sync_vm_ms=mma["vm_ms"] if mma else None,
            cublas_ms=cublas["raw_ms"] if cublas else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here (rewritten after every step)")
    ap.add_argument("--budget", type=float, default=85.0, help="seconds; later steps are skipped past it")
    ap.add_argument("--dry", action="store_true", help="no GPU: build everything, run nothing")
    ap.add_argument("--only", action="append", choices=GROUPS,
                    help="run only these groups (repeatable): bf16 = steps 1-6, tf32/f32a/splitk/swizzle/rule/large/"
                         "tf32x = 7/8/9/10/11/12/13")
    args = ap.parse_args(argv)
    groups = set(args.only or DEFAULT_GROUPS)
    start = time.time()
    result = {"device": None, "correctness": [], "vit": [], "baseline": [], "variants": [], "skipped": [],
              "only": sorted(groups), "elapsed_s": 0.0}

    def save():
        result["elapsed_s"] = round(time.time() - start, 1)
        if args.json:
            clean = {key: ([{k: v for k, v in r.items() if not k.startswith("_")} for r in val]
                           if isinstance(val, list) and val and isinstance(val[0], dict) else val)
                     for key, val in result.items()}
            Path(args.json).write_text(json.dumps(clean, indent=1, default=str))

    def over(what: str) -> bool:
        if time.time() - start > args.budget:
            result["skipped"].append(what)
            return True
        return False

    import tvm

    import hetpart.kernels  # noqa: F401 - installs hetpart's CUDA compile callback (no fast math)

    dev = tvm.cuda(0)
    if not args.dry:
        if not dev.exist:
            result["device"] = "no CUDA GPU"
            save()
            print("no CUDA GPU (use --dry to build only)")
            return 1
        result["device"] = f"{dev.device_name} (compute {dev.compute_version}, {dev.multi_processor_count} SMs)"
    else:
        result["device"] = "dry run (no GPU)"
    print(f"device: {result['device']}", flush=True)

    def correctness(variants, label):
        print(f"{label}. correctness on the test shapes, (bn, stages) in {variants}", flush=True)
        for i, (m, n, k) in enumerate(TEST_SHAPES):
            for bn, stages in variants:
                if over(f"check {m}x{n}x{k} bn={bn} stages={stages}"):
                    continue
                row = {key: v for key, v in check(m, n, k, bn, stages, dev, args.dry).items() if key[0] != "_"}
                result["correctness"].append(row)
                print(_line(row), flush=True)
                if i == 0 and not args.dry and not row.get("ok"):  # is it the LBO/SBO reading?
                    alt = {key: v for key, v in check(m, n, k, bn, stages, dev, args.dry, swapped=True).items()
                           if key[0] != "_"}
                    result["correctness"].append(alt)
                    print(_line(alt), flush=True)
            save()

    def vit(variants, label):
        print(f"{label}. ViT-B/16 GEMMs (M=197), (bn, stages) in {variants}", flush=True)
        for name, (m, n, k) in VIT.items():
            for bn, stages in variants:
                if over(f"vit {name} bn={bn} stages={stages}"):
                    continue
                row = vit_row(name, m, n, k, bn, stages, dev, args.dry)
                result["vit"].append(row)
                print(_line(row), flush=True)
                save()

    def baseline(precision, label):
        print(f"{label}. hetpart's current rule on the same GEMMs, {precision}", flush=True)
        for name, (m, n, k) in VIT.items():
            if over(f"baseline {name} {precision}"):
                continue
            row = baseline_row(name, m, n, k, precision, dev, args.dry)
            result["baseline"].append(row)
            print(_line(row), flush=True)
            save()

    # the most telling first: a budget cut drops the tail
    if "bf16" in groups:
        correctness(CHECK_VARIANTS[:1], "1")
        vit(VIT_VARIANTS[:3], "2")
        baseline("bf16", "3")
        vit(VIT_VARIANTS[3:], "4")
        baseline("tf32", "5")
        correctness(CHECK_VARIANTS[1:], "6")

    def variant(group, name, m, n, k, precision, bn, stages, split=1, epilogue=None, timed=True, swizzle="none",
                consumers=1, producer="threads", inflight=0, store="scalar"):
        what = (f"{group} {name} {precision} bn={bn} stages={stages} split={split} {epilogue or ''} "
                f"swizzle={swizzle} consumers={consumers}" + (f" producer={producer}" if producer != "threads" else "")
                + (f" inflight={inflight}" if inflight else "") + (f" store={store}" if store != "scalar" else ""))
        if over(what):
            return
        row = variant_row(group, name, m, n, k, precision, bn, stages, split, epilogue, dev, args.dry, timed,
                          swizzle, consumers, producer, inflight, store)
        result["variants"].append(row)
        print(_line(row), flush=True)
        save()

    def need_baseline(precision, label):
        if not any(r.get("precision") == precision for r in result["baseline"]):
            baseline(precision, label)

    from hetpart.kernels import wgmma_splitk as sk

    for group, label, precision, variants, base in (
            ("tf32", "7", "tf32", TF32_VARIANTS, "tf32"), ("tf32", "7r", "tf32r", TF32R_VARIANTS, "tf32"),
            ("f32a", "8", "f32a", F32A_VARIANTS, "bf16")):
        if group not in groups:
            continue
        print(f"{label}. {precision}: correctness on the test shapes (bn, stages) = {variants[0]}, then ViT-B/16 "
              f"with {variants}", flush=True)
        for m, n, k in TEST_SHAPES:
            variant(group, "test", m, n, k, precision, *variants[0], timed=False)
        for name, (m, n, k) in VIT.items():
            for bn, stages in variants:
                variant(group, name, m, n, k, precision, bn, stages)
        need_baseline(base, f"{label}b")
    if "splitk" in groups:
        print("9. split-K (choose_split) on ViT-B/16, f32a and bf16; fc1 with the bias + GELU epilogue", flush=True)
        for name, (m, n, k) in VIT.items():
            for precision, bn in (("f32a", 128), ("bf16", 128), ("f32a", 64)):
                split = sk.choose_split(m, n, k, bn, precision)
                if split > 1:
                    variant("splitk", name, m, n, k, precision, bn, 3, split)
        m, n, k = VIT["fc1"]
        for split, epilogue in ((1, "bias_gelu"), (sk.choose_split(m, n, k), "bias_gelu"), (1, "bias")):
            variant("splitk", "fc1", m, n, k, "f32a", 128, 3, split, epilogue)
        need_baseline("bf16", "9b")
    if "swizzle" in groups:
        bf16 = [v for v in SWIZZLE_VARIANTS if v[0] == "bf16"]
        print(f"10. swizzled / two-consumer layouts (precision, bn, stages, swizzle, consumers): bf16 {bf16} "
              "on ViT-B/16", flush=True)
        for name, (m, n, k) in VIT.items():
            for precision, bn, stages, swizzle, consumers in bf16:
                variant("swizzle", name, m, n, k, precision, bn, stages, swizzle=swizzle, consumers=consumers)
        need_baseline("bf16", "10b")
        print("10c. every layout on two test shapes (untimed)", flush=True)
        for m, n, k in ((64, 256, 64), (197, 768, 768)):
            for precision, bn, stages, swizzle, consumers in SWIZZLE_VARIANTS:
                variant("swizzle", "test", m, n, k, precision, bn, stages, timed=False, swizzle=swizzle,
                        consumers=consumers)
        print("10d. tf32 / f32a layouts on ViT-B/16", flush=True)
        for name, (m, n, k) in VIT.items():
            for precision, bn, stages, swizzle, consumers in SWIZZLE_VARIANTS:
                if precision != "bf16":
                    variant("swizzle", name, m, n, k, precision, bn, stages, swizzle=swizzle, consumers=consumers)
        need_baseline("tf32", "10e")
        print("10f. split-K (choose_split) of proj / fc2 with the swizzled two-consumer layout", flush=True)
        for name in ("proj", "fc2"):
            m, n, k = VIT[name]
            for precision in ("bf16", "f32a"):
                split = sk.choose_split(m, n, k, 128, precision, consumers=2)
                if split > 1:
                    variant("swizzle", name, m, n, k, precision, 128, 4, split, swizzle="128b", consumers=2)

    if "rule" in groups:
        from hetpart.kernels import wgmma_variant as wv

        print("11. the substitution's rule (wgmma_variant.choose) on ViT-B/16, bf16 and f32a; then f32a at bn 64, "
              "two consumers", flush=True)
        for name, (m, n, k) in VIT.items():
            for precision in wv.FAMILIES:
                v = wv.choose(m, n, k, precision)
                variant("rule", name, m, n, k, precision, v.bn, v.stages, v.split, swizzle=v.swizzle,
                        consumers=v.consumers)
        for name, (m, n, k) in VIT.items():
            splits = [1] + ([sk.choose_split(m, n, k, 64, "f32a", consumers=wv.CONSUMERS)] if k >= n else [])
            for split in dict.fromkeys(splits):
                variant("f32a64", name, m, n, k, "f32a", 64, wv.STAGES, split, swizzle=wv.SWIZZLE,
                        consumers=wv.CONSUMERS)
        need_baseline("bf16", "11b")

    if "large" in groups:
        from hetpart.kernels import wgmma_variant as wv

        print(f"12. batch 32 (M = 6304): (precision, bn, stages) in {LARGE_VARIANTS}, 128B swizzle, two consumers, "
              "unsplit; cuBLAS (PyTorch, bf16) beside them", flush=True)
        for name, (m, n, k) in LARGE.items():
            if not args.dry:
                row = cublas_row(name, m, n, k)
                result["variants"].append(row)
                print(_line(row), flush=True)
            for precision, bn, stages in LARGE_VARIANTS:
                if n % bn == 0:
                    variant("large", name, m, n, k, precision, bn, stages, swizzle="128b", consumers=2)
                    if result["variants"] and result["variants"][-1].get("bn") == bn:
                        rule = wv.choose(m, n, k, precision)
                        result["variants"][-1]["rule"] = (rule.bn, rule.stages, rule.split) == (bn, stages, 1)
            for precision, bn, stages in LARGE_WS_VARIANTS:  # 12w: the warp-specialised spike beside them
                if n % bn == 0:
                    variant("large", name, m, n, k, precision, bn, stages, swizzle="128b", consumers=2,
                            producer="warp")
            for precision, bn, stages, inflight, store in LARGE_EPI_VARIANTS:  # 12e: the main-loop / store spike
                if n % bn == 0:
                    variant("large", name, m, n, k, precision, bn, stages, swizzle="128b", consumers=2,
                            inflight=inflight, store=store)
        _large_summary(result)

    if "tf32x" in groups:
        print(f"13. tf32r layouts (precision, bn, stages, swizzle, consumers, store) in {TF32X_VARIANTS} on ViT-B/16 "
              "at M = 197 then 6304; cuBLAS TF32 and hetpart's TF32 build beside them", flush=True)
        for name, (m, n, k) in TF32X_SHAPES.items():
            if not args.dry and not over(f"tf32x cublas {name}"):
                row = cublas_row(name, m, n, k, "tf32", "tf32x")
                result["variants"].append(row)
                print(_line(row), flush=True)
            for opts in tf32x_rows(m, n, k):
                rule = opts.pop("rule")
                before = len(result["variants"])
                variant("tf32x", name, m, n, k, **opts)
                if len(result["variants"]) > before:
                    result["variants"][-1]["rule"] = rule
            if not over(f"baseline {name} tf32"):
                row = baseline_row(name, m, n, k, "tf32", dev, args.dry)
                result["baseline"].append(row)
                print(_line(row), flush=True)
            save()
        _tf32x_summary(result)

    best = {}
    for row in result["vit"]:
        if "vm_ms" in row and row.get("ok") and (row["shape"] not in best or row["vm_ms"] < best[row["shape"]]["vm_ms"]):
            best[row["shape"]] = row
    summaries = [("tf32", "tf32", None), ("f32a", "bf16", None), ("splitk", "bf16", None),
                 ("swizzle", "bf16", ("bf16", "f32a")), ("swizzle", "tf32", ("tf32",)),
                 ("rule", "bf16", ("bf16",), "rule_bf16"), ("rule", "bf16", ("f32a",), "rule_f32a"),
                 ("f32a64", "bf16", None)]
    for group, base_precision, precisions, *key in summaries:
        rows = [r for r in result["variants"] if r["group"] == group and r["shape"] in VIT and "vm_ms" in r
                and r.get("ok") and r.get("epilogue") is None and (precisions is None or r["precision"] in precisions)]
        base = {r["shape"]: r for r in result["baseline"] if r.get("precision") == base_precision and "vm_ms" in r}
        if rows:
            print(f"best {group} variant per shape (vm harness) vs hetpart {base_precision}:", flush=True)
        for name in VIT:
            cands = [r for r in rows if r["shape"] == name]
            if not cands:
                continue
            row = min(cands, key=lambda r: r["vm_ms"])
            other = base.get(name)
            vs = (f", hetpart {base_precision} {other['vm_ms'] * 1e3:.1f} us -> {other['vm_ms'] / row['vm_ms']:.2f}x"
                  if other else "")
            layout = f" swizzle={row['swizzle']} consumers={row['consumers']}" if "swizzle" in row else ""
            print(f"  {name}: {row['precision']} bn={row['bn']} stages={row['stages']} split={row['split']}{layout} "
                  f"{row['vm_ms'] * 1e3:.1f} us ({row['vm_tflops']:.1f} TFLOP/s){vs}", flush=True)
            key_group = key[0] if key else group if precisions is None else f"{group}_{base_precision}"
            result.setdefault("best_variants", {}).setdefault(key_group, {})[name] = {
                key: row[key] for key in ("precision", "bn", "stages", "split", "swizzle", "consumers", "vm_ms",
                                          "vm_tflops", "raw_ms") if key in row}
    if best:
        print("best wgmma variant per shape (vm harness) vs hetpart bf16:", flush=True)
        base = {r["shape"]: r for r in result["baseline"] if r.get("precision") == "bf16" and "vm_ms" in r}
        for name, row in best.items():
            other = base.get(name)
            vs = f", hetpart bf16 {other['vm_ms'] * 1e3:.1f} us -> {other['vm_ms'] / row['vm_ms']:.2f}x" if other else ""
            print(f"  {name}: bn={row['bn']} stages={row['stages']} {row['vm_ms'] * 1e3:.1f} us "
                  f"({row['vm_tflops']:.1f} TFLOP/s){vs}", flush=True)
        result["best"] = {name: {key: row[key] for key in ("bn", "stages", "vm_ms", "vm_tflops", "raw_ms")}
                          for name, row in best.items()}
    save()
    print(f"done in {result['elapsed_s']} s" + (f"; skipped {len(result['skipped'])} (budget)" if result["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
