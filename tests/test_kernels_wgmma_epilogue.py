"""The batch-32 spike's main-loop and store options of the wgmma GEMM (``inflight``, ``store``; off by default).

Without a GPU: the pipeline schedule of ``inflight=1`` (one K tile's wgmmas left in flight, the refill one
stage later) replayed by :func:`wgmma_schedule.check` -- no cp.async into a stage a pending wgmma reads, no
wgmma before its tile landed -- for every depth and K-tile count, and a wrong schedule caught; the kernel's
CUDA C has the schedule's immediates and refill stage; the pair store's map (each register pair one row,
columns c and c + 1 with c even, the tile covered once); the CUDA C stores through the pair helpers only;
nvcc compiles without spills or serialised wgmmas; the switches of :mod:`wgmma_variant` are off and reach
``gemm_options`` when set.  The defaults' CUDA C is pinned by the other wgmma test files and
``tools/kernel_code_hash.py``.  (c) the TF32 family's switches (``wgmma_variant.TF32_*``: pair store, 128B swizzle,
two consumers, bn, deeper pipelines cut to the shared memory): off, the options of before; set, they reach the
options, the modules build (split-K's partials in pairs too), nvcc spills nothing.
With a GPU (``cuda`` mark): against float64 numpy, and bit for bit against the default kernel (tf32r: against the
scalar store of the same layout, every epilogue, split-K through its reduction).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

from hetpart.kernels import wgmma_gemm as wg
from hetpart.kernels import wgmma_layout as lay
from hetpart.kernels import wgmma_schedule as sch
from hetpart.kernels import wgmma_splitk as sk
from gemm_runs import run_on_gpu
from hetpart.kernels import wgmma_variant as wv
from hetpart.targets import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_wgmma_probe import _with_epilogue, variant_inputs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvcc_cases import cubin_and_ptx  # noqa: E402

M_B32 = 6304
PIPE = dict(swizzle="128b", consumers=2)


def _source(m, n, k, bn=64, stages=4, **options) -> str:
    return wg.cuda_source(wg.build(m, n, k, bn, stages=stages, **PIPE, **options))


def _kernel(src: str) -> str:
    body = src[src.index("main_kernel("):]
    body = body[body.index("main_kernel(", 1):]  # the definition (after the declaration)
    return body[body.index("{"):]


# --- (a) the schedule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("inflight", sch.INFLIGHTS)
@pytest.mark.parametrize("stages", range(2, 8))
def test_schedule_is_hazard_free(stages, inflight):
    if stages < 2 + inflight:
        with pytest.raises(ValueError):
            sch.Schedule(stages, inflight, 4)
        return
    for k_tiles in range(0, 14):
        s = sch.Schedule(stages, inflight, k_tiles)
        sch.check(s.program(), k_tiles)


def test_default_schedule_is_todays_numbers():
    for stages in range(2, 8):
        s = sch.Schedule(stages, 0, 12)
        assert (s.lead, s.prologue_groups, s.prologue, s.cp_wait, s.mma_wait) == \
            (stages - 1, stages - 1, min(stages - 1, 12), stages - 2, 0)
    s = sch.Schedule(4, 1, 12)
    assert (s.lead, s.prologue_groups, s.cp_wait, s.mma_wait) == (2, 2, 1, 1)


def test_the_model_catches_wrong_schedules():
    # inflight 1 refilling the stage of tile ko - 1 (today's lead): a pending wgmma still reads it
    with pytest.raises(sch.ScheduleHazard, match="may read"):
        sch.check(sch.Schedule(4, 1, 8).program(refill_lead=3), 8)
    # a refill too close: the tile's stage is overwritten before its wgmmas
    with pytest.raises(sch.ScheduleHazard):
        sch.check(sch.Schedule(4, 0, 8).program(refill_lead=1), 8)
    # without the final wait_group 0 the epilogue reads accumulators a wgmma still writes
    prog = sch.Schedule(4, 1, 8).program()
    prog.remove(("mma_wait", 0))
    with pytest.raises(sch.ScheduleHazard, match="epilogue"):
        sch.check(prog, 8)
    # waiting for one group too few: a wgmma before every thread's copies landed
    prog = [("cp_wait", op[1] + 1) if op[0] == "cp_wait" else op for op in sch.Schedule(4, 1, 8).program()]
    with pytest.raises(sch.ScheduleHazard, match="landed"):
        sch.check(prog, 8)
    # no barrier between the waits and the wgmmas: another thread's copies are not known landed
    with pytest.raises(sch.ScheduleHazard):
        sch.check([op for op in sch.Schedule(4, 1, 8).program() if op[0] != "barrier"], 8)


@pytest.fixture(scope="module")
def inflight_source():
    return _source(M_B32, 768, 768, 64, 4, inflight=1)


def test_inflight_kernel_follows_the_schedule(inflight_source):
    s = sch.Schedule(4, 1, 768 // 64)
    kernel = _kernel(inflight_source)
    loop = kernel[kernel.index("for (int ko = 0;"):]
    prologue = kernel[:kernel.index("for (int ko = 0;")]
    assert prologue.count("cp_async_commit_group") == s.prologue_groups
    assert f"cp_async_wait_group_async_wait_group_{s.cp_wait}()" in loop
    assert f"wgmma_wait_group_wait_group_sync_aligned_{s.mma_wait}()" in loop
    # the refill: tile ko + lead into stage (ko + lead) % stages
    assert f"(ko + {s.lead}) & 3)" in loop
    # after the loop, before the stores: wait for every wgmma
    tail = loop[loop.index("wgmma_wait_group_wait_group_sync_aligned_1()"):]
    assert "wgmma_wait_group_wait_group_sync_aligned_0()" in tail
    assert tail.index("wgmma_wait_group_wait_group_sync_aligned_0()") < tail.index("C_ptr[")
    assert "wait_group 1;" in inflight_source


@pytest.mark.parametrize("stages", [3, 5])
def test_inflight_immediates_follow_the_depth(stages):
    src = _kernel(_source(197, 768, 768, 128, stages, inflight=1, precision="f32a"))
    s = sch.Schedule(stages, 1, 12)
    assert f"cp_async_wait_group_async_wait_group_{s.cp_wait}()" in src
    assert f"wgmma_wait_group_wait_group_sync_aligned_{s.mma_wait}()" in src


@pytest.mark.parametrize("kwargs", [dict(stages=2, inflight=1), dict(stages=1, inflight=1),
                                    dict(inflight=2), dict(producer="warp", inflight=1),
                                    dict(stages=1, store="pairs", swizzle="none", consumers=1),
                                    dict(store="float4")])
def test_unsupported_options_are_refused(kwargs):
    options = dict(stages=4, swizzle="128b", consumers=2, precision="bf16")
    options.update(kwargs)
    with pytest.raises(ValueError):
        wg.wgmma_gemm(M_B32, 768, 768, 128, **options)


# --- (b) the pair store --------------------------------------------------------------------------------
@pytest.mark.parametrize("bn", [64, 128, 256])
@pytest.mark.parametrize("consumers", [1, 2])
def test_pairs_are_adjacent_columns_covering_the_tile(bn, consumers):
    seen = set()
    for t in range(lay.WARPGROUP * consumers):
        for j in range(bn // 4):
            r0, c0 = lay.cta_fragment(t, 2 * j, consumers)
            r1, c1 = lay.cta_fragment(t, 2 * j + 1, consumers)
            assert r0 == r1 and c1 == c0 + 1 and c0 % 2 == 0
            seen.update({(r0, c0), (r1, c1)})
    assert seen == {(r, c) for r in range(64 * consumers) for c in range(bn)}


def test_a_warps_pair_store_writes_whole_sectors():
    # one pair store instruction of warp 0 (register pair j): 8 rows x 32 contiguous bytes each
    for j in range(16):
        rows = {}
        for lane in range(32):
            r, c = lay.d_fragment(lane, 2 * j)
            rows.setdefault(r, []).append(c)
        assert len(rows) == 8
        for cols in rows.values():
            lo = min(cols)
            assert sorted(cols) == [lo, lo + 2, lo + 4, lo + 6] and lo % 8 == 0  # 4 x 8 B = 32 B from 32 B


@pytest.mark.parametrize("out_dtype,epilogue,helper", [("float32", None, "hetpart_st2_f32"),
                                                       ("bfloat16", "bias_gelu", "hetpart_st2_bf16"),
                                                       ("float32", "bias_residual", "hetpart_st2_f32")])
def test_pair_store_source(out_dtype, epilogue, helper):
    bn = 64
    src = _source(M_B32, 768, 768, bn, 4, store="pairs", out_dtype=out_dtype, epilogue=epilogue)
    kernel = _kernel(src)
    assert kernel.count(f"{helper}((&(C_ptr[") == bn // 4  # n_acc / 2 pairs per thread
    assert not re.search(r"\bC_ptr\[[^\]]*\]\s*=", kernel)  # no scalar store left
    assert wg.PAIR_STORE_SOURCE[out_dtype].strip() in src
    assert "wgmma_wait_group_wait_group_sync_aligned_0()" in kernel and "wait_group 1;" not in src


def test_pair_store_on_the_warp_specialised_kernel():
    src = _source(M_B32, 768, 768, 128, 4, store="pairs", producer="warp")
    assert _kernel(src).count("hetpart_st2_f32((&(C_ptr[") == 128 // 4


def test_split_k_partials_store_in_pairs():
    src = _source(197, 768, 3072, 128, 4, store="pairs", split=8)
    assert _kernel(src).count("hetpart_st2_f32((&(P_ptr[") == 128 // 4  # P [split * M, N]: row bz * M + r


# --- nvcc ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("precision,bn,stages,n,k,options", [
    ("bf16", 64, 4, 2304, 768, dict(inflight=1)),
    ("bf16", 64, 5, 768, 3072, dict(inflight=1, store="pairs")),
    ("bf16", 128, 5, 3072, 768, dict(inflight=1, store="pairs", epilogue="bias_gelu", out_dtype="bfloat16")),
    ("f32a", 256, 4, 768, 768, dict(inflight=1, store="pairs")),
])
def test_nvcc_compiles_without_spilling(precision, bn, stages, n, k, options, tmp_path):
    from hetpart.kernels import cuda_compile

    cu = tmp_path / "k.cu"
    cu.write_text(_source(M_B32, n, k, bn, stages, precision=precision, **options))
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(cu), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    assert "serialized" not in done.stderr, "ptxas serialized the wgmmas"


# --- the probe's rows (tools/gpu_wgmma_probe.py --only large, step 12e) ------------------------------------
def test_probe_rows_build_dry():
    import gpu_wgmma_probe as probe

    assert all(inflight or store != "scalar" for *_, inflight, store in probe.LARGE_EPI_VARIANTS)
    m, n, k = probe.LARGE["fc2"]
    for precision, bn, stages, inflight, store in probe.LARGE_EPI_VARIANTS:
        row = probe.variant_row("large", "fc2", m, n, k, precision, bn, stages, 1, None, None, True, True,
                                "128b", 2, "threads", inflight, store)
        assert "error" not in row and row["wgmma_in_source"], row
        assert row.get("inflight", 0) == inflight and row.get("store", "scalar") == store


# --- the switches ----------------------------------------------------------------------------------------
def test_inflight_off_and_pair_store_from_its_rows():
    """INFLIGHT_ROWS off (slower on qkv in step 167); PAIR_STORE_ROWS on from 192 rows (steps 167-169):
    below it, and for tf32r, the options are exactly the scalar store's."""
    assert wv.INFLIGHT_ROWS == 0 and wv.PAIR_STORE_ROWS == 192
    for m, n, k, p in [(M_B32, 768, 3072, "bf16"), (M_B32, 2304, 768, "f32a"), (197, 768, 768, "bf16")]:
        options = wv.choose(m, n, k, p).gemm_options()
        assert "inflight" not in options and options["store"] == "pairs"
    for m, n, k, p in [(128, 768, 768, "bf16"), (128, 3072, 768, "f32a"), (M_B32, 768, 768, "tf32r")]:
        assert "store" not in wv.choose(m, n, k, p).gemm_options()


def test_switches_reach_the_options(monkeypatch):
    monkeypatch.setattr(wv, "INFLIGHT_ROWS", 4096)
    monkeypatch.setattr(wv, "PAIR_STORE_ROWS", 4096)
    got = wv.choose(M_B32, 2304, 768, "bf16").gemm_options()
    assert got["inflight"] == 1 and got["store"] == "pairs"
    assert "inflight" not in wv.choose(197, 2304, 768, "bf16").gemm_options()  # below the rows
    assert "inflight" not in wv.choose(M_B32, 2304, 768, "tf32r").gemm_options()  # tf32r keeps its variant
    monkeypatch.setattr(wv, "WARP_PRODUCER_ROWS", 4096)
    ws = wv.choose(M_B32, 2304, 768, "bf16").gemm_options()
    assert ws["producer"] == "warp" and "inflight" not in ws and ws["store"] == "pairs"
    # what the switches build is a valid PrimFunc
    wg.wgmma_gemm(M_B32, 2304, 768, wv.choose(M_B32, 2304, 768, "f32a").bn,
                  **{k: v for k, v in wv.choose(M_B32, 2304, 768, "f32a").gemm_options().items() if k != "split"})


# --- on the GPU ----------------------------------------------------------------------------------------
GPU_CASES = [("bf16", 64, 4, dict(inflight=1)), ("bf16", 64, 4, dict(store="pairs")),
             ("bf16", 64, 5, dict(inflight=1, store="pairs")), ("bf16", 128, 5, dict(inflight=1, store="pairs")),
             ("bf16", 128, 3, dict(inflight=1)), ("f32a", 256, 4, dict(inflight=1, store="pairs")),
             ("bf16", 128, 4, dict(store="pairs", producer="warp"))]


def _run(m, n, k, bn, stages, precision, epilogue=None, out_dtype="float32", res=None, **options):
    (a, b, bias), _ = variant_inputs(m, n, k, precision)
    dev = tvm.cuda(0)
    ex = sk.build(m, n, k, bn, stages=stages, precision=precision, epilogue=epilogue, out_dtype=out_dtype,
                  **PIPE, **options)
    ta, tb, tbias = (tvm.runtime.tensor(x, dev) for x in (a, b, bias))
    extra = ([tbias] if epilogue in wg.BIAS_EPILOGUES else []) + \
        ([tvm.runtime.tensor(res, dev)] if epilogue in wg.RESIDUAL_EPILOGUES else [])
    if out_dtype == "float32":
        fill = np.full((m, n), np.nan, np.float32)
    else:
        import ml_dtypes
        fill = np.full((m, n), np.nan, ml_dtypes.bfloat16)
    c = tvm.runtime.tensor(fill, dev)
    ex[sk.GEMM_SYMBOL](ta, tb, *extra, c)
    return c.numpy()


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "-".join(str(x) for x in c[:3]) + "-" +
                         "-".join(f"{k}={v}" for k, v in c[3].items()))
@pytest.mark.parametrize("shape", [(197, 768, 768), (M_B32, 768, 3072), (M_B32, 2304, 768)])
def test_matches_numpy_and_the_default_on_gpu(shape, case):
    precision, bn, stages, options = case
    m, n, k = shape
    if n % bn:
        pytest.skip("N % bn")
    (_, _, bias), (a64, b64) = variant_inputs(m, n, k, precision)
    got = _run(m, n, k, bn, stages, precision, **options)
    want = _with_epilogue(a64 @ b64.T, bias, None)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= 1e-4, f"{shape} {case}: max rel err {err:.2e}"
    # the same wgmmas in the same order: bit for bit the default kernel's result
    base = {k: v for k, v in options.items() if k not in ("inflight", "store")}
    assert np.array_equal(got, _run(m, n, k, bn, stages, precision, **base)), f"{shape} {case}: differs from default"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("epilogue,out_dtype", [("bias_gelu", "bfloat16"), ("bias_residual", "float32"),
                                                ("bias", "bfloat16")])
def test_pair_store_epilogues_match_the_scalar_store_on_gpu(epilogue, out_dtype):
    m, n, k = M_B32, 3072, 768
    res = np.random.default_rng(2).standard_normal((m, n)).astype(np.float32)
    got = _run(m, n, k, 128, 5, "bf16", epilogue, out_dtype, res, inflight=1, store="pairs")
    base = _run(m, n, k, 128, 5, "bf16", epilogue, out_dtype, res)
    assert not np.isnan(np.asarray(got, np.float64)).any()
    assert np.array_equal(np.asarray(got).view(np.uint16) if out_dtype != "float32" else got,
                          np.asarray(base).view(np.uint16) if out_dtype != "float32" else base)


# --- (c) the TF32 family's options (wgmma_variant.TF32_*; all at the first spike's variant by default) ----------
TF32_SHAPES = [(197, 2304, 768), (197, 768, 768), (197, 3072, 768), (197, 768, 3072), (128, 768, 768),
               (1500, 384, 384), (1500, 384, 1536), (M_B32, 768, 3072), (197, 192, 768)]
"""ViT-B/16 b1, DistilBERT b1, Whisper's encoder b1, ViT b32, and an N that 128 does not divide."""
TF32_SWITCHES = dict(TF32_SWIZZLE="128b", TF32_CONSUMERS=2, TF32_STAGES=6, TF32_PAIR_STORE_ROWS=192)
"""The switches' candidate values (the probe's ``--only tf32x`` rows and the model A/B decide)."""


@pytest.mark.parametrize("m,n,k", TF32_SHAPES)
@pytest.mark.parametrize("precision", ["tf32r", "tf32"])
def test_tf32_switches_default_to_the_first_spikes_options(precision, m, n, k):
    """Off: the options -- and so the module the substitution builds -- are exactly those of before."""
    assert (wv.TF32_SWIZZLE, wv.TF32_CONSUMERS, wv.TF32_BN, wv.TF32_STAGES, wv.TF32_PAIR_STORE_ROWS) == \
        ("none", 1, 128, 3, 0)
    bn = 128 if n % 128 == 0 else 64
    v = wv.choose(m, n, k, precision)
    assert (v.bn, v.gemm_options()) == (bn, {"stages": 3, "precision": precision, "split": sk.choose_split(
        m, n, k, bn, precision), "swizzle": "none", "consumers": 1})


def _switched(monkeypatch, **values):
    for name, value in values.items():
        monkeypatch.setattr(wv, name, value)


@pytest.mark.parametrize("m,n,k", TF32_SHAPES)
def test_tf32_switches_reach_the_options(monkeypatch, m, n, k):
    families = {p: wv.choose(m, n, k, p) for p in wv.FAMILIES}
    _switched(monkeypatch, **TF32_SWITCHES)
    v = wv.choose(m, n, k, "tf32r")
    bn = 128 if n % 128 == 0 else 64
    assert v == wv.Variant("tf32r", bn, 6, "128b", 2, sk.choose_split(m, n, k, bn, "tf32r", consumers=2),
                           store="pairs" if m >= 192 else "scalar")
    options = v.gemm_options()
    assert options["swizzle"] == "128b" and options["consumers"] == 2 and options["stages"] == 6
    assert options.get("store", "scalar") == ("pairs" if m >= 192 else "scalar") and "inflight" not in options
    assert {p: wv.choose(m, n, k, p) for p in wv.FAMILIES} == families  # the bf16 families keep their own rule


def test_tf32_switches_one_at_a_time(monkeypatch):
    m, n, k = 197, 768, 3072
    old = wv.choose(m, n, k, "tf32r")
    for name, value in TF32_SWITCHES.items():
        with monkeypatch.context() as mp:
            mp.setattr(wv, name, value)
            v = wv.choose(m, n, k, "tf32r")
            changed = {f for f in ("stages", "swizzle", "consumers", "store", "split") if getattr(v, f) != getattr(old, f)}
            want = {"TF32_SWIZZLE": {"swizzle"}, "TF32_CONSUMERS": {"consumers", "split"}, "TF32_STAGES": {"stages"},
                    "TF32_PAIR_STORE_ROWS": {"store"}}[name]
            assert changed == want, (name, v, old)
    monkeypatch.setattr(wv, "TF32_BN", 64)
    assert wv.choose(m, n, k, "tf32r").bn == 64 and wv.choose(m, 192, k, "tf32r").bn == 64
    monkeypatch.setattr(wv, "TF32_BN", 256)
    assert wv.choose(m, 768, k, "tf32r").bn == 256 and wv.choose(m, 384, k, "tf32r").bn == 128


@pytest.mark.parametrize("swizzle,consumers,bn,deepest", [("none", 1, 128, 9), ("128b", 2, 128, 7), ("128b", 2, 64, 9),
                                                          ("128b", 2, 256, 4), ("none", 1, 64, 13)])
def test_tf32_stages_are_cut_to_the_shared_memory(monkeypatch, swizzle, consumers, bn, deepest):
    """One stage: (64 * consumers + bn) rows x 128 bytes (+ 1 KiB pad swizzled); an H100 CTA has 227 KiB."""
    _switched(monkeypatch, TF32_SWIZZLE=swizzle, TF32_CONSUMERS=consumers, TF32_BN=bn, TF32_STAGES=13)
    v = wv.choose(M_B32, 768 if bn < 256 else 1536, 768, "tf32r")
    assert v.stages == deepest
    per_stage = (64 * consumers + bn) * 128
    assert wv.smem_bytes("tf32r", bn, deepest, swizzle, consumers) == deepest * per_stage + (1024 if swizzle == "128b" else 0)
    assert wv.smem_bytes("tf32r", bn, deepest, swizzle, consumers) <= wv.SHARED_MEMORY_BYTES
    if deepest < 13:
        assert wv.smem_bytes("tf32r", bn, deepest + 1, swizzle, consumers) > wv.SHARED_MEMORY_BYTES
    with pytest.raises(ValueError):
        wv.fitting_stages("tf32r", 256, 3, "128b", 2, limit=1024)


@pytest.mark.parametrize("m,n,k,epilogue", [(197, 3072, 768, "bias_gelu"), (197, 768, 3072, "bias"),
                                            (1500, 384, 384, "bias_residual"), (M_B32, 768, 768, "residual")])
def test_tf32_switched_variants_build_valid_modules(monkeypatch, m, n, k, epilogue):
    """What the substitution would call: the GEMM (epilogue in its pair store at split 1) or the partials GEMM and
    the reduction (split > 1), each a PrimFunc that builds, the partials stored in pairs too."""
    _switched(monkeypatch, **TF32_SWITCHES)
    v = wv.choose(m, n, k, "tf32r")
    mod = sk.gemm_module(m, n, k, v.bn, epilogue=epilogue, **v.gemm_options())
    assert isinstance(mod[sk.GEMM_SYMBOL], tvm.tirx.PrimFunc)
    assert (sk.REDUCE_SYMBOL in [g.name_hint for g in mod.get_global_vars()]) == (v.split > 1)
    src = wg.cuda_source(sk.build(m, n, k, v.bn, epilogue=epilogue, **v.gemm_options()))
    kernel = src[src.index("void __launch_bounds__(256) wgmma_gemm_kernel("):]
    kernel = kernel[kernel.index("{"):].split('extern "C" __global__')[0]  # the GEMM (not split-K's reduction)
    out = "P_ptr" if v.split > 1 else "C_ptr"
    assert kernel.count(f"hetpart_st2_f32((&({out}[") == v.bn // 4
    assert not re.search(rf"\b{out}\[[^\]]*\]\s*=", kernel)
    assert lay.precision("tf32r").instruction(v.bn) in src and "hetpart_tf32_rna(" in kernel


@pytest.mark.parametrize("bn,stages,swizzle,consumers,epilogue", [(128, 3, "none", 1, "bias_gelu"),
                                                                  (128, 6, "128b", 2, "bias_residual"),
                                                                  (64, 6, "128b", 2, None)])
def test_tf32_pair_store_source(bn, stages, swizzle, consumers, epilogue):
    """The pair store on tf32r layouts: n_acc / 2 float2 stores a thread, none scalar; the scalar store of the same
    layout stores every register (the default's code, :func:`wgmma_gemm.scalar_epilogue`)."""
    opts = dict(precision="tf32r", swizzle=swizzle, consumers=consumers, epilogue=epilogue)
    pairs = _kernel(wg.cuda_source(wg.build(197, 768, 768, bn, stages=stages, store="pairs", **opts)))
    assert pairs.count("hetpart_st2_f32((&(C_ptr[") == bn // 4
    assert not re.search(r"\bC_ptr\[[^\]]*\]\s*=", pairs)
    scalar = _kernel(wg.cuda_source(wg.build(197, 768, 768, bn, stages=stages, **opts)))
    assert "hetpart_st2_f32" not in scalar and len(re.findall(r"\bC_ptr\[[^\]]*\]\s*=", scalar)) == bn // 2


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("m,n,k,bn,stages,swizzle,consumers,split,epilogue", [
    (197, 3072, 768, 128, 6, "128b", 2, 1, "bias_gelu"),
    (197, 768, 3072, 128, 7, "128b", 2, 8, None),
    (1500, 384, 384, 128, 4, "128b", 2, 1, "bias_residual"),
    (197, 2304, 768, 64, 6, "128b", 2, 1, "bias"),
    (197, 768, 768, 128, 5, "none", 1, 6, None),
    (M_B32, 3072, 768, 128, 3, "none", 1, 1, "bias_gelu"),
])
def test_tf32_variants_compile_without_spilling(m, n, k, bn, stages, swizzle, consumers, split, epilogue, tmp_path):
    """ptxas (sm_90a): no spills, no serialised wgmma, the k8 tf32 wgmmas in the PTX, in the pair-store layouts
    the switches build (the deepest that fits at 7 stages; split-K partials; the old layout with pairs)."""
    cu = tmp_path / "k.cu"
    cu.write_text(wg.cuda_source(sk.build(m, n, k, bn, stages=stages, precision="tf32r", split=split,
                                          epilogue=epilogue if split == 1 else None, swizzle=swizzle,
                                          consumers=consumers, store="pairs")))
    report, ptx = cubin_and_ptx(cu, "90a")
    spills = re.findall(r"(\d+) bytes spill stores", report)
    assert spills and set(spills) == {"0"}, report
    assert "serialized" not in report, "ptxas serialized the wgmmas"
    assert ptx.count(lay.precision("tf32r").instruction(bn)) >= 4
    assert "st.global.v2.f32" in ptx


def test_probe_tf32x_rows():
    """Step 13's rows: the rule's (today's variant) marked, every layout valid for the shape, splits for their tile."""
    import gpu_wgmma_probe as probe

    for name, (m, n, k) in probe.TF32X_SHAPES.items():
        rows = probe.tf32x_rows(m, n, k)
        assert sum(r["rule"] for r in rows) == 1
        for r in rows:
            assert n % r["bn"] == 0 and k % (32 * r["split"]) == 0
            assert wv.smem_bytes(r["precision"], r["bn"], r["stages"], r["swizzle"], r["consumers"]) <= \
                wv.SHARED_MEMORY_BYTES
    m, n, k = probe.TF32X_SHAPES["proj"]
    for r in probe.tf32x_rows(m, n, k)[1:2]:  # the pair store alone: builds dry
        opts = {key: v for key, v in r.items() if key != "rule"}
        row = probe.variant_row("tf32x", "proj", m, n, k, opts.pop("precision"), opts.pop("bn"), opts.pop("stages"),
                                opts.pop("split"), None, None, True, True, opts["swizzle"], opts["consumers"],
                                "threads", 0, opts["store"])
        assert "error" not in row and row["wgmma_in_source"] and row["store"] == "pairs", row


# --- (c) on the GPU ----------------------------------------------------------------------------------------------
TF32_GPU_CASES = [(128, 3, "none", 1), (128, 5, "none", 1), (128, 4, "128b", 2), (128, 6, "128b", 2),
                  (64, 6, "128b", 2), (128, 7, "128b", 2)]
"""(bn, stages, swizzle, consumers) of the tf32r layouts the switches build (the old one first)."""


def _run_tf32(m, n, k, bn, stages, swizzle, consumers, split, epilogue=None, res=None, store="scalar"):
    """C of the tf32r GEMM module (its GEMM, and split > 1 its reduction) on variant_inputs' operands."""
    (a, b, bias), _ = variant_inputs(m, n, k, "tf32r")
    dev = tvm.cuda(0)
    ex = sk.build(m, n, k, bn, stages=stages, precision="tf32r", split=split, epilogue=epilogue, swizzle=swizzle,
                  consumers=consumers, store=store)
    ta, tb = tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev)
    extra = ([tvm.runtime.tensor(bias, dev)] if epilogue in wg.BIAS_EPILOGUES else []) + \
        ([tvm.runtime.tensor(res, dev)] if epilogue in wg.RESIDUAL_EPILOGUES else [])
    return run_on_gpu(ex, dev, ta, tb, extra, m, n, split)[0]


def _reference(m, n, k, epilogue, res):
    """float64 ``epilogue(A @ B.T)`` of the tf32-rounded operands (residual added last)."""
    (_, _, bias), (a64, b64) = variant_inputs(m, n, k, "tf32r")
    c = a64 @ b64.T
    if epilogue in ("bias", "bias_gelu"):
        return _with_epilogue(c, bias, epilogue)
    if epilogue == "bias_residual":
        c = c + bias.astype(np.float64)
    return c + res.astype(np.float64) if epilogue in wg.RESIDUAL_EPILOGUES else c


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", TF32_GPU_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("shape", [(197, 768, 768), (197, 768, 3072), (M_B32, 2304, 768)])
def test_tf32_layouts_match_numpy_and_the_scalar_store_on_gpu(shape, case):
    """Against float64 numpy of the tf32-rounded operands (the kernel rounds A by cvt.rna, B is packed rounded),
    at the split the rule would take; the pair store bit for bit the scalar store's result."""
    m, n, k = shape
    bn, stages, swizzle, consumers = case
    split = sk.choose_split(m, n, k, bn, "tf32r", consumers=consumers)
    got = _run_tf32(m, n, k, bn, stages, swizzle, consumers, split, store="pairs")
    want = _reference(m, n, k, None, None)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= 1e-4, f"{shape} {case} split {split}: max rel err {err:.2e}"
    assert np.array_equal(got, _run_tf32(m, n, k, bn, stages, swizzle, consumers, split)), "pairs differ from scalar"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("epilogue,split", [("bias_gelu", 1), ("bias_residual", 1), ("residual", 1), ("bias", 1),
                                            ("bias_gelu", 3), ("bias_residual", 6)])
def test_tf32_pair_store_epilogues_on_gpu(epilogue, split):
    """The epilogues in the pair store (split 1) or the reduction after pair-stored partials (split > 1): float64
    numpy, and bit for bit the scalar store's."""
    m, n, k = 197, 3072, 768
    res = np.random.default_rng(2).standard_normal((m, n)).astype(np.float32)
    got = _run_tf32(m, n, k, 128, 6, "128b", 2, split, epilogue, res, store="pairs")
    want = _reference(m, n, k, epilogue, res)
    assert not np.isnan(got).any()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= 1e-4, f"{epilogue} split {split}: max rel err {err:.2e}"
    assert np.array_equal(got, _run_tf32(m, n, k, 128, 6, "128b", 2, split, epilogue, res))
