"""The geometry of the hand-written Hopper ``wgmma`` GEMM (issue 17 spike): pure Python.

In:  a precision (:class:`Precision`: the element types of A and B in global and in shared
     memory, the ``wgmma`` instruction and its K), tile sizes, thread / chunk / register indices
     (ints or TIR expressions alike).
Out: shared-memory element offsets (:func:`smem_offset`), descriptor fields
     (:func:`descriptor_fields`, :func:`k_step_bytes`), the chunk-to-thread copy map
     (:func:`chunk_row`, :func:`chunk_k`) and the accumulator fragment map (:func:`d_fragment`).
Invariant: every map is the PTX ISA's (sections cited per function) and is the same *in bytes*
for every precision: a 16-byte chunk is one row of a core matrix, a K tile is 128 bytes per row
(64 bf16 or 32 tf32), one ``wgmma`` step reads 32 bytes of K per row (k16 bf16 or k8 tf32), so
only element counts differ.  :mod:`hetpart.kernels.wgmma_gemm` builds the kernel from these,
the CPU tests read them back by the ISA's formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

WARPGROUP = 128
"""Threads of one warpgroup: four consecutive warps."""
TILE_M = 64
"""Rows of C per warpgroup: wgmma's M is always 64."""
CORE_ROWS = 8
"""A core matrix is 8 rows of 16 bytes: 128 contiguous bytes (ISA 9.7.17.5.1)."""
CHUNK_BYTES = 16
"""One row of a core matrix: one vector / cp.async copy."""
TILE_K_BYTES = 128
"""Bytes of K staged in shared memory per tile row per step (eight chunks)."""
STEP_K_BYTES = 32
"""Bytes of K one wgmma reads per row: k16 of a 16-bit type, k8 of tf32 (two K core-matrix groups)."""
TILE_N_CHOICES = (64, 128)


@dataclass(frozen=True)
class Precision:
    """What A and B are in global memory and in shared memory, and the instruction.

    ``a_global``/``b_global``: TVM dtypes of the kernel's A and B parameters; ``smem``: the
    dtype both are staged as (a global dtype other than ``smem`` is converted on the register
    path, not by ``cp.async``); ``mma_types``: the instruction's ``.dtype.atype.btype`` tail;
    ``mma_k``: its K; ``transpose_immediates``: whether the ss form takes imm-trans-a/b (the
    16-bit types do; ``.tf32`` has none and is K-major only, ISA 9.7.17.5.1); ``a_round``:
    A rounded in its own type on the register path (``"tf32_rna"``: to the nearest tf32, ties
    away, ``cvt.rna.tf32.f32``, as hetpart's TF32 ``mma.sync`` rule and cuBLAS do; the tensor
    core would drop the low bits instead).
    """

    name: str
    a_global: str
    b_global: str
    smem: str
    mma_types: str
    mma_k: int
    transpose_immediates: bool
    a_round: str | None = None

    @property
    def elem_bytes(self) -> int:
        return {"bfloat16": 2, "float16": 2, "float32": 4}[self.smem]

    @property
    def chunk(self) -> int:
        """Elements per 16-byte chunk (one core-matrix row): 8 bf16, 4 tf32."""
        return CHUNK_BYTES // self.elem_bytes

    @property
    def tile_k(self) -> int:
        """K elements per staged tile: 64 bf16, 32 tf32."""
        return TILE_K_BYTES // self.elem_bytes

    @property
    def a_converted(self) -> bool:
        """A is narrowed or rounded on its way to shared memory (register path, not cp.async)."""
        return self.a_global != self.smem or self.a_round is not None

    def instruction(self, bn: int) -> str:
        """The ``T.ptx`` key of the ss-form ``wgmma``, e.g. ``...m64n128k16.f32.bf16.bf16``."""
        return f"wgmma.mma_async.sync.aligned.m64n{bn}k{self.mma_k}.{self.mma_types}"


PRECISIONS = {
    "bf16": Precision("bf16", "bfloat16", "bfloat16", "bfloat16", "f32.bf16.bf16", 16, True),
    "tf32": Precision("tf32", "float32", "float32", "float32", "f32.tf32.tf32", 8, False),
    "f32a": Precision("f32a", "float32", "bfloat16", "bfloat16", "f32.bf16.bf16", 16, True),
    "tf32r": Precision("tf32r", "float32", "float32", "float32", "f32.tf32.tf32", 8, False, "tf32_rna"),
}
"""``bf16``: both operands bf16 (the first spike); ``tf32``: both float32, read by the tensor
core as tf32 (hetpart's TF32 builds); ``f32a``: float32 A narrowed to bf16 (round to nearest
even) on the way to shared memory, bf16 B (hetpart's bf16 builds: float32 activations, bf16
weights); ``tf32r``: ``tf32`` with A rounded to tf32 on the register path (B is expected to hold
tf32 values already: a weight, rounded once when it is packed), hetpart's TF32 numerics."""
BF16 = PRECISIONS["bf16"]


def precision(name: str) -> Precision:
    """The :data:`PRECISIONS` entry; ValueError for another name."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {name!r}") from None


# --- shared memory ---------------------------------------------------------------------------
def smem_offset(row, k, rows: int, chunk: int = BF16.chunk):
    """Element offset of tile element (row, k) in the no-swizzle K-major layout of a
    ``rows x (8 * chunk)`` tile, ``chunk`` elements per 16 bytes.

    PTX ISA 9.7.17.5.1 (Shared Memory Matrix Layout), no swizzle ("interleave"), K-major:
    the tile is a grid of core matrices of 8 rows x 16 bytes, each 128 contiguous bytes
    (row r of a core matrix at byte 16 * r).  Here the core matrices of one K group
    (``chunk`` columns) are consecutive along M/N (``rows / 8`` of them, 128 bytes apart),
    and the K groups follow each other ``rows / 8 * 128`` bytes apart.  So, in the
    descriptor's terms (ISA 9.7.17.5.1.2, Matrix Descriptor): the *leading* dimension byte
    offset (LBO: between core matrices adjacent in K) is ``rows * 16`` bytes and the
    *stride* dimension byte offset (SBO: between core matrices adjacent in M/N) is 128
    bytes.  CUTLASS writes the same canonical form (``make_gmma_desc<Major::K>``,
    INTERLEAVE) as ``((8, m), (T, 2k)) : ((1T, SBO), (1, LBO))`` in 16-byte units; for tf32
    (4 elements per 16 bytes) the same bytes hold 8 x 4 elements, and the ISA allows only
    this K-major form for both operands.
    """
    return ((k // chunk) * (rows // CORE_ROWS) + row // CORE_ROWS) * (CORE_ROWS * chunk) \
        + (row % CORE_ROWS) * chunk + k % chunk


def descriptor_fields(rows: int, swapped: bool = False) -> tuple[int, int]:
    """(LBO, SBO) in the descriptor's 16-byte units for a ``rows``-row tile laid out by
    :func:`smem_offset` (see there; the same for every precision).  ``swapped``: the two
    exchanged -- a debugging variant for the probe, should a GPU show the ISA's reading
    differs from ours."""
    lbo, sbo = rows * 16 // 16, CORE_ROWS * 16 // 16
    return (sbo, lbo) if swapped else (lbo, sbo)


def k_step_bytes(rows: int) -> int:
    """Bytes from one wgmma K step of a tile to the next: two K core-matrix groups
    (:data:`STEP_K_BYTES` / 16 of them, ``rows * 16`` bytes each)."""
    return (STEP_K_BYTES // CHUNK_BYTES) * rows * 16


# --- the copy map ------------------------------------------------------------------------------
CHUNKS_PER_ROW = TILE_K_BYTES // CHUNK_BYTES
"""16-byte chunks per tile row: 8."""


def chunk_row(c, tx):
    """Tile row of 16-byte chunk ``c * 128 + tx``: 8 consecutive chunks fill one core matrix,
    so 8 consecutive threads write 128 contiguous bytes and read 16 bytes of 8 rows each."""
    idx = c * WARPGROUP + tx
    return idx // (CORE_ROWS * CHUNKS_PER_ROW) * CORE_ROWS + idx % CORE_ROWS


def chunk_k(c, tx, chunk: int = BF16.chunk):
    """First K element (within the tile) of chunk ``c * 128 + tx``."""
    return (c * WARPGROUP + tx) // CORE_ROWS % CHUNKS_PER_ROW * chunk


# --- the accumulators ------------------------------------------------------------------------
def d_fragment(thread, i):
    """(row, col) in the 64 x N tile of accumulator register ``i`` of warpgroup thread
    ``thread`` (ints or TIR expressions).

    PTX ISA 9.7.17.5.1.1 (Register Fragments, the figure "WGMMA .m64nNk16 register
    fragment layout for accumulator matrix D"; the k8 tf32 and k16 layouts of D are the
    same figure): warp w = thread / 32 owns rows 16w..16w+15; within the warp the layout
    is mma.m16n8's C fragment repeated every 8 columns: lane l holds, for each 8-column
    block j = i / 4, d[4j], d[4j+1] at (l / 4, 8j + 2 (l % 4) + {0, 1}) and d[4j+2],
    d[4j+3] at (l / 4 + 8, same columns).  (CUTLASS: ``CLayout_64xN = ((4,8,4),(2,2,N/8))
    : ((128,1,16),(64,8,512))``.)
    """
    warp, lane = thread // 32, thread % 32
    row = 16 * warp + lane // 4 + 8 * ((i // 2) % 2)
    col = 8 * (i // 4) + 2 * (lane % 4) + i % 2
    return row, col


__all__ = ["BF16", "CHUNKS_PER_ROW", "CHUNK_BYTES", "CORE_ROWS", "PRECISIONS", "Precision", "STEP_K_BYTES",
           "TILE_K_BYTES", "TILE_M", "TILE_N_CHOICES", "WARPGROUP", "chunk_k", "chunk_row", "d_fragment",
           "descriptor_fields", "k_step_bytes", "precision", "smem_offset"]
