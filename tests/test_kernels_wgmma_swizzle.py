"""The ``wgmma`` GEMM's swizzled / two-consumer variants (issue 17, the swizzle spike):
``wgmma_gemm(..., swizzle="128b", consumers=2)`` and :class:`wgmma_layout.PipelinePlan`.

Without a GPU:

* the descriptor encoder (:func:`wgmma_layout.encode_descriptor`) against values worked by hand
  from the PTX ISA's Matrix Descriptor fields, and against TVM's own encoder (the
  ``GmmaDescriptor`` bitfield union and helper of the generated CUDA, compiled for the host
  with g++): the kernel's ``encode_matrix_descriptor(.., 1, 64, 3)`` is layout type 1
  (SWIZZLE_128B), LBO 1, SBO 64;
* the 128-byte swizzle (:func:`wgmma_layout.swizzle_128b`, :func:`~wgmma_layout.smem_offset_sw128`)
  is a bijection on every 8-row x 128-byte atom and is the ISA's pattern (chunk j of row r at
  chunk ``j ^ (r % 8)``);
* an emulation of the shared memory of one CTA: every 16-byte ``cp.async`` (or register store)
  of every thread, stage and operand, at the address the plan gives (the dynamic buffer put at
  several misaligned shared-window addresses, the run-time pad applied), and every element
  every wgmma of every stage, K step and warpgroup reads, at the address the ISA's reading of
  the descriptor gives (written here independently of ``wgmma_layout``: start + row and K
  offsets, then for SWIZZLE_128B address bits 4-6 XOR bits 7-9) -- each element read is the
  element the loader wrote there, for each tile shape added; then the whole GEMM through that
  emulation is ``A @ B.T``;
* the kernels build for sm_90a with those descriptors, nvcc compiles them without spilling,
  and the PTX ORs the descriptor's constant high fields (layout type 1, SBO 64, LBO 1) into it.

With a GPU (``cuda`` mark): each variant against float64 numpy (tolerance as
``test_kernels_wgmma_gemm.py``: 1e-4 of max |C|, C pre-filled with NaN).
"""

from __future__ import annotations

import functools
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
from hetpart.kernels import wgmma_splitk as sk
from gemm_runs import run_on_gpu
from hetpart.targets import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_wgmma_probe import _with_epilogue, variant_inputs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nvcc_cases import cubin_and_ptx  # noqa: E402

ISA_TOL = 1e-4

LAYOUTS = [  # (precision, bn, stages, swizzle, consumers): the tile shapes added
    ("bf16", 128, 3, "128b", 1), ("bf16", 64, 2, "128b", 1), ("bf16", 128, 4, "128b", 2),
    ("bf16", 256, 3, "128b", 2), ("bf16", 128, 4, "none", 2), ("bf16", 256, 2, "none", 2),
    ("tf32", 128, 3, "128b", 2), ("tf32", 64, 4, "128b", 1), ("f32a", 128, 4, "128b", 2),
    ("tf32r", 256, 2, "128b", 2), ("tf32r", 128, 7, "128b", 2),
]
"""The last: ``wgmma_variant.TF32_*``'s deepest tf32r layout that fits an H100 CTA (7 x 32 KiB + the 1 KiB pad)."""
SHARED_BASES = (0, 16, 400, 1024 + 1008, 3 * 1024 + 128)
"""Shared-window addresses of the dynamic buffer the emulation tries (the kernel pads to 1024)."""


# --- the descriptor ------------------------------------------------------------------------------
def test_encode_descriptor_is_the_isa_bit_layout():
    # ISA Matrix Descriptor: bits 0-13 start >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 49-51 base
    # offset, 62-63 layout type (1 = 128B swizzle).  Worked by hand:
    # start 0x1400 -> 0x140; LBO 1 -> 0x1 << 16; SBO 64 -> 0x40 << 32; type 1 -> 1 << 62
    assert lay.encode_descriptor(0x1400, 1, 64, 1) == 0x4000_0040_0001_0140
    # the first spike's no-swizzle A tile (64 rows): LBO 1024 B (64), SBO 128 B (8), at 0x400
    assert lay.encode_descriptor(0x400, 64, 8, 0) == 0x0000_0008_0040_0040
    assert lay.encode_descriptor(0, 0, 0, 0, base_offset=5) == 0x000A_0000_0000_0000  # 5 << 49
    assert lay.encode_descriptor(0x3FFF0, 0x3FFF, 0, 0) == 0x0000_0000_3FFF_3FFF
    assert lay.encode_descriptor(0, 0, 0x3FFF, 3) == 0xC000_3FFF_0000_0000
    d = lay.encode_descriptor(0x2A30, 1, 64, 1, 2)
    assert lay.decode_descriptor(d) == {"start_address": 0x2A30, "lbo": 1, "sbo": 64, "base_offset": 2,
                                        "layout_type": 1}
    for bad in (dict(start_address=8), dict(start_address=1 << 18), dict(lbo=1 << 14), dict(layout_type=4)):
        args = {"start_address": 0, "lbo": 0, "sbo": 0, "layout_type": 0, **bad}
        with pytest.raises(ValueError):
            lay.encode_descriptor(**args)


def test_layout_fields_are_the_isa_ones():
    # K-major 128B swizzle: LBO unused ("assumed 1"), SBO = 8 rows of 128 B; a K step of 32 B
    assert lay.layout_descriptor_fields("128b", 128) == (1, 64)
    assert lay.layout_k_step_units("128b", 256) == 2
    assert lay.layout_row_units("128b", 64) == 512 and lay.layout_row_units("none", 64) == 64
    assert lay.layout_descriptor_fields("none", 64) == lay.descriptor_fields(64)
    assert (lay.LAYOUT_TYPE["128b"], lay.TVM_SWIZZLE_ARG["128b"]) == (1, 3)


def _tvm_descriptor_source() -> str:
    src = wg.cuda_source(wg.build(64, 128, 128, 128, stages=2, swizzle="128b"))
    union = src[src.index("#ifndef HOST_DEVICE"):]
    union = union[:union.index("return desc_; }\n};") + len("return desc_; }\n};")]
    helper = src[src.index("__forceinline__ __device__ void ptx_wgmma_encode_matrix_descriptor("):]
    helper = helper[:helper.index("\n}\n") + 3]
    return union, helper


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_tvm_encoder_writes_what_encode_descriptor_says(tmp_path):
    """TVM's ``encode_matrix_descriptor`` (its C, compiled for the host with the shared-window
    address taken as the pointer's value) gives :func:`encode_descriptor`'s bits for the
    arguments the kernels pass."""
    union, helper = _tvm_descriptor_source()
    cases = [(0x1400, 1, 64, 3), (0x400, 64, 8, 0), (0x3FC00, 1, 64, 3), (0x8000, 128, 8, 0), (0x2000, 1, 64, 2)]
    calls = "\n".join(f'  ptx_wgmma_encode_matrix_descriptor(&d, (void*){a}, {lbo}, {sbo}, {sw}); '
                      f'printf("%llu\\n", (unsigned long long)d);' for a, lbo, sbo, sw in cases)
    prog = ("#include <cstdint>\n#include <cstdio>\n#define __forceinline__ inline\n#define __device__\n#define __host__\n"
            "static uint32_t __cvta_generic_to_shared(void* p) { return (uint32_t)(uintptr_t)p; }\n"
            f"{union}\n{helper}\nint main() {{\n  uint64_t d;\n{calls}\n  return 0;\n}}\n")
    (tmp_path / "d.cpp").write_text(prog)
    done = subprocess.run(["g++", "-std=c++17", "-o", str(tmp_path / "d"), str(tmp_path / "d.cpp")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    got = [int(x) for x in subprocess.run([str(tmp_path / "d")], capture_output=True, text=True,
                                          check=True).stdout.split()]
    tvm_to_type = {0: 0, 3: 1, 2: 2, 1: 3}  # CUtensorMapSwizzle numbering -> the ISA's layout type
    assert got == [lay.encode_descriptor(a, lbo, sbo, tvm_to_type[sw]) for a, lbo, sbo, sw in cases]
    assert all(tvm_to_type[lay.TVM_SWIZZLE_ARG[s]] == lay.LAYOUT_TYPE[s] for s in lay.SWIZZLES)


# --- the swizzle -----------------------------------------------------------------------------------
def test_swizzle_is_a_bijection_on_each_atom_and_the_isa_pattern():
    for atom in (0, 1024, 7 * 1024):
        addrs = [atom + b for b in range(0, 1024, 16)]
        out = [lay.swizzle_128b(a) for a in addrs]
        assert sorted(out) == addrs, "a permutation of the atom's 16-byte chunks"
        for a in addrs:
            row, chunk = (a - atom) // 128, (a - atom) % 128 // 16
            assert lay.swizzle_128b(a) == atom + 128 * row + 16 * (chunk ^ row), "chunk j of row r -> j ^ r"
            assert lay.swizzle_128b(lay.swizzle_128b(a)) == a
            for byte in range(16):  # bytes inside a chunk stay in order
                assert lay.swizzle_128b(a + byte) == lay.swizzle_128b(a) + byte


@pytest.mark.parametrize("chunk", [8, 4])
def test_sw128_offset_is_the_swizzled_row_major_tile(chunk):
    size = 16 // chunk
    rows = 32
    offs = {lay.smem_offset_sw128(r, k, chunk) for r in range(rows) for k in range(8 * chunk)}
    assert offs == set(range(rows * 8 * chunk)), "a bijection onto the tile"
    for r in range(rows):
        for k in range(8 * chunk):
            off = lay.smem_offset_sw128(r, k, chunk)
            assert off * size == lay.swizzle_128b(128 * r + 16 * (k // chunk)) + (k % chunk) * size
            assert off == lay.smem_offset_sw128(r, k - k % chunk, chunk) + k % chunk, "chunks contiguous"


def test_cta_fragment_covers_the_two_consumer_tile_once():
    for bn in (64, 256):
        slots = [lay.cta_fragment(t, i, 2) for t in range(256) for i in range(bn // 2)]
        assert sorted(slots) == [(r, c) for r in range(128) for c in range(bn)]
    assert lay.cta_fragment(200, 5, 2) == (64 + lay.d_fragment(72, 5)[0], lay.d_fragment(72, 5)[1])


# --- the emulation -------------------------------------------------------------------------------
def _isa_address(desc: int, row: int, k: int, elem_bytes: int) -> int:
    """The shared-window byte address one wgmma reads element (row, k) of a K-major operand
    from (row < 64 for A, < N for B; k < its K), by the PTX ISA's reading of the descriptor --
    written from the ISA, independently of ``wgmma_layout``: fields at bits 0-13 (start >> 4),
    16-29 (LBO >> 4), 32-45 (SBO >> 4), 49-51 (base offset), 62-63 (layout type); no swizzle:
    8 x 16-byte core matrices, SBO between 8-row groups, LBO between 16-byte K groups; 128B
    swizzle: 8-row groups SBO apart, rows 128 bytes apart, K contiguous inside the 128-byte row,
    then the address's bits 4-6 XOR its bits 7-9 (the pattern of 1024-byte atoms; base offset 0)."""
    start = (desc & 0x3FFF) << 4
    lbo, sbo = (desc >> 16 & 0x3FFF) << 4, (desc >> 32 & 0x3FFF) << 4
    base_offset, layout = desc >> 49 & 7, desc >> 62 & 3
    per16 = 16 // elem_bytes
    if layout == 0:
        return start + (row // 8) * sbo + (row % 8) * 16 + (k // per16) * lbo + (k % per16) * elem_bytes
    assert layout == 1 and base_offset == 0, "only SWIZZLE_128B with base offset 0 is modelled"
    addr = start + (row // 8) * sbo + (row % 8) * 128 + (k // per16) * 16 + (k % per16) * elem_bytes
    return addr ^ ((addr >> 7 & 7) << 4)


class _Emulated:
    """One CTA's shared memory under a plan, the dynamic buffer at shared address ``base``:
    ``written[addr] = (operand, stage, row, k)`` for every element the loaders store (each
    16-byte chunk at the plan's address), ``reads[(operand, stage, w, kk)]`` the ``rows x mma_k``
    addresses the wgmmas read (descriptors as the kernel makes them: encoded at the first A / B
    tile, plus stage, K-step and warpgroup units)."""

    def __init__(self, plan: lay.PipelinePlan, base: int):
        prec = plan.precision
        e, ch = prec.elem_bytes, prec.chunk
        self.plan, self.base = plan, base
        pad = lay.align_pad(base) // e if plan.aligned else 0
        end = base + plan.smem_elems * e
        self.written = {}
        for stage in range(plan.stages):
            for op, start, chunks, offset in (
                    ("A", pad + stage * plan.a_size, plan.a_chunks, plan.a_offset),
                    ("B", pad + plan.b_base + stage * plan.b_size, plan.b_chunks, plan.b_offset)):
                for tx in range(plan.threads):
                    for c in range(chunks):
                        r, k0 = plan.copy_row(c, tx), plan.copy_k(c, tx)
                        dst = base + (start + offset(r, k0)) * e
                        assert dst % 16 == 0, "cp.async needs 16-byte aligned shared addresses"
                        for v in range(ch):
                            addr = dst + v * e
                            assert base <= addr < end and addr not in self.written, (op, stage, r, k0 + v)
                            self.written[addr] = (op, stage, r, k0 + v)
        rows = {"A": plan.a_rows, "B": plan.bn}
        assert len(self.written) == plan.stages * (rows["A"] + rows["B"]) * prec.tile_k, "every element once"
        kind = lay.LAYOUT_TYPE[plan.swizzle]
        desc_a = lay.encode_descriptor(base + pad * e, *plan.a_fields, kind)
        desc_b = lay.encode_descriptor(base + (pad + plan.b_base) * e, *plan.b_fields, kind)
        self.reads = {}
        for stage in range(plan.stages):
            for kk in range(prec.tile_k // prec.mma_k):
                for w in range(plan.consumers):
                    d = desc_a + stage * plan.a_stage + kk * plan.a_step + w * plan.a_warpgroup
                    self.reads[("A", stage, w, kk)] = np.array(
                        [[_isa_address(d, r, k, e) for k in range(prec.mma_k)] for r in range(lay.TILE_M)])
                d = desc_b + stage * plan.b_stage + kk * plan.b_step
                self.reads[("B", stage, 0, kk)] = np.array(
                    [[_isa_address(d, r, k, e) for k in range(prec.mma_k)] for r in range(plan.bn)])


@pytest.mark.parametrize("precision,bn,stages,swizzle,consumers", LAYOUTS)
def test_every_element_read_is_the_element_written(precision, bn, stages, swizzle, consumers):
    plan = lay.PipelinePlan(lay.precision(precision), bn, stages, swizzle, consumers)
    mk = plan.precision.mma_k
    for base in SHARED_BASES if swizzle == "128b" else SHARED_BASES[:1] + SHARED_BASES[2:3]:
        em = _Emulated(plan, base)
        if swizzle == "128b":
            assert (base + lay.align_pad(base)) % 1024 == 0
        for (op, stage, w, kk), addrs in em.reads.items():
            row0 = w * lay.TILE_M
            for r in range(addrs.shape[0]):
                for k in range(mk):
                    got = em.written.get(int(addrs[r, k]))
                    assert got == (op, stage, row0 + r, kk * mk + k), (base, op, stage, w, kk, r, k, got)


def test_the_no_swizzle_reading_differs_from_the_swizzled_one():
    """The emulation can fail: the swizzled tile read as if unswizzled (or the other way) is wrong."""
    plan = lay.PipelinePlan(lay.precision("bf16"), 64, 2, "128b", 1)
    em = _Emulated(plan, 0)
    desc = lay.encode_descriptor(0, *plan.a_fields, 0)  # layout type 0 over the swizzled bytes
    wrong = sum(em.written.get(_isa_address(desc, r, k, 2)) != ("A", 0, r, k) for r in range(64) for k in range(16))
    assert wrong > 500


def _simulate(a: np.ndarray, b: np.ndarray, plan: lay.PipelinePlan, base: int) -> np.ndarray:
    """``C = A @ B.T`` through the emulated shared memory: per CTA and K tile, the loaders'
    writes (A's rows past M as zeros), each wgmma's reads, the accumulators stored by
    :func:`wgmma_layout.cta_fragment`."""
    em = _Emulated(plan, base)
    prec = plan.precision
    tk, mk, tile_m, bn = prec.tile_k, prec.mma_k, plan.a_rows, plan.bn
    m, k = a.shape
    n = b.shape[0]
    out = np.full((m, n), np.nan)
    for by in range(-(-m // tile_m)):
        for bx in range(n // bn):
            acc = np.zeros((plan.consumers, lay.TILE_M, bn))
            for ko in range(k // tk):
                stage = ko % plan.stages
                smem = {}
                for addr, (op, s, r, kc) in em.written.items():
                    if s == stage:
                        row = by * tile_m + r if op == "A" else bx * bn + r
                        smem[addr] = (a[row, ko * tk + kc] if row < m else 0.0) if op == "A" else b[row, ko * tk + kc]
                for kk in range(tk // mk):
                    ob = np.vectorize(smem.__getitem__)(em.reads[("B", stage, 0, kk)])
                    for w in range(plan.consumers):
                        oa = np.vectorize(smem.__getitem__)(em.reads[("A", stage, w, kk)])
                        acc[w] += oa @ ob.T
            for t in range(plan.threads):
                for i in range(bn // 2):
                    r, c = lay.cta_fragment(t, i, plan.consumers)
                    if by * tile_m + r < m:
                        out[by * tile_m + r, bx * bn + c] = acc[r // lay.TILE_M, r % lay.TILE_M, c]
    return out


@pytest.mark.parametrize("precision,bn,stages,swizzle,consumers",
                         [("bf16", 256, 3, "128b", 2), ("tf32", 64, 2, "128b", 1), ("bf16", 128, 2, "none", 2)])
def test_simulated_gemm_through_the_emulation(precision, bn, stages, swizzle, consumers):
    plan = lay.PipelinePlan(lay.precision(precision), bn, stages, swizzle, consumers)
    rng = np.random.default_rng(0)
    m, n, k = 150, 2 * bn, 3 * plan.precision.tile_k
    a, b = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    np.testing.assert_allclose(_simulate(a, b, plan, 400), a @ b.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(swizzle="64b", stages=3), dict(consumers=3, stages=3),
                                    dict(swizzle="128b", stages=1), dict(consumers=2, stages=1),
                                    dict(swizzle="128b", stages=3, swapped_descriptor=True)])
def test_unsupported_layout_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        wg.wgmma_gemm(197, 768, 768, 128, **kwargs)


# --- the CUDA C and PTX ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)  # three tests read each layout's source: one TVM build
def _source(precision, bn, stages, swizzle, consumers, split=1, epilogue=None, shape=(197, 768, 768)) -> str:
    try:
        return wg.cuda_source(sk.build(*shape, bn, stages=stages, precision=precision, split=split,
                                       epilogue=epilogue, swizzle=swizzle, consumers=consumers))
    except tvm.error.TVMError as e:
        if "cuda" in str(e).lower() and "not enabled" in str(e).lower():
            pytest.skip(f"TVM has no CUDA codegen here: {e}")
        raise


@pytest.mark.parametrize("precision,bn,stages,swizzle,consumers", LAYOUTS)
def test_builds_for_sm90a_with_the_plans_descriptors(precision, bn, stages, swizzle, consumers):
    plan = lay.PipelinePlan(lay.precision(precision), bn, stages, swizzle, consumers)
    prec = plan.precision
    src = _source(precision, bn, stages, swizzle, consumers)
    gemm = src[src.index(f'extern "C" __global__ void __launch_bounds__({plan.threads}) wgmma_gemm_kernel('):]
    gemm = gemm[gemm.index("{"):]
    assert prec.instruction(bn) in src
    assert gemm.count("_mma_async_sync_aligned_m64n") == prec.tile_k // prec.mma_k
    calls = re.findall(r"ptx_wgmma_encode_matrix_descriptor\(.*, (\d+), (\d+), (\d+)\);", gemm)
    want = (*plan.a_fields, plan.tvm_swizzle), (*plan.b_fields, plan.tvm_swizzle)
    assert [tuple(map(int, c)) for c in calls] == list(want)
    assert (lay.ALIGN_PAD in gemm) == plan.aligned
    if consumers > 1:
        assert f"* {plan.a_warpgroup})" in gemm, "warpgroup w's A descriptor starts 64 w rows on"
    if not prec.a_converted:
        tiles = 768 // prec.tile_k
        loads = min(stages - 1, tiles) + (tiles > stages - 1)
        assert gemm.count("tvm_builtin_ptx_cp_async_cg_src_size") == loads * (plan.a_chunks + plan.b_chunks)


_NAMES = {"((int)threadIdx.x)": "tx", "((int)blockIdx.x)": "bx", "((int)blockIdx.y)": "by", "pad_ptr[0]": "pad",
          "(uint64_t)": ""}


@functools.lru_cache(maxsize=None)
def _c_code(expr: str):
    """``expr`` with :data:`_NAMES` applied, checked to be an integer index expression, compiled
    once (the checks below evaluate each expression for every thread): (code, names, text)."""
    for c_name, name in _NAMES.items():
        expr = expr.replace(c_name, name)
    assert re.fullmatch(r"[\w ()+*&^%<>,]*", expr), expr
    return compile(expr, "<cuda index>", "eval"), frozenset(re.findall(r"[a-z_]\w*", expr)), expr


def _c_eval(expr: str, **env) -> int:
    """A fully parenthesised CUDA C integer index expression of TVM's codegen (``+ * >> & ^ %``,
    ``min``; non-negative, so C's ``%`` is Python's) at the given variables."""
    code, names, text = _c_code(expr)
    assert names <= {*env, "min"}, text
    return eval(code, {"__builtins__": {}}, {"min": min, **env})  # noqa: S307 - checked above


def _balanced(expr: str) -> str:
    """``expr`` less the closing parentheses at its end that it does not open."""
    while expr.count(")") > expr.count("("):
        assert expr.endswith(")"), expr
        expr = expr[:-1]
    return expr


@pytest.mark.parametrize("precision,bn,stages,swizzle,consumers", LAYOUTS)
def test_generated_code_follows_the_plan(precision, bn, stages, swizzle, consumers):
    """The CUDA C does what the emulation above checked: each prologue ``cp.async`` of stage s
    copies global (row, k0) of K tile s to ``pad + stage offset + plan offset (row, k0)``, every
    chunk of both tiles once; each wgmma's descriptor adds ``stage * a_stage + kk * a_step +
    w * a_warpgroup`` (B: no warpgroup term) for K tile ``ko`` in stage ``ko % stages``; accumulator
    i of thread tx is stored to C at :func:`wgmma_layout.cta_fragment`."""
    plan = lay.PipelinePlan(lay.precision(precision), bn, stages, swizzle, consumers)
    prec = plan.precision
    m, n, k = 197, 768, 768
    src = _source(precision, bn, stages, swizzle, consumers, shape=(m, n, k))
    gemm = src[src.index(f'extern "C" __global__ void __launch_bounds__({plan.threads}) wgmma_gemm_kernel('):]
    gemm = gemm[gemm.index("{"):].replace("pad_ptr[0]", "pad")
    prologue, loop = gemm.split("for (int ko", 1)
    copies = re.findall(r"cp_async_cg_src_size_async_cg_shared_global_16\(tvm_builtin_cuda_cvta_generic_to_shared"
                        r"\(\(&\(S_ptr\[([^\]]*)\]\)\)\), \(&\(([AB])_ptr\[([^\]]*)\]\)\)", prologue)
    assert copies
    for by, bx, pad in ((0, 0, 0), (0, 2, 512)):  # by 0: no row of A past M (clamped rows hide theirs)
        seen = set()
        for dst, op, src_index in copies:
            for tx in range(plan.threads):
                at = _c_eval(dst, tx=tx, pad=pad) - (pad if plan.aligned else 0)  # no pad without a swizzle
                grow, gk = divmod(_c_eval(src_index, tx=tx, bx=bx, by=by), k)
                tile, k0 = divmod(gk, prec.tile_k)
                stage = tile % stages
                if op == "A":
                    row = grow - by * plan.a_rows
                    want = stage * plan.a_size + plan.a_offset(row, k0)
                else:
                    row = grow - bx * bn
                    want = plan.b_base + stage * plan.b_size + plan.b_offset(row, k0)
                assert at == want, (op, tx, tile, row, k0)
                assert (op, tile, row, k0) not in seen
                seen.add((op, tile, row, k0))
        if not prec.a_converted:  # A through cp.async too
            assert len([x for x in seen if x[0] == "A"]) == (stages - 1) * plan.a_rows * prec.tile_k // prec.chunk
        assert len([x for x in seen if x[0] == "B"]) == (stages - 1) * bn * prec.tile_k // prec.chunk
    steps = prec.tile_k // prec.mma_k
    for op, base in (("a", plan.a_stage), ("b", plan.b_stage)):
        exprs = [_balanced(x) for x in re.findall(rf"desc_{op}_ptr\[0\] \+ ([^,]*),", loop)]
        assert len(exprs) == steps, exprs
        for ko in range(2 * stages):
            for tx in sorted({0, 127, plan.threads - 128, plan.threads - 1}):
                got = sorted(_c_eval(x, ko=ko, tx=tx) for x in exprs)
                w = tx // lay.WARPGROUP if op == "a" else 0
                step = plan.a_step if op == "a" else plan.b_step
                assert got == [ko % stages * base + kk * step + w * plan.a_warpgroup for kk in range(steps)]
    stores = re.findall(r"C_ptr\[([^\]]*)\] = acc_ptr\[(\d+)\];", loop)
    assert sorted(int(i) for _, i in stores) == list(range(bn // 2))
    for index, i in stores:
        for tx in range(plan.threads):
            assert divmod(_c_eval(index, tx=tx, bx=0, by=0), n) == lay.cta_fragment(tx, int(i), consumers)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("precision,bn,stages,swizzle,consumers", LAYOUTS)
def test_nvcc_compiles_without_spilling_and_the_ptx_has_the_layout(precision, bn, stages, swizzle, consumers,
                                                                   tmp_path):
    plan = lay.PipelinePlan(lay.precision(precision), bn, stages, swizzle, consumers)
    cu = tmp_path / "k.cu"
    cu.write_text(_source(precision, bn, stages, swizzle, consumers))
    report, text = cubin_and_ptx(cu, "90a")  # the PTX nvcc made on the way to this cubin
    spills = re.findall(r"(\d+) bytes spill stores", report)
    assert spills and set(spills) == {"0"}, report
    assert "serialized" not in report, "ptxas serialized the wgmmas"
    steps = plan.precision.tile_k // plan.precision.mma_k
    count = text.count(plan.precision.instruction(bn))  # a K tile's wgmmas (nvcc may unroll the loop)
    assert count >= steps and count % steps == 0, count
    # the descriptor's fixed fields, folded by nvcc into one constant ORed into the start address
    high = lay.encode_descriptor(0, *plan.a_fields, lay.LAYOUT_TYPE[swizzle])
    if swizzle == "128b":
        assert re.search(rf"or\.b64\s+%rd\d+, %rd\d+, {high};", text), "SWIZZLE_128B, SBO 64, LBO 1 in the PTX"


# --- on the GPU --------------------------------------------------------------------------------------
GPU_VARIANTS = LAYOUTS + [("bf16", 128, 3, "128b", 2, 6, None), ("f32a", 256, 3, "128b", 2, 1, "bias_gelu")]


def _gpu_case(case):
    precision, bn, stages, swizzle, consumers, *rest = case
    split, epilogue = rest if rest else (1, None)
    return precision, bn, stages, swizzle, consumers, split, epilogue


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", GPU_VARIANTS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("shape", [(64, 256, 768), (197, 768, 768), (197, 768, 3072)])
def test_matches_numpy_on_gpu(shape, case):
    precision, bn, stages, swizzle, consumers, split, epilogue = _gpu_case(case)
    m, n, k = shape
    (a, b, bias), (a64, b64) = variant_inputs(m, n, k, precision)
    dev = tvm.cuda(0)
    ex = sk.build(m, n, k, bn, stages=stages, precision=precision, split=split, epilogue=epilogue,
                  swizzle=swizzle, consumers=consumers)
    ta, tb, tbias = (tvm.runtime.tensor(x, dev) for x in (a, b, bias))
    extra = [tbias] if epilogue is not None else []
    got, _ = run_on_gpu(ex, dev, ta, tb, extra, m, n, split)
    want = _with_epilogue(a64 @ b64.T, bias, epilogue)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= ISA_TOL, f"{shape} {case}: max rel err {err:.2e}"
