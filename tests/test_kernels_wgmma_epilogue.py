"""The batch-32 spike's main-loop and store options of the wgmma GEMM (``inflight``, ``store``; off by default).

Without a GPU: the pipeline schedule of ``inflight=1`` (one K tile's wgmmas left in flight, the refill one
stage later) replayed by :func:`wgmma_schedule.check` -- no cp.async into a stage a pending wgmma reads, no
wgmma before its tile landed -- for every depth and K-tile count, and a wrong schedule caught; the kernel's
CUDA C has the schedule's immediates and refill stage; the pair store's map (each register pair one row,
columns c and c + 1 with c even, the tile covered once); the CUDA C stores through the pair helpers only;
nvcc compiles without spills or serialised wgmmas; the switches of :mod:`wgmma_variant` are off and reach
``gemm_options`` when set.  The defaults' CUDA C is pinned by the other wgmma test files and
``tools/kernel_code_hash.py``.
With a GPU (``cuda`` mark): against float64 numpy, and bit for bit against the default kernel.
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
from hetpart.kernels import wgmma_variant as wv
from hetpart.targets import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_wgmma_probe import _with_epilogue, variant_inputs  # noqa: E402

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
