"""The fused attention kernel (:mod:`hetpart.kernels.flash_attention`, issue 17 spike 1).

Without a GPU: the geometry of :mod:`hetpart.kernels.flash_layout` against the PTX ISA's
``mma.m16n8k16`` fragment maps (written out here independently) and ``ldmatrix``'s result
(every element owned exactly once; every ldmatrix address map composed with the ISA's
result gives the fragment the next mma expects; the swizzle conflict-free); the PrimFunc
builds for sm_90a and sm_80 with the bf16 mma, ldmatrix and cp.async in its CUDA C; nvcc
compiles it without spills; a numpy model of the kernel's exact tile loop (:func:`emulate`:
64-key tiles, float32 running max / sum, ``2^x``, P rounded to bf16 before P V) against
float64 attention.  On a GPU (``cuda`` mark): the kernel against float64 at Whisper's and
ViT's shapes.

The bias path (``bias_shape``): the numpy model with the bias (key padding crossing a tile,
a first key tile all masked, a fully masked row, ``-inf`` entries, negative and zero biases,
broadcast over batch / heads / queries) against float64 attention with the bias added; the
register-level model with the bias read per register; the generated CUDA C's bias index per
thread; nvcc without spills; on a GPU, against float64 at DistilBERT's and an odd shape.

The key split (``key_split=True``): the numpy model in the split order (group ``g`` over tiles
``2 i + g``, the log-sum-exp merge; a group without a tile) against float64, with and without the
bias; the generated CUDA C replayed (each group's copies into its own buffer, ldmatrix addresses,
the key mask at tile ``2 i + g``, the skip guards, the merge buffer's slots, group 0's store); nvcc
without spills in <= 128 registers and 44 KB of static shared memory; on a GPU against float64
(1500, 197, 130, 77, 64, 5 tokens; the biased cases and a fully masked row).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from nvcc_cases import assert_no_spills

from hetpart.kernels import flash_attention as fa
from hetpart.kernels import flash_layout as fl
from hetpart.targets import cuda_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_flash_probe import attention_inputs, key_padding_bias, reference, rel_err  # noqa: E402

LOWEST = np.float32(np.finfo(np.float32).min)
GPU_TOL = 2e-2
"""max |O - ref| / max |ref| on the GPU (bf16 P and O: ~5e-3 expected)."""
LANES = range(32)
X4_REGISTERS = [(lane, m, h) for lane in LANES for m in range(4) for h in range(2)]
"""(lane, register m, half h) of every value an ``ldmatrix.x4`` delivers."""


# --- the ISA's m16n8k16 fragments, written out independently ----------------------------
def isa_a(lane, i):
    """PTX ISA 9.7.13.4.8, A (16 x 16, .bf16): row = groupID for a0, a1, a4, a5, else
    groupID + 8; col = threadID_in_group * 2 + (i & 1) for a0..a3, else + 8."""
    group, tig = lane >> 2, lane % 4
    row = group if i in (0, 1, 4, 5) else group + 8
    col = tig * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def isa_b(lane, i):
    """B (16 x 8): row (k) = threadID_in_group * 2 + (i & 1) for b0, b1, else + 8; col = groupID."""
    return (lane % 4) * 2 + (i & 1) + (8 if i >= 2 else 0), lane >> 2


def isa_c(lane, i):
    """C/D (16 x 8, f32): row = groupID for c0, c1, else + 8; col = threadID_in_group * 2 + (i & 1)."""
    return (lane >> 2) + (8 if i >= 2 else 0), (lane % 4) * 2 + (i & 1)


@pytest.mark.parametrize("ours,isa,n,shape", [(fl.a_fragment, isa_a, 8, (16, 16)),
                                              (fl.b_fragment, isa_b, 4, (16, 8)),
                                              (fl.c_fragment, isa_c, 4, (16, 8))])
def test_fragments_are_the_isa_and_cover_once(ours, isa, n, shape):
    owned = {}
    for lane in LANES:
        for i in range(n):
            pos = ours(lane, i)
            assert pos == isa(lane, i), (lane, i)
            assert pos not in owned, f"{pos} owned by {owned[pos]} and {(lane, i)}"
            owned[pos] = (lane, i)
    assert set(owned) == {(r, c) for r in range(shape[0]) for c in range(shape[1])}


def _ldmatrix_gets(addr, lane, m, h, trans=False):
    """(row, col) of the tile that ``lane`` receives as half ``h`` of register ``m`` of an
    ``ldmatrix.x4``: matrix m's row r is addressed by lane 8 m + r (``addr(lane)`` gives the
    tile row and first column); the ISA's result picks (r, c) of that matrix."""
    r, c = fl.ldmatrix_element(lane, h, trans)
    row, col = addr(8 * m + r)
    return row, col + c


def test_ldmatrix_element_is_the_isa():
    """ISA 9.7.13.4.15: lane l holds row l / 4, columns 2 (l % 4) and +1 (``.trans``: exchanged)."""
    seen = {(fl.ldmatrix_element(lane, h)) for lane in LANES for h in range(2)}
    assert seen == {(r, c) for r in range(8) for c in range(8)}
    assert fl.ldmatrix_element(5, 1) == (1, 3) and fl.ldmatrix_element(5, 1, trans=True) == (3, 1)


@pytest.mark.parametrize("warp", range(fl.WARPS))
@pytest.mark.parametrize("step", range(fl.D_STEPS))
def test_q_ldmatrix_gives_the_a_fragment(warp, step):
    for lane, m, h in X4_REGISTERS:
        got = _ldmatrix_gets(lambda ln: fl.q_ldmatrix_row_col(warp, ln, step), lane, m, h)
        r, c = isa_a(lane, 2 * m + h)
        assert got == (warp * 16 + r, step * 16 + c), (lane, m, h)


@pytest.mark.parametrize("s_tile", range(fl.S_TILES))
@pytest.mark.parametrize("pair", range(fl.D_STEPS // 2))
def test_k_ldmatrix_gives_the_b_fragments(s_tile, pair):
    """Register m: b_{2(m%2)}, b_{2(m%2)+1} of d-step 2 pair + m // 2; B[k = d, n = key] = K[key, d]."""
    for lane, m, h in X4_REGISTERS:
        key, d = _ldmatrix_gets(lambda ln: fl.k_ldmatrix_row_col(ln, s_tile, pair), lane, m, h)
        kk, n = isa_b(lane, 2 * (m % 2) + h)
        assert (key, d) == (s_tile * 8 + n, (2 * pair + m // 2) * 16 + kk), (lane, m, h)


@pytest.mark.parametrize("step", range(fl.KV_STEPS))
@pytest.mark.parametrize("pair", range(fl.D_TILES // 2))
def test_v_ldmatrix_trans_gives_the_b_fragments(step, pair):
    """Register m: b_{2(m%2)}, b_{2(m%2)+1} of output tile 2 pair + m // 2; B[k = key, n = d] = V[key, d]."""
    for lane, m, h in X4_REGISTERS:
        key, d = _ldmatrix_gets(lambda ln: fl.v_ldmatrix_row_col(ln, step, pair), lane, m, h, trans=True)
        kk, n = isa_b(lane, 2 * (m % 2) + h)
        assert (key, d) == (step * 16 + kk, (2 * pair + m // 2) * 8 + n), (lane, m, h)


@pytest.mark.parametrize("step", range(fl.KV_STEPS))
def test_p_registers_are_the_a_fragment(step):
    """The scores a thread packs into A register j (c, c + 1 of score tile s) sit where the A
    fragment of key step ``step`` wants a_{2j}, a_{2j+1}."""
    for lane in LANES:
        for j in range(4):
            s_tile, c = fl.p_register(step, j)
            for h in range(2):
                row, col = isa_c(lane, c + h)
                r, k = isa_a(lane, 2 * j + h)
                assert (row, s_tile * 8 + col) == (r, step * 16 + k), (lane, j, h)


def test_smem_offset_is_a_chunk_preserving_bijection():
    offs = [fl.smem_offset(r, c) for r in range(fl.TILE_Q) for c in range(fl.HEAD_DIM)]
    assert sorted(offs) == list(range(fl.TILE_ELEMS))
    for r in range(fl.TILE_Q):
        for c0 in range(0, fl.HEAD_DIM, fl.CHUNK):
            base = fl.smem_offset(r, c0)
            assert base % fl.CHUNK == 0
            assert [fl.smem_offset(r, c0 + e) for e in range(fl.CHUNK)] == list(range(base, base + fl.CHUNK))


def _conflict_free(addr):
    """Each 8x8 matrix's eight row addresses (lanes 8m..8m+7) cover all eight 16-byte bank groups."""
    for m in range(4):
        groups = {(fl.smem_offset(*addr(8 * m + r)) * 2 // 16) % 8 for r in range(8)}
        assert len(groups) == 8, (m, groups)


def test_ldmatrix_addresses_are_bank_conflict_free():
    for warp in range(fl.WARPS):
        for step in range(fl.D_STEPS):
            _conflict_free(lambda ln: fl.q_ldmatrix_row_col(warp, ln, step))
    for s_tile in range(fl.S_TILES):
        for pair in range(fl.D_STEPS // 2):
            _conflict_free(lambda ln: fl.k_ldmatrix_row_col(ln, s_tile, pair))
    for step in range(fl.KV_STEPS):
        for pair in range(fl.D_TILES // 2):
            _conflict_free(lambda ln: fl.v_ldmatrix_row_col(ln, step, pair))


def test_copy_map_covers_each_chunk_once():
    chunks = [fl.copy_row_col(c, tx) for c in range(fl.COPY_CHUNKS) for tx in range(fl.THREADS)]
    assert sorted(chunks) == [(r, c) for r in range(fl.TILE_Q) for c in range(0, fl.HEAD_DIM, fl.CHUNK)]


# --- a numpy model of the kernel's loop ------------------------------------------------
def _bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def _padded(x, rows):
    pad = rows - x.shape[2]
    return np.pad(x.astype(np.float32), ((0, 0), (0, 0), (0, pad), (0, 0)))


def _emulate_tile(qt, kp, vp, seq, c, bt=None, tiles=None):
    """O (float32, unnormalised), l and m of one 64-row Q tile, key tile by key tile (``tiles``:
    these key tiles in this order, default all); ``bt``: the tile's rows of the bias (float32,
    keys padded), added as the biased kernel adds it.  No tile: m = -inf, l = 0, O = 0."""
    rows = qt.shape[:-1]
    m = np.full(rows, -np.inf, np.float32)
    l = np.zeros(rows, np.float32)
    o = np.zeros(qt.shape, np.float32)
    for t in range(fl.kv_tiles(seq)) if tiles is None else tiles:
        keys = slice(t * fl.TILE_KV, (t + 1) * fl.TILE_KV)
        s = np.einsum("bhqd,bhkd->bhqk", qt.astype(np.float64), kp[:, :, keys]).astype(np.float32)
        valid = t * fl.TILE_KV + np.arange(fl.TILE_KV) < seq
        if bt is None:
            s = np.where(valid, s * c, np.float32(-np.inf)).astype(np.float32)
        else:
            with np.errstate(over="ignore"):
                biased = np.maximum(s * c + bt[..., keys] * np.float32(fa.LOG2E), LOWEST).astype(np.float32)
            s = np.where(valid, biased, np.float32(-np.inf)).astype(np.float32)
        mx = np.maximum(m, s.max(-1))
        alpha = np.exp2(m - mx)
        m = mx
        l, o = l * alpha, o * alpha[..., None]
        p = np.exp2(s - m[..., None]).astype(np.float32)
        l = (l + p.sum(-1, dtype=np.float32)).astype(np.float32)
        o = (o + np.einsum("bhqk,bhkd->bhqd", _bf16(p).astype(np.float64), vp[:, :, keys])).astype(np.float32)
    return o, l, m


def _split_tiles(seq, group):
    """The key tiles of ``group`` in the key-split kernel's order (:func:`fl.split_tile`, those
    ``< kv_tiles``)."""
    return [t for t in (fl.split_tile(i, group) for i in range(fl.split_steps(seq))) if t < fl.kv_tiles(seq)]


def _merge(parts):
    """The split kernel's merge of the groups' (O, l, m), float32: ``m = max``, each part times
    ``2^(m_g - m)`` (``2^-inf = 0``: a group without a key tile adds nothing)."""
    (o, l, m), (o1, l1, m1) = parts
    mx = np.maximum(m, m1)
    a0, a1 = np.exp2(m - mx), np.exp2(m1 - mx)
    l = (l * a0 + l1 * a1).astype(np.float32)
    o = (o * a0[..., None] + o1 * a1[..., None]).astype(np.float32)
    return o, l, mx


def emulate(q, k, v, scale=None, out_dtype="bfloat16", bias=None, key_split=False):
    """The kernel's arithmetic in numpy: per 64-row Q tile, per 64-key tile (K, V zero-padded
    past seq as cp.async zero-fills), float32 scores times ``float32(scale * log2 e)``, keys
    >= seq at -inf, running max / sum / rescale in float32, ``2^x``, P rounded to bf16 for P V
    (float32 accumulation), O / l, rounded to ``out_dtype``.  (Summation order inside an mma
    and across a quad is not modelled: float32 rounding only.)  ``bias`` (float32, broadcast
    to ``[b, h, seq, seq]``): each score ``max(s * c + bias * log2 e, -FLT_MAX)``, the biased
    kernel's order.  ``key_split``: the key-split kernel's order -- group ``g`` over tiles
    ``2 i + g`` (:func:`_split_tiles`), then :func:`_merge`."""
    b, h, seq, d = q.shape
    c = np.float32((1.0 / np.sqrt(d) if scale is None else scale) * fa.LOG2E)
    kp, vp = _padded(k, fl.kv_tiles(seq) * fl.TILE_KV), _padded(v, fl.kv_tiles(seq) * fl.TILE_KV)
    qp = _padded(q, fl.q_tiles(seq) * fl.TILE_Q)
    bp = None
    if bias is not None:
        full = np.broadcast_to(np.asarray(bias, np.float32), (b, h, seq, seq))
        bp = np.zeros((b, h, qp.shape[2], kp.shape[2]), np.float32)
        bp[:, :, :seq, :seq] = full
    out = np.empty(qp.shape, np.float32)
    for i in range(fl.q_tiles(seq)):
        rows = slice(i * fl.TILE_Q, (i + 1) * fl.TILE_Q)
        bt = None if bp is None else bp[:, :, rows]
        if key_split:
            o, l, _ = _merge([_emulate_tile(qp[:, :, rows], kp, vp, seq, c, bt, _split_tiles(seq, g))
                              for g in range(fl.SPLIT_GROUPS)])
        else:
            o, l, _ = _emulate_tile(qp[:, :, rows], kp, vp, seq, c, bt)
        out[:, :, rows] = o / l[..., None]
    out = out[:, :, :seq]
    return _bf16(out) if out_dtype == "bfloat16" else out


@pytest.mark.parametrize("dims", [(1, 2, 200, 64), (2, 1, 64, 64), (1, 1, 1, 64), (1, 3, 130, 64)])
@pytest.mark.parametrize("out_dtype", fa.OUT_DTYPES)
def test_emulated_kernel_matches_float64_attention(dims, out_dtype):
    q, k, v = attention_inputs(*dims)
    want = reference(q, k, v)
    got = emulate(q, k, v, out_dtype=out_dtype)
    assert got.shape == want.shape and np.isfinite(got).all()
    assert rel_err(got, want) <= 1e-2


def test_emulated_kernel_survives_scores_past_float32_exp():
    """Scores far past exp's float32 range (|s| ~ 1e3): the running max keeps every 2^x <= 1."""
    q, k, v = attention_inputs(1, 2, 150, 64, seed=3)
    q = (q.astype(np.float32) * 20).astype(ml_dtypes.bfloat16)
    raw = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float32), k.astype(np.float32)) / 8
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(raw.max())), "the case must overflow a one-pass float32 softmax"
    want = reference(q, k, v)
    got = emulate(q, k, v, out_dtype="float32")
    assert np.isfinite(got).all() and rel_err(got, want) <= 1e-2


def test_emulated_custom_scale():
    q, k, v = attention_inputs(1, 1, 70, 64, seed=1)
    assert rel_err(emulate(q, k, v, scale=0.05, out_dtype="float32"), reference(q, k, v, 0.05)) <= 1e-2


# --- the key split (flash_attention(key_split=True)) -----------------------------------------
def test_split_tiles_cover_each_key_tile_once():
    for seq in (1, 64, 65, 77, 130, 197, 1500):
        tiles = [_split_tiles(seq, g) for g in range(fl.SPLIT_GROUPS)]
        assert sorted(tiles[0] + tiles[1]) == list(range(fl.kv_tiles(seq))), seq
        assert tiles[0] and 0 <= len(tiles[0]) - len(tiles[1]) <= 1, seq  # group 0 always has tile 0
        assert fl.split_steps(seq) == len(tiles[0])


@pytest.mark.parametrize("dims", [(1, 2, 200, 64), (2, 1, 64, 64), (1, 1, 1, 64), (1, 3, 130, 64),
                                  (1, 2, 1500, 64), (1, 2, 77, 64)])
@pytest.mark.parametrize("out_dtype", fa.OUT_DTYPES)
def test_emulated_split_kernel_matches_float64_attention(dims, out_dtype):
    """Group 1 has no key tile at seq <= 64 (m = -inf there): the merge gives group 0's result."""
    q, k, v = attention_inputs(*dims)
    got = emulate(q, k, v, out_dtype=out_dtype, key_split=True)
    assert got.shape == q.shape and np.isfinite(got).all()
    assert rel_err(got, reference(q, k, v)) <= 1e-2
    if dims[2] <= fl.TILE_KV:
        assert np.array_equal(got, emulate(q, k, v, out_dtype=out_dtype))


def test_emulated_split_kernel_survives_scores_past_float32_exp():
    q, k, v = attention_inputs(1, 2, 150, 64, seed=3)
    q = (q.astype(np.float32) * 20).astype(ml_dtypes.bfloat16)
    got = emulate(q, k, v, out_dtype="float32", key_split=True)
    assert np.isfinite(got).all() and rel_err(got, reference(q, k, v)) <= 1e-2


@pytest.mark.parametrize("dims", [(2, 2, 130, 64), (3, 1, 64, 64), (2, 1, 5, 64), (2, 1, 200, 64)])
@pytest.mark.parametrize("case", ["padding", "causal", "dense", "neg_inf"])
def test_emulated_split_bias_matches_float64_attention(dims, case):
    """Incl. a whole key tile masked for a row (padding's batch row 1: group 0's first tile) and
    causal rows whose group-1 tiles are all finfo.min."""
    q, k, v = attention_inputs(*dims)
    bias = _bias_cases(dims[0], dims[1], dims[2])[case]
    got = emulate(q, k, v, out_dtype="float32", bias=bias, key_split=True)
    assert got.shape == q.shape and np.isfinite(got).all()
    assert rel_err(got, reference(q, k, v, bias=bias)) <= 1e-2


def test_emulated_split_fully_masked_row_is_the_reference_uniform_row():
    q, k, v = attention_inputs(1, 1, 200, 64, seed=2)
    bias = np.zeros((1, 1, 200, 200), np.float32)
    bias[0, 0, 7] = np.finfo(np.float32).min
    want = reference(q, k, v, bias=bias)
    got = emulate(q, k, v, out_dtype="float32", bias=bias, key_split=True)
    assert np.isfinite(got).all() and rel_err(got, want) <= 1e-2
    bias[0, 0, 7] = -np.inf
    assert np.allclose(emulate(q, k, v, out_dtype="float32", bias=bias, key_split=True), got)


# --- a register-level model: the macros' fragments, register for register ----------------
_L = np.arange(32)


def _isa_index(isa, n):
    """(rows, cols) index arrays [n, 32] of an ISA fragment map (element i, lane)."""
    pos = np.array([[isa(lane, i) for lane in range(32)] for i in range(n)])
    return pos[..., 0], pos[..., 1]


_A_IDX, _B_IDX, _C_IDX = _isa_index(isa_a, 8), _isa_index(isa_b, 4), _isa_index(isa_c, 4)


def _ldsm(smem, base, addr, trans=False):
    """``ldmatrix.x4`` of one warp: registers [4, 32 lanes, 2 halves] from the flat tile
    ``smem``; matrix m's row r is the row lane 8 m + r addresses (``addr(lanes)``)."""
    out = np.empty((4, 32, 2), np.float32)
    for m in range(4):
        for h in range(2):
            r, c = fl.ldmatrix_element(_L, h, trans)
            row, col = addr(8 * m + r)
            out[m, :, h] = smem[base + fl.smem_offset(row, col) + c]
    return out


def _mma(acc, a, b):
    """``mma.m16n8k16`` of one warp by the ISA's maps: acc [32, 4] += A (4 regs) B (2 regs)."""
    A, B, C = np.zeros((16, 16)), np.zeros((16, 8)), np.zeros((16, 8))
    A[_A_IDX] = np.stack([a[i // 2, :, i % 2] for i in range(8)])
    B[_B_IDX] = np.stack([b[i // 2, :, i % 2] for i in range(4)])
    C[_C_IDX] = acc.T
    return (A @ B + C).astype(np.float32)[_C_IDX].T


def _quad(x, op):
    """``op`` over each quad of lanes (x [32]), broadcast back."""
    return np.repeat(op(x.reshape(8, 4), axis=1), 4).astype(np.float32)


def _stage(x, row0, seq):
    """A [64, 64] tile of ``x`` [seq, 64] (float32) as cp.async leaves it: swizzled, zero-filled."""
    smem = np.zeros(fl.TILE_ELEMS, np.float32)
    for c in range(fl.COPY_CHUNKS):
        for tx in range(fl.THREADS):
            r, col = fl.copy_row_col(c, tx)
            if row0 + r < seq:
                smem[fl.smem_offset(r, col):fl.smem_offset(r, col) + fl.CHUNK] = x[row0 + r, col:col + fl.CHUNK]
    return smem


def _warp_softmax(s, o, m, l, t, seq, c, bias=None, row0=0):
    """softmax_step of one warp: s [8 tiles, 32, 4], o [8, 32, 4], m / l [2, 32]; ``bias`` [seq, seq]
    of this (batch, head), read per register at (row0 + C row, key), both clamped to seq - 1."""
    key = t * fl.TILE_KV + np.arange(fl.S_TILES)[:, None, None] * 8 + np.stack([isa_c(_L, i)[1] for i in range(4)], -1)
    if bias is None:
        s = np.where(key < seq, s * c, np.float32(-np.inf)).astype(np.float32)
    else:
        row = row0 + np.stack([isa_c(_L, i)[0] for i in range(4)], -1)[None]
        b = bias[np.minimum(row, seq - 1), np.minimum(key, seq - 1)]
        with np.errstate(over="ignore"):
            biased = np.maximum(s * c + b * np.float32(fa.LOG2E), LOWEST).astype(np.float32)
        s = np.where(key < seq, biased, np.float32(-np.inf)).astype(np.float32)
    for r in range(2):
        mx = _quad(np.maximum(m[r], s[:, :, 2 * r:2 * r + 2].max(axis=(0, 2))), np.max)
        alpha = np.exp2(m[r] - mx)
        m[r], l[r] = mx, l[r] * alpha
        o[:, :, 2 * r:2 * r + 2] *= alpha[None, :, None]
        s[:, :, 2 * r:2 * r + 2] = np.exp2(s[:, :, 2 * r:2 * r + 2] - mx[None, :, None])
        l[r] = l[r] + s[:, :, 2 * r:2 * r + 2].sum(axis=(0, 2), dtype=np.float32)
    return s


def _warp_tile(qf, ks, vs, s_o_m_l, t, seq, c, bias=None, row0=0):
    """One key tile of one warp (macros scores, softmax_step, accumulate)."""
    o, m, l = s_o_m_l
    s = np.zeros((fl.S_TILES, 32, 4), np.float32)
    for j in range(fl.S_TILES):
        for p in range(fl.D_STEPS // 2):
            kf = _ldsm(ks, 0, lambda ln: fl.k_ldmatrix_row_col(ln, j, p))
            for h in range(2):
                s[j] = _mma(s[j], qf[2 * p + h], kf[2 * h:2 * h + 2])
    s = _warp_softmax(s, o, m, l, t, seq, c, bias, row0)
    pf = np.empty((fl.KV_STEPS, 4, 32, 2), np.float32)
    for k in range(fl.KV_STEPS):
        for j in range(4):
            tile, col = fl.p_register(k, j)
            pf[k, j] = _bf16(s[tile, :, col:col + 2])
    for k in range(fl.KV_STEPS):
        for p in range(fl.D_TILES // 2):
            vf = _ldsm(vs, 0, lambda ln: fl.v_ldmatrix_row_col(ln, k, p), trans=True)
            for h in range(2):
                o[2 * p + h] = _mma(o[2 * p + h], pf[k], vf[2 * h:2 * h + 2])


def simulate(q, k, v, out_dtype="float32", bias=None):
    """The kernel, warp by warp and register by register, for one (batch, head): ``q, k, v``
    [seq, 64]; the Q / K / V tiles staged as the copies stage them, fragments loaded as the
    macros load them, multiplied by the ISA's fragment maps (this file's, not flash_layout's);
    ``bias`` [seq, seq] float32: the biased kernel."""
    seq = q.shape[0]
    c = np.float32(fa.LOG2E / 8)
    q, k, v = (x.astype(np.float32) for x in (q, k, v))
    out = np.full((seq, fl.HEAD_DIM), np.nan, np.float32)
    for bx in range(fl.q_tiles(seq)):
        qs = _stage(q, bx * fl.TILE_Q, seq)
        for w in range(fl.WARPS):
            qf = np.stack([_ldsm(qs, 0, lambda ln: fl.q_ldmatrix_row_col(w, ln, d)) for d in range(fl.D_STEPS)])
            state = (np.zeros((fl.D_TILES, 32, 4), np.float32), np.full((2, 32), -np.inf, np.float32),
                     np.zeros((2, 32), np.float32))
            for t in range(fl.kv_tiles(seq)):
                _warp_tile(qf, _stage(k, t * fl.TILE_KV, seq), _stage(v, t * fl.TILE_KV, seq), state, t, seq, c,
                           bias, bx * fl.TILE_Q + w * 16)
            o, _, l = state
            l = np.stack([_quad(l[r], np.sum) for r in range(2)])
            for j in range(fl.D_TILES):
                for i in range(4):
                    row, col = bx * fl.TILE_Q + w * 16 + isa_c(_L, i)[0], j * 8 + isa_c(_L, i)[1]
                    keep = row < seq
                    out[row[keep], col[keep]] = (o[j, :, i] / l[i // 2])[keep]
    return _bf16(out) if out_dtype == "bfloat16" else out


@pytest.mark.parametrize("seq", [130, 64, 5])
def test_register_level_model_is_attention(seq):
    """The macros' register choices (which Q / K / V / P registers feed which mma) compose to
    attention: the register-level model matches the tile-level one and float64 (rows past seq
    unwritten would leave NaN)."""
    q, k, v = attention_inputs(1, 2, seq, 64, seed=seq)
    want = reference(q, k, v)
    tile = emulate(q, k, v, out_dtype="float32")
    for head in range(2):
        got = simulate(q[0, head], k[0, head], v[0, head])
        assert not np.isnan(got).any()
        assert rel_err(got, tile[0, head].astype(np.float64)) <= 1e-3
        assert rel_err(got, want[0, head]) <= 1e-2


# --- the PrimFunc and its CUDA C ---------------------------------------------------------
def test_rejects_unsupported():
    with pytest.raises(ValueError, match="head_dim"):
        fa.flash_attention(1, 1, 64, 128)
    with pytest.raises(ValueError, match="out_dtype"):
        fa.flash_attention(1, 1, 64, out_dtype="float16")
    with pytest.raises(ValueError, match="seq"):
        fa.flash_attention(1, 1, 0)


@pytest.fixture(scope="module")
def sources():
    """CUDA C by (arch, seq, out_dtype)."""
    cases = [("sm_90a", 1500, "bfloat16"), ("sm_80", 1500, "bfloat16"), ("sm_90a", 197, "float32")]
    return {case: fa.cuda_source(fa.build(1, 6, case[1], out_dtype=case[2], arch=case[0])) for case in cases}


def test_cuda_source_has_the_instructions(sources):
    for case, src in sources.items():
        assert src.count("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") == 1, case  # the helper
        assert src.count("tvm_builtin_ptx_mma_sync_aligned_m16n8k16") == 1 + 64, case  # 32 Q K^T, 32 P V
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in src
        assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in src
        assert "cp.async.cg.shared.global" in src and "cp.async.wait_group 1" in src
        assert "__shfl_xor_sync" in src and "ex2.approx.ftz.f32" in src
        assert "__launch_bounds__(128)" in src, case


def test_tails_are_masked_only_when_needed(sources):
    assert "CUDART_INF_F" in sources[("sm_90a", 1500, "bfloat16")]  # 1500 % 64 != 0: masked keys
    whole = fa.cuda_source(fa.build(1, 1, 128))
    assert whole.count("-CUDART_INF_F") == 2  # only the running max's start (m, both rows)


# --- the generated CUDA C, replayed against the layout ----------------------------------------
REPLAY = (2, 2, 130)
"""(batch, heads, seq) of the replayed kernel: two key / query tiles and a tail."""
_TX = range(fl.THREADS)


def _c_eval(expr: str, **env) -> int:
    """An index expression of TVM's CUDA C (fully parenthesised: C and Python agree) at ``env``."""
    for name in ("threadIdx.x", "blockIdx.x", "blockIdx.y", "blockIdx.z"):
        expr = expr.replace(f"((int){name})", name.replace(".", "_"))
    return eval(expr.replace("(uint)", ""), {"min": min, "__builtins__": {}}, env)  # noqa: S307 - our codegen's text


def _env(tx, t=0):
    return {"threadIdx_x": tx, "blockIdx_x": 1, "blockIdx_y": 1, "blockIdx_z": 1, "t": t}


@pytest.fixture(scope="module")
def replay_source():
    src = fa.cuda_source(fa.build(*REPLAY))
    return src[src.index("main_kernel(nv_bfloat16* __restrict__ K_ptr, nv_bfloat16* __restrict__ O_ptr, "
                         "nv_bfloat16* __restrict__ Q_ptr, nv_bfloat16* __restrict__ V_ptr) {"):]


def _expected_ldmatrix():
    """(trans, registers, first register, tile, offset(tx, t)) of every ldmatrix, in the macros' order."""
    q = [(False, "qf", 4 * d, "Qs", lambda tx, t, d=d: fl.smem_offset(*fl.q_ldmatrix_row_col(tx // 32, tx % 32, d)))
         for d in range(fl.D_STEPS)]
    k = [(False, "kf", 0, "Ks", lambda tx, t, j=j, p=p: t % 2 * fl.TILE_ELEMS
          + fl.smem_offset(*fl.k_ldmatrix_row_col(tx % 32, j, p)))
         for j in range(fl.S_TILES) for p in range(fl.D_STEPS // 2)]
    v = [(True, "vf", 0, "Vs", lambda tx, t, k=k, p=p: t % 2 * fl.TILE_ELEMS
          + fl.smem_offset(*fl.v_ldmatrix_row_col(tx % 32, k, p)))
         for k in range(fl.KV_STEPS) for p in range(fl.D_TILES // 2)]
    return q + k + v


def test_generated_ldmatrix_addresses_are_the_layouts(replay_source):
    import re

    found = re.findall(r"ldmatrix_sync_aligned_m8n8_x4(_trans)?_shared_b16\((\w+)_ptr\[(\d+)\], [^;]*?"
                       r"cvta_generic_to_shared\(\(&\((\w+)_ptr\[([^\]]+)\]\)\)\)\);", replay_source)
    want = _expected_ldmatrix()
    assert len(found) == len(want)
    for (trans, reg, first, tile, expr), (w_trans, w_reg, w_first, w_tile, offset) in zip(found, want):
        assert (bool(trans), reg, int(first), tile) == (w_trans, w_reg, w_first, w_tile)
        for t in (0, 1):
            assert [_c_eval(expr, **_env(tx, t)) for tx in _TX] == [offset(tx, t) for tx in _TX], (reg, first, expr)


def _expected_mma():
    def regs(name, first, n):
        return [f"{name}_ptr[{first + i}]" for i in range(n)]

    out = []
    for j in range(fl.S_TILES):
        for p in range(fl.D_STEPS // 2):
            for h in range(2):
                out.append(regs("s", 4 * j, 4) + regs("qf", 4 * (2 * p + h), 4) + regs("kf", 2 * h, 2) + regs("s", 4 * j, 4))
    for k in range(fl.KV_STEPS):
        for p in range(fl.D_TILES // 2):
            for h in range(2):
                o = 4 * (2 * p + h)
                out.append(regs("o", o, 4) + regs("pf", 4 * k, 4) + regs("vf", 2 * h, 2) + regs("o", o, 4))
    return out


def test_generated_mma_operands_are_the_models(replay_source):
    """Which registers feed which mma: exactly those :func:`simulate` multiplies."""
    import re

    found = re.findall(r"mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32\((s_ptr[^;]*|o_ptr[^;]*)\);", replay_source)
    assert [f.split(", ") for f in found] == _expected_mma()


def test_generated_packing_masking_and_store(replay_source):
    import re

    packs = re.findall(r"pf_ptr\[(\d+)\] = hetpart_pack_bf16x2\(s_ptr\[(\d+)\], s_ptr\[(\d+)\]\);", replay_source)
    assert [tuple(map(int, p)) for p in packs] == [
        (4 * k + j, 4 * fl.p_register(k, j)[0] + fl.p_register(k, j)[1], 4 * fl.p_register(k, j)[0] + fl.p_register(k, j)[1] + 1)
        for k in range(fl.KV_STEPS) for j in range(4)]
    seq, heads = REPLAY[2], REPLAY[1]
    masks = re.findall(r"s_ptr\[(\d+)\] = \((.+) \? \(s_ptr\[\d+\] \* [^?]* : -CUDART_INF_F\);", replay_source)
    assert len(masks) == 4 * fl.S_TILES
    for n, cond in masks:
        j, i = divmod(int(n), 4)
        for t in range(fl.kv_tiles(seq)):
            assert [bool(_c_eval(cond, **_env(tx, t))) for tx in _TX] == \
                [t * fl.TILE_KV + 8 * j + fl.c_fragment(tx % 32, i)[1] < seq for tx in _TX]
    stores = re.findall(r"if \((.+)\) \{\n\s*O_ptr\[([^\]]+)\] = \(\(nv_bfloat16\)\(o_ptr\[(\d+)\] / l_ptr\[(\d+)\]\)\);",
                        replay_source)
    assert len(stores) == 4 * fl.D_TILES
    for guard, index, n, r in stores:
        j, i = divmod(int(n), 4)
        assert int(r) == i // 2
        for tx in _TX:
            row = fl.TILE_Q + (tx // 32) * 16 + fl.c_fragment(tx % 32, i)[0]  # blockIdx.x 1
            assert bool(_c_eval(guard, **_env(tx))) == (row < seq)
            assert _c_eval(index, **_env(tx)) == ((1 * heads + 1) * seq + row) * fl.HEAD_DIM + 8 * j + fl.c_fragment(tx % 32, i)[1]


def test_generated_copies_are_the_copy_map(replay_source):
    """Every cp.async: the swizzled destination, the clamped source row, src-size 0 past seq."""
    import re

    seq, heads = REPLAY[2], REPLAY[1]
    found = re.findall(r"cvta_generic_to_shared\(\(&\((\w+)_ptr\[([^\]]+)\]\)\)\), \(&\((\w)_ptr\[([^\]]+)\]\)\), "
                       r"\((.+) \? \(uint\)16 : \(uint\)0\)\);|cvta_generic_to_shared\(\(&\((\w+)_ptr\[([^\]]+)\]\)\)\), "
                       r"\(&\((\w)_ptr\[([^\]]+)\]\)\), \(uint\)16\);", replay_source)
    plan = [("Q", lambda t: fl.TILE_Q, 0)] + [(x, lambda t: 0, 0) for x in "KV"] + \
        [(x, lambda t: (t + 1) * fl.TILE_KV, 1) for x in "KV"]
    assert len(found) == len(plan) * fl.COPY_CHUNKS
    for n, hit in enumerate(found):
        name, row0, stage = plan[n // fl.COPY_CHUNKS]
        c = n % fl.COPY_CHUNKS
        dst_tile, dst, src_buf, src, cond = hit[:5] if hit[0] else (hit[5], hit[6], hit[7], hit[8], None)
        assert (dst_tile, src_buf) == (name + "s", name)
        for t in (0, 1) if stage else (0,):
            for tx in _TX:
                r, col = fl.copy_row_col(c, tx)
                base = (t + stage) % 2 * fl.TILE_ELEMS if name != "Q" else 0
                assert _c_eval(dst, **_env(tx, t)) == base + fl.smem_offset(r, col)
                assert _c_eval(src, **_env(tx, t)) == ((1 * heads + 1) * seq + min(row0(t) + r, seq - 1)) * fl.HEAD_DIM + col
                assert (True if cond is None else bool(_c_eval(cond, **_env(tx, t)))) == (row0(t) + r < seq)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("arch,seq,out_dtype", [("90a", 1500, "bfloat16"), ("80", 1500, "bfloat16"),
                                                ("90a", 197, "float32")])
def test_compiles_without_spilling(arch, seq, out_dtype, sources, tmp_path):
    _assert_fits_without_spilling(sources[("sm_90a" if arch == "90a" else "sm_80", seq, out_dtype)], arch, tmp_path)


def _assert_fits_without_spilling(src: str, arch: str, tmp_path) -> None:
    """No spills in at most 168 registers a thread (3 CTAs of 128 threads fit an SM's 64K registers)."""
    assert_no_spills(src, arch, tmp_path, max_registers=168)


# --- on the GPU ----------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("dims", [(1, 6, 1500, 64), (1, 12, 197, 64), (2, 3, 77, 64)])
@pytest.mark.parametrize("out_dtype", fa.OUT_DTYPES)
def test_matches_float64_on_gpu(dims, out_dtype):
    from gpu_flash_probe import run_kernel

    q, k, v = attention_inputs(*dims)
    got, _ = run_kernel(fa.build(*dims, out_dtype=out_dtype), q, k, v, out_dtype)
    err = rel_err(got, reference(q, k, v))
    assert err <= GPU_TOL, f"{dims} {out_dtype}: max rel err {err:.2e}"


# --- the bias path ---------------------------------------------------------------------------
def _bias_cases(b, h, seq, seed=0):
    """Biases of the masked exports' forms, float32: ``padding`` [b, 1, 1, s] (finfo.min on a tail
    crossing a tile, on the whole first key tile of another row: left padding); ``causal``
    [1, 1, s, s] (finfo.min above the diagonal); ``dense`` [b, h, s, s] (normal: negatives, a
    fifth exactly zero); ``neg_inf`` [b, 1, s, s] (-inf on a random fifth, never a whole row)."""
    rng = np.random.default_rng(seed)
    low = np.finfo(np.float32).min
    pad = key_padding_bias(b, seq)
    if b > 1:
        pad[1, ..., :min(seq - 1, fl.TILE_KV)] = low
    causal = np.where(np.triu(np.ones((seq, seq), bool), 1), low, 0).astype(np.float32)[None, None]
    dense = rng.standard_normal((b, h, seq, seq)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.2] = 0
    neg = np.where(rng.random((b, 1, seq, seq)) < 0.2, -np.inf, 0).astype(np.float32)
    neg[..., 0] = 0
    return {"padding": pad, "causal": causal, "dense": dense, "neg_inf": neg}


@pytest.mark.parametrize("dims", [(2, 2, 130, 64), (3, 1, 64, 64), (2, 1, 5, 64)])
@pytest.mark.parametrize("case", ["padding", "causal", "dense", "neg_inf"])
def test_emulated_bias_matches_float64_attention(dims, case):
    q, k, v = attention_inputs(*dims)
    bias = _bias_cases(dims[0], dims[1], dims[2])[case]
    got = emulate(q, k, v, out_dtype="float32", bias=bias)
    assert got.shape == q.shape and np.isfinite(got).all()
    assert rel_err(got, reference(q, k, v, bias=bias)) <= 1e-2


def test_emulated_fully_masked_row_is_the_reference_uniform_row():
    """A query row whose keys are all finfo.min (two tiles): the reference softmax is uniform over
    the keys, so O is the mean of V; the kernel's clamp gives the same.  An all -inf row: the
    reference is NaN; the kernel gives the same uniform row (finite)."""
    q, k, v = attention_inputs(1, 1, 100, 64, seed=2)
    bias = np.zeros((1, 1, 100, 100), np.float32)
    bias[0, 0, 7] = np.finfo(np.float32).min
    want = reference(q, k, v, bias=bias)
    assert np.allclose(want[0, 0, 7], v[0, 0].astype(np.float64).mean(0))
    got = emulate(q, k, v, out_dtype="float32", bias=bias)
    assert np.isfinite(got).all() and rel_err(got, want) <= 1e-2
    bias[0, 0, 7] = -np.inf
    got_inf = emulate(q, k, v, out_dtype="float32", bias=bias)
    assert np.isfinite(got_inf).all() and np.allclose(got_inf, got)


def test_emulated_zero_bias_is_the_unbiased_kernel():
    q, k, v = attention_inputs(1, 2, 130, 64, seed=4)
    zero = np.zeros((1, 1, 1, 130), np.float32)
    assert np.array_equal(emulate(q, k, v, out_dtype="float32", bias=zero), emulate(q, k, v, out_dtype="float32"))


@pytest.mark.parametrize("seq", [130, 5])
@pytest.mark.parametrize("case", ["padding", "causal", "dense"])
def test_register_level_model_with_bias_is_attention(seq, case):
    q, k, v = attention_inputs(2, 1, seq, 64, seed=5)
    bias = np.broadcast_to(_bias_cases(2, 1, seq)[case], (2, 1, seq, seq))[1, 0]
    got = simulate(q[1, 0], k[1, 0], v[1, 0], bias=np.ascontiguousarray(bias))
    want = reference(q[1:, :1], k[1:, :1], v[1:, :1], bias=bias)[0, 0]
    assert np.isfinite(got).all() and rel_err(got, want) <= 1e-2


def test_rejects_unsupported_bias_shapes():
    for bad in [(2, 1, 1, 129), (3, 1, 1, 130), (1, 2, 1, 130), (1, 1, 2, 130), (1, 1, 130)]:
        with pytest.raises(ValueError):
            fa.flash_attention(2, 1, 130, bias_shape=bad)


BIAS_REPLAY = {"padding": (2, 1, 1, 130), "per_head_query": (2, 2, 130, 130), "shared": (1, 1, 130, 130)}


@pytest.fixture(scope="module")
def bias_sources():
    return {name: fa.cuda_source(fa.build(*REPLAY, bias_shape=shape)) for name, shape in BIAS_REPLAY.items()}


def _bias_loads(src: str) -> list:
    """``(score register, B's index expression)`` of every bias load in the kernel's CUDA C."""
    import re

    return re.findall(r"s_ptr\[(\d+)\] = max\(\(\(s_ptr\[\d+\] \* [^)]*\) \+ \(B_ptr\[(.+?)\] \* ", src)


def _bias_index(bias_shape, row: int, key: int) -> int:
    """The flat index of B ``[bb, bh, bq, seq]`` the model reads at batch 1 (or 0), head 1 (or 0),
    query ``row`` (or 0) and ``key``."""
    bb, bh, bq, seq = bias_shape
    return (((1 if bb > 1 else 0) * bh + (1 if bh > 1 else 0)) * bq + (row if bq > 1 else 0)) * seq + key


@pytest.mark.parametrize("name", list(BIAS_REPLAY))
def test_generated_bias_reads_are_the_model(name, bias_sources):
    """Every score's bias load, per thread and key tile: the flat index of B at (batch 1 or 0, head 1
    or 0, query row or 0, key), the row and key clamped to seq - 1 -- what :func:`simulate` reads."""
    src = bias_sources[name]
    assert "main_kernel(float* __restrict__ B_ptr, nv_bfloat16* __restrict__ K_ptr" in src
    seq = BIAS_REPLAY[name][3]
    found = _bias_loads(src)
    assert len(found) == 4 * fl.S_TILES
    for n, expr in found:
        j, i = divmod(int(n), 4)
        for t in range(fl.kv_tiles(seq)):
            for tx in _TX:
                row = min(fl.TILE_Q + (tx // 32) * 16 + fl.c_fragment(tx % 32, i)[0], seq - 1)  # blockIdx.x 1
                key = min(t * fl.TILE_KV + 8 * j + fl.c_fragment(tx % 32, i)[1], seq - 1)
                want = _bias_index(BIAS_REPLAY[name], row, key)
                assert _c_eval(expr, **_env(tx, t)) == want, (n, t, tx, expr)


def test_unbiased_source_has_no_bias(sources):
    assert all("B_ptr" not in src for src in sources.values())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("arch,dims,bias_shape", [("90a", (1, 12, 128), (1, 1, 1, 128)),
                                                  ("90a", (32, 12, 128), (32, 1, 1, 128)),
                                                  ("90a", (2, 6, 1500), (2, 6, 1500, 1500)),
                                                  ("80", (1, 6, 1500), (1, 1, 1500, 1500))])
def test_biased_kernel_compiles_without_spilling(arch, dims, bias_shape, tmp_path):
    src = fa.cuda_source(fa.build(*dims, out_dtype="float32", bias_shape=bias_shape,
                                  arch="sm_90a" if arch == "90a" else "sm_80"))
    _assert_fits_without_spilling(src, arch, tmp_path)


def _biased_on_gpu(dims, case, key_split: bool = False):
    """``(O, its relative error against the float64 reference)`` of the biased float32-output kernel
    of ``dims`` on the GPU, on :func:`attention_inputs` and :func:`_bias_cases`' ``case``."""
    from gpu_flash_probe import run_kernel

    q, k, v = attention_inputs(*dims)
    bias = _bias_cases(dims[0], dims[1], dims[2])[case]
    ex = fa.build(*dims, out_dtype="float32", bias_shape=bias.shape, key_split=key_split)
    got, _ = run_kernel(ex, q, k, v, "float32", bias)
    return got, rel_err(got, reference(q, k, v, bias=bias))


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("dims", [(1, 12, 128, 64), (32, 12, 128, 64), (3, 3, 77, 64), (2, 2, 130, 64)])
@pytest.mark.parametrize("case", ["padding", "causal", "dense", "neg_inf"])
def test_biased_kernel_matches_float64_on_gpu(dims, case):
    _, err = _biased_on_gpu(dims, case)
    assert err <= GPU_TOL, f"{dims} {case}: max rel err {err:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_biased_kernel_fully_masked_row_on_gpu():
    from gpu_flash_probe import run_kernel

    q, k, v = attention_inputs(2, 2, 130, 64, seed=6)
    bias = np.zeros((2, 1, 130, 130), np.float32)
    bias[1, 0, 3] = np.finfo(np.float32).min
    got, _ = run_kernel(fa.build(2, 2, 130, out_dtype="float32", bias_shape=bias.shape), q, k, v, "float32", bias)
    want = reference(q, k, v, bias=bias)
    assert np.isfinite(got).all() and rel_err(got, want) <= GPU_TOL


# --- the key-split kernel's CUDA C (flash_attention(key_split=True)) ---------------------------
_TX2 = range(fl.SPLIT_THREADS)
SPLIT_SMEM = 45056
"""Static shared memory of the split kernel: Q 8 KB, each group's K and V 8 KB each (32 KB), the
merge buffer 4 KB -- under the 48 KB a kernel gets without opting into dynamic shared memory."""


def _env2(tx, i=0):
    return {"threadIdx_x": tx, "blockIdx_x": 1, "blockIdx_y": 1, "blockIdx_z": 1, "i": i}


@pytest.fixture(scope="module")
def split_sources():
    """CUDA C of the split kernel by (arch, batch, heads, seq, out_dtype, bias_shape)."""
    cases = [("sm_90a", 1, 6, 1500, "bfloat16", None), ("sm_80", 1, 6, 1500, "bfloat16", None),
             ("sm_90a", 2, 3, 77, "float32", None), ("sm_90a", 2, 2, 130, "float32", (2, 1, 130, 130)),
             ("sm_90a", 1, 12, 128, "float32", (1, 1, 1, 128))]
    return {c: fa.cuda_source(fa.build(*c[1:4], out_dtype=c[4], arch=c[0], bias_shape=c[5], key_split=True))
            for c in cases}


def test_split_source_has_the_instructions(split_sources):
    for case, src in split_sources.items():
        assert src.count("tvm_builtin_ptx_mma_sync_aligned_m16n8k16") == 1 + 64, case  # one group's macros
        assert "__launch_bounds__(256)" in src and "float X_ptr[1024]" in src, case
        assert "nv_bfloat16 Ks_ptr[8192]" in src and "nv_bfloat16 Vs_ptr[8192]" in src, case
        assert "cp.async.wait_group 1" in src and "ex2.approx.ftz.f32" in src, case


def test_key_split_off_is_the_unsplit_primfunc():
    import tvm_ffi

    for kw in ({}, {"bias_shape": (1, 1, 1, 130)}):
        assert tvm_ffi.structural_equal(fa.flash_attention(1, 2, 130, key_split=False, **kw),
                                        fa.flash_attention(1, 2, 130, **kw))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("n", range(5))
def test_split_compiles_without_spilling_in_static_smem(n, split_sources, tmp_path):
    """No spills, at most 128 registers a thread (two CTAs of 256 threads fit an SM's 64K), 44 KB
    of static shared memory."""
    import re

    from nvcc_cases import cubin_and_ptx

    case = list(split_sources)[n]
    cu = tmp_path / "k.cu"
    cu.write_text(split_sources[case])
    report, _ = cubin_and_ptx(cu, case[0][3:])
    assert set(re.findall(r"(\d+) bytes spill stores", report)) == {"0"}, report
    (regs, smem), = re.findall(r"Used (\d+) registers, .*?(\d+) bytes smem", report)
    assert int(regs) <= 128 and int(smem) == SPLIT_SMEM <= 48 * 1024, report


@pytest.fixture(scope="module")
def split_replay_source():
    src = fa.cuda_source(fa.build(*REPLAY, key_split=True))
    return src[src.index("main_kernel(nv_bfloat16* __restrict__ K_ptr, nv_bfloat16* __restrict__ O_ptr, "
                         "nv_bfloat16* __restrict__ Q_ptr, nv_bfloat16* __restrict__ V_ptr) {"):]


def test_split_generated_copies_are_the_copy_map(split_replay_source):
    """Q by group 0 (``tx < 128``); each group's K and V tile ``2 i + g`` into its own buffer
    (``g * 4096``), the copy map of the group's thread ``tx % 128``; rows past seq zero-filled
    (group 1's absent last tile at an odd tile count: all of it)."""
    import re

    seq, heads = REPLAY[2], REPLAY[1]
    found = re.findall(r"cvta_generic_to_shared\(\(&\((\w+)_ptr\[([^\]]+)\]\)\)\), \(&\((\w)_ptr\[([^\]]+)\]\)\), "
                       r"\((.+) \? \(uint\)16 : \(uint\)0\)\);|cvta_generic_to_shared\(\(&\((\w+)_ptr\[([^\]]+)\]\)\)\), "
                       r"\(&\((\w)_ptr\[([^\]]+)\]\)\), \(uint\)(16|0)\);", split_replay_source)
    plan = [("Q", lambda tx, i: fl.TILE_Q)] + \
        [(x, lambda tx, i: fl.split_tile(0, tx // fl.THREADS) * fl.TILE_KV) for x in "KV"] + \
        [("K", lambda tx, i: fl.split_tile(i + 1, tx // fl.THREADS) * fl.TILE_KV)] + \
        [("V", lambda tx, i: fl.split_tile(i + 1, tx // fl.THREADS) * fl.TILE_KV)]
    assert len(found) == len(plan) * fl.COPY_CHUNKS
    for n, hit in enumerate(found):
        name, row0 = plan[n // fl.COPY_CHUNKS]
        c = n % fl.COPY_CHUNKS
        dst_tile, dst, src_buf, src, cond = hit[:5] if hit[0] else (hit[5], hit[6], hit[7], hit[8], hit[9] == "16")
        assert (dst_tile, src_buf) == (name + "s", name)
        for i in range(fl.split_steps(seq) - 1):
            for tx in range(fl.THREADS) if name == "Q" else _TX2:
                r, col = fl.copy_row_col(c, tx % fl.THREADS)
                base = 0 if name == "Q" else tx // fl.THREADS * fl.TILE_ELEMS
                assert _c_eval(dst, **_env2(tx, i)) == base + fl.smem_offset(r, col)
                want = ((1 * heads + 1) * seq + min(row0(tx, i) + r, seq - 1)) * fl.HEAD_DIM + col
                assert _c_eval(src, **_env2(tx, i)) == want
                # a constant src-size where TVM proved it: 16 (always inside), 0 (always past seq)
                valid = cond if isinstance(cond, bool) else bool(_c_eval(cond, **_env2(tx, i)))
                assert valid == (row0(tx, i) + r < seq)


def test_split_generated_ldmatrix_addresses_are_the_layouts(split_replay_source):
    """Q's fragments of warp ``w % 4`` (both groups the same rows); K and V from the group's buffer."""
    import re

    found = re.findall(r"ldmatrix_sync_aligned_m8n8_x4(_trans)?_shared_b16\((\w+)_ptr\[(\d+)\], [^;]*?"
                       r"cvta_generic_to_shared\(\(&\((\w+)_ptr\[([^\]]+)\]\)\)\)\);", split_replay_source)
    q = [(False, "qf", 4 * d, "Qs", lambda tx, d=d: fl.smem_offset(*fl.q_ldmatrix_row_col(tx // 32 % fl.WARPS,
                                                                                             tx % 32, d)))
         for d in range(fl.D_STEPS)]
    k = [(False, "kf", 0, "Ks", lambda tx, j=j, p=p: tx // fl.THREADS * fl.TILE_ELEMS
          + fl.smem_offset(*fl.k_ldmatrix_row_col(tx % 32, j, p)))
         for j in range(fl.S_TILES) for p in range(fl.D_STEPS // 2)]
    v = [(True, "vf", 0, "Vs", lambda tx, k=k, p=p: tx // fl.THREADS * fl.TILE_ELEMS
          + fl.smem_offset(*fl.v_ldmatrix_row_col(tx % 32, k, p)))
         for k in range(fl.KV_STEPS) for p in range(fl.D_TILES // 2)]
    want = q + k + v
    assert len(found) == len(want)
    for (trans, reg, first, tile, expr), (w_trans, w_reg, w_first, w_tile, offset) in zip(found, want):
        assert (bool(trans), reg, int(first), tile) == (w_trans, w_reg, w_first, w_tile)
        assert [_c_eval(expr, **_env2(tx)) for tx in _TX2] == [offset(tx) for tx in _TX2], (reg, first, expr)


def test_split_generated_masks_guards_merge_and_store(split_replay_source):
    """The key mask at tile ``2 i + g``; Q K^T, softmax and P V skipped where that tile is past the
    last (three guards); group 1's (m, l) and O written to the merge buffer at its thread ``tx - 128``,
    read by group 0's thread ``tx``; the store by group 0 only, its rows as the unsplit kernel's."""
    import re

    src, (seq, heads) = split_replay_source, (REPLAY[2], REPLAY[1])
    steps = range(fl.split_steps(seq))
    masks = re.findall(r"s_ptr\[(\d+)\] = \((.+) \? \(s_ptr\[\d+\] \* [^?]* : -CUDART_INF_F\);", src)
    assert len(masks) == 4 * fl.S_TILES
    for n, cond in masks:
        j, c = divmod(int(n), 4)
        for i in steps:
            for tx in _TX2:
                t = fl.split_tile(i, tx // fl.THREADS)
                if t < fl.kv_tiles(seq):
                    assert bool(_c_eval(cond, **_env2(tx, i))) == \
                        (t * fl.TILE_KV + 8 * j + fl.c_fragment(tx % 32, c)[1] < seq)
    merge = src[src.index("if (128 <= ((int)threadIdx.x)) {"):]
    loop = src[src.index("for (int i = 0;"):src.index("if (128 <= ((int)threadIdx.x)) {")]
    guards = re.findall(r"\n    if \((.+)\) \{", loop)
    assert len(guards) == 5  # Q K^T, K's next copy, softmax, P V, V's next copy
    for n, guard in enumerate(guards):
        for i in steps:
            for tx in _TX2:
                want = i + 1 < len(steps) if n in (1, 4) else fl.split_tile(i, tx // fl.THREADS) < fl.kv_tiles(seq)
                assert bool(_c_eval(guard, **_env2(tx, i))) == want, (n, guard)
    writes = re.findall(r"X_ptr\[([^\]]+)\] = (\w+)_ptr\[(\d+)\];", merge)
    reads = re.findall(r"[^ ] X_ptr\[([^\]]+)\]|\(X_ptr\[([^\]]+)\]", merge)
    reads = [a or b for a, b in reads]
    assert len(writes) == 4 + 4 * fl.D_TILES
    for expr, reg, n in writes:  # slot: m 0-1, l 2-3, O's MERGE_CHUNK-th part 0..7
        slot = {"m": int(n), "l": 2 + int(n)}.get(reg, int(n) % fl.MERGE_CHUNK)
        assert _c_eval(expr, **_env2(fl.THREADS)) == slot * fl.THREADS, (expr, reg, n)
        assert sorted(_c_eval(expr, **_env2(tx)) % fl.THREADS for tx in range(fl.THREADS, fl.SPLIT_THREADS)) == \
            list(range(fl.THREADS))
        assert all(_c_eval(expr, **_env2(tx)) // fl.THREADS < fl.MERGE_CHUNK for tx in range(fl.THREADS, 256))
    for expr in reads:
        assert all(_c_eval(expr, **_env2(tx)) % fl.THREADS == tx for tx in range(fl.THREADS)), expr
    stores = re.findall(r"if \((.+)\) \{\n\s*O_ptr\[([^\]]+)\] = \(\(nv_bfloat16\)\(o_ptr\[(\d+)\] / l_ptr\[(\d+)\]\)\);",
                        src)
    assert len(stores) == 4 * fl.D_TILES and "if (((int)threadIdx.x) < 128) {" in src[src.rindex("X_ptr["):]
    assert len(reads) == 4 + 2 + 4 * fl.D_TILES  # m (twice: the max and group 1's factor), l, O
    for guard, index, n, r in stores:
        j, c = divmod(int(n), 4)
        assert int(r) == c // 2
        for tx in range(fl.THREADS):
            row = fl.TILE_Q + (tx // 32) * 16 + fl.c_fragment(tx % 32, c)[0]  # blockIdx.x 1
            assert bool(_c_eval(guard, **_env2(tx))) == (row < seq)
            assert _c_eval(index, **_env2(tx)) == ((1 * heads + 1) * seq + row) * fl.HEAD_DIM + 8 * j + \
                fl.c_fragment(tx % 32, c)[1]


# --- the key-split kernel on the GPU ---------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("dims", [(1, 6, 1500, 64), (1, 12, 197, 64), (2, 3, 77, 64), (2, 2, 130, 64),
                                  (1, 2, 64, 64), (1, 2, 5, 64)])
@pytest.mark.parametrize("out_dtype", fa.OUT_DTYPES)
def test_split_matches_float64_on_gpu(dims, out_dtype):
    """Incl. seq <= 64 (group 1 without a key tile: its m stays -inf) and odd tile counts (130: 3)."""
    from gpu_flash_probe import run_kernel

    q, k, v = attention_inputs(*dims)
    got, _ = run_kernel(fa.build(*dims, out_dtype=out_dtype, key_split=True), q, k, v, out_dtype)
    assert np.isfinite(got).all()
    err = rel_err(got, reference(q, k, v))
    assert err <= GPU_TOL, f"{dims} {out_dtype}: max rel err {err:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("dims", [(1, 6, 1500, 64), (1, 12, 128, 64), (3, 3, 77, 64), (2, 2, 130, 64)])
@pytest.mark.parametrize("case", ["padding", "causal", "dense", "neg_inf"])
def test_split_biased_kernel_matches_float64_on_gpu(dims, case):
    got, err = _biased_on_gpu(dims, case, key_split=True)
    assert np.isfinite(got).all() and err <= GPU_TOL, f"{dims} {case}: max rel err {err:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("seq", [130, 1500])
def test_split_biased_kernel_fully_masked_row_on_gpu(seq):
    """A row all finfo.min: each group's m is -FLT_MAX-scaled, finite; the merge gives the uniform row."""
    from gpu_flash_probe import run_kernel

    q, k, v = attention_inputs(2, 2, seq, 64, seed=6)
    bias = np.zeros((2, 1, seq, seq), np.float32)
    bias[1, 0, 3] = np.finfo(np.float32).min
    ex = fa.build(2, 2, seq, out_dtype="float32", bias_shape=bias.shape, key_split=True)
    got, _ = run_kernel(ex, q, k, v, "float32", bias)
    want = reference(q, k, v, bias=bias)
    assert np.isfinite(got).all() and rel_err(got, want) <= GPU_TOL


@pytest.mark.parametrize("name", list(BIAS_REPLAY))
def test_split_generated_bias_reads_are_the_model(name):
    """The split kernel's bias loads: as the unsplit kernel's at key tile ``2 i + g`` and query row
    ``16 (w % 4) ..`` (both groups the same rows)."""
    src = fa.cuda_source(fa.build(*REPLAY, bias_shape=BIAS_REPLAY[name], key_split=True))
    seq = BIAS_REPLAY[name][3]
    found = _bias_loads(src)
    assert len(found) == 4 * fl.S_TILES
    for n, expr in found:
        j, i = divmod(int(n), 4)
        for step in range(fl.split_steps(seq)):
            for tx in _TX2:
                t = fl.split_tile(step, tx // fl.THREADS)
                if t >= fl.kv_tiles(seq):
                    continue  # skipped by the guard
                row = min(fl.TILE_Q + (tx // 32 % fl.WARPS) * 16 + fl.c_fragment(tx % 32, i)[0], seq - 1)
                key = min(t * fl.TILE_KV + 8 * j + fl.c_fragment(tx % 32, i)[1], seq - 1)
                want = _bias_index(BIAS_REPLAY[name], row, key)
                assert _c_eval(expr, **_env2(tx, step)) == want, (n, step, tx, expr)
