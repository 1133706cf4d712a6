"""Geometry of the fused attention kernel (:mod:`hetpart.kernels.flash_attention`): pure Python.

Every function takes plain ints or TIR expressions (``//``, ``%``, ``^`` only), so the
kernel indexes by them and the CPU tests check them against the PTX ISA without a GPU.

In:  a lane (0..31), a warp (0..3), a register / element number, a tile row / column.
Out: where that element lies: (row, column) of an MMA operand, or an element offset in a
     shared-memory tile.
Invariant: the ``mma.m16n8k16`` fragment maps are the PTX ISA's ("Matrix Fragments for
mma.m16n8k16 with floating point type", section 9.7.13.4.8 of PTX ISA 8.0: A, B and C/D),
and ``ldmatrix``'s per-thread result is the ISA's (section 9.7.13.4.15, "ldmatrix": lane l
gets row ``l / 4``, columns ``2 (l % 4)`` and ``+1`` of each 8x8 matrix; with ``.trans``,
row and column exchanged); each ``*_ldmatrix_*`` address map composed with that result
gives exactly the fragment the following ``mma`` expects (the tests check all of them).

Tiles: ``TILE_Q`` query rows a CTA (``WARPS`` warps of 16 rows), ``TILE_KV`` keys a step,
head dim ``HEAD_DIM`` = 64 (one 128-byte row of bf16 per token).  Shared-memory tiles are
``[rows, 64]`` bf16 row-major with the 16-byte chunks of each row XOR-swizzled by the row
(:func:`smem_offset`: chunk ``c`` of row ``r`` stored at chunk ``c ^ (r % 8)``), so the
eight row addresses of one ``ldmatrix`` 8x8 matrix (one chunk column, eight rows) hit the
eight different 16-byte bank groups, and ``cp.async``'s 16-byte writes stay whole.
"""

from __future__ import annotations

HEAD_DIM = 64
"""The only head dimension the kernel supports (64 bf16 = one 128-byte row)."""
TILE_Q = 64
"""Query rows of one CTA (grid x: ``ceil(seq / TILE_Q)``)."""
TILE_KV = 64
"""Keys (and values) per step of the key loop."""
WARP = 32
WARPS = TILE_Q // 16
"""Warps of one CTA: each owns 16 query rows (one m16 MMA row block)."""
THREADS = WARPS * WARP
CHUNK = 8
"""bf16 elements of one 16-byte chunk (one cp.async, one ldmatrix row)."""
CHUNKS_PER_ROW = HEAD_DIM // CHUNK
TILE_ELEMS = TILE_Q * HEAD_DIM
"""Elements of one [64, 64] shared-memory tile (Q, K or V: all three are 64 x 64)."""
COPY_CHUNKS = TILE_ELEMS // CHUNK // THREADS
"""cp.async chunks each thread copies per tile (4)."""
D_TILES = HEAD_DIM // 8
"""n8 tiles of the output O (and k16 steps of Q K^T: ``HEAD_DIM // 16``)."""
S_TILES = TILE_KV // 8
"""n8 tiles of one warp's scores S (16 x TILE_KV)."""
D_STEPS = HEAD_DIM // 16
"""k16 steps of S = Q K^T (over the head dim)."""
KV_STEPS = TILE_KV // 16
"""k16 steps of O += P V (over the keys of a tile)."""


# --- PTX ISA mma.m16n8k16 (bf16 in, f32 accumulators) fragments ------------------------
def a_fragment(lane, i):
    """(row, col) in the 16 x 16 A tile of element ``a_i`` (i in 0..7) of ``lane``: ISA
    ``row = groupID + 8 * (i in {2,3,6,7})``, ``col = 2 * threadID_in_group + (i & 1) + 8 * (i >= 4)``.
    Register ``j`` (a b32) holds ``a_{2j}`` (low half) and ``a_{2j+1}``."""
    return lane // 4 + 8 * ((i // 2) % 2), (lane % 4) * 2 + i % 2 + 8 * (i // 4)


def b_fragment(lane, i):
    """(k, n) in the 16 x 8 B tile of element ``b_i`` (i in 0..3): ISA
    ``row(k) = 2 * threadID_in_group + (i & 1) + 8 * (i >= 2)``, ``col(n) = groupID``."""
    return (lane % 4) * 2 + i % 2 + 8 * (i // 2), lane // 4


def c_fragment(lane, i):
    """(row, col) in the 16 x 8 C/D tile of accumulator ``c_i`` (i in 0..3): ISA
    ``row = groupID + 8 * (i >= 2)``, ``col = 2 * threadID_in_group + (i & 1)``."""
    return lane // 4 + 8 * (i // 2), (lane % 4) * 2 + i % 2


# --- ldmatrix -----------------------------------------------------------------------
def ldmatrix_element(lane, h, trans=False):
    """(row, col) in an 8x8 matrix of the ``h``-th (0 or 1) bf16 of the b32 ``lane`` gets
    from it: ISA row ``lane / 4``, column ``2 (lane % 4) + h``; ``.trans``: exchanged."""
    r, c = lane // 4, (lane % 4) * 2 + h
    return (c, r) if trans else (r, c)


def q_ldmatrix_row_col(warp, lane, step):
    """Row and column of the Q tile whose address ``lane`` gives to ``ldmatrix.x4`` for the
    A fragment of d-step ``step`` (columns ``16 step ..``): lanes ``8 m ..`` address matrix
    ``m``, which register ``m`` receives: ``a_{2m}, a_{2m+1}`` -- rows ``+ 8 (m % 2)``,
    columns ``+ 8 (m // 2)`` (:func:`a_fragment`)."""
    m = lane // 8
    return warp * 16 + lane % 8 + 8 * (m % 2), step * 16 + 8 * (m // 2)


def k_ldmatrix_row_col(lane, s_tile, pair):
    """Row (key) and column (head dim) of the K tile whose address ``lane`` gives to
    ``ldmatrix.x4`` (no ``.trans``) for the B fragments of score tile ``s_tile`` (keys
    ``8 s_tile ..``) at d-steps ``2 pair`` and ``2 pair + 1``: register ``m`` is ``b_{2(m%2)},
    b_{2(m%2)+1}`` of d-step ``2 pair + m // 2`` (B's k = d, n = key: K row-major is B
    column-major)."""
    return s_tile * 8 + lane % 8, pair * 32 + 8 * (lane // 8)


def v_ldmatrix_row_col(lane, step, pair):
    """Row (key) and column (head dim) of the V tile whose address ``lane`` gives to
    ``ldmatrix.x4.trans`` for the B fragments of key step ``step`` (keys ``16 step ..``) and
    output tiles ``2 pair``, ``2 pair + 1``: register ``m`` is ``b_{2(m%2)}, b_{2(m%2)+1}``
    of output tile ``2 pair + m // 2`` (B's k = key, n = d: V row-major, transposed by
    ldmatrix)."""
    m = lane // 8
    return step * 16 + 8 * (m % 2) + lane % 8, (2 * pair + m // 2) * 8


def p_register(step, j):
    """The score accumulator pair ``(s_tile, c)`` register ``j`` (0..3) of P's A fragment at
    key step ``step`` packs (``c`` and ``c + 1``): a C tile's rows and columns are those of
    A's ``a_0, a_1`` / ``a_2, a_3`` (:func:`c_fragment` vs :func:`a_fragment`), the second
    n8 tile's those of ``a_4 .. a_7``."""
    return 2 * step + j // 2, 2 * (j % 2)


# --- shared memory and the copies ----------------------------------------------------
def smem_offset(row, col):
    """Element offset of ``[row, col]`` of a [rows, 64] bf16 tile: row-major, 16-byte chunk
    ``col / 8`` of the row stored at chunk ``(col / 8) ^ (row % 8)``."""
    return row * HEAD_DIM + ((col // CHUNK) ^ (row % CHUNKS_PER_ROW)) * CHUNK + col % CHUNK


def copy_row_col(c, tx):
    """Row and first column of the 16-byte chunk thread ``tx`` copies as its ``c``-th
    (0..:data:`COPY_CHUNKS`-1) of a 64 x 64 tile: eight consecutive threads one row."""
    return c * (THREADS // CHUNKS_PER_ROW) + tx // CHUNKS_PER_ROW, (tx % CHUNKS_PER_ROW) * CHUNK


def q_tiles(seq: int) -> int:
    """CTAs along the sequence (grid x)."""
    return -(-seq // TILE_Q)


def kv_tiles(seq: int) -> int:
    """Steps of the key loop."""
    return -(-seq // TILE_KV)


# --- the key-split variant (:func:`.flash_attention.flash_attention` ``key_split=True``) ---------
SPLIT_GROUPS = 2
"""Warp groups of a key-split CTA: each is the unsplit kernel's four warps (the same 64 query
rows, warp ``w`` of a group rows ``16 w ..``) running the key loop over its own key tiles."""
SPLIT_THREADS = SPLIT_GROUPS * THREADS
"""Threads of a key-split CTA (256): group ``g`` is threads ``128 g .. 128 g + 127``."""
MERGE_CHUNK = 8
"""float32 accumulators a thread of group 1 hands group 0 per merge pass (through a
``[MERGE_CHUNK, THREADS]`` float32 shared buffer, 4 KB: the split kernel's shared memory stays
static, 40 + 4 = 44 KB <= 48 KB)."""


def split_tile(step, group):
    """The key tile group ``group`` handles at step ``step`` of the split loop: interleaved,
    ``2 step + group`` -- one step's two tiles are one contiguous block of 128 keys, the
    groups' tile counts differ by at most one (the last step's group 1 when the tile count is
    odd) and only the last step holds a partial or absent tile."""
    return SPLIT_GROUPS * step + group


def split_steps(seq: int) -> int:
    """Steps of the split key loop: ``ceil(kv_tiles / 2)``; a step's tile ``>= kv_tiles(seq)``
    (group 1's, odd tile counts) is skipped by that group (copied zero-filled, not computed)."""
    return -(-kv_tiles(seq) // SPLIT_GROUPS)


__all__ = ["CHUNK", "COPY_CHUNKS", "D_STEPS", "D_TILES", "HEAD_DIM", "KV_STEPS", "S_TILES", "THREADS",
           "TILE_KV", "TILE_Q", "WARPS", "a_fragment", "b_fragment", "c_fragment", "copy_row_col",
           "k_ldmatrix_row_col", "kv_tiles", "ldmatrix_element", "p_register", "q_ldmatrix_row_col",
           "q_tiles", "smem_offset", "v_ldmatrix_row_col", "MERGE_CHUNK", "SPLIT_GROUPS", "SPLIT_THREADS",
           "split_steps", "split_tile"]
