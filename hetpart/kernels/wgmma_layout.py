"""The geometry of the hand-written Hopper ``wgmma`` GEMM (issue 17 spike): pure Python.

In:  a precision (:class:`Precision`: the element types of A and B in global and in shared
     memory, the ``wgmma`` instruction and its K), tile sizes, thread / chunk / register indices
     (ints or TIR expressions alike).
Out: shared-memory element offsets (:func:`smem_offset`; 128-byte swizzled:
     :func:`smem_offset_sw128`, :func:`layout_offset`), descriptor fields
     (:func:`descriptor_fields`, :func:`k_step_bytes`, :func:`layout_descriptor_fields`, ...) and the
     descriptor's bits (:func:`encode_descriptor`), the chunk-to-thread copy maps
     (:func:`chunk_row`, :func:`chunk_k`, :func:`copy_row`, :func:`copy_k`) and the accumulator
     fragment map (:func:`d_fragment`).
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
TILE_N_CHOICES = (64, 128, 256)
"""N of one wgmma (and of the CTA's tile): 64 and 128 the first spike's, 256 with the
swizzled / two-consumer variants (any layout builds it; bn / 2 accumulators per thread)."""


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


def chunk_row(c, tx, threads: int = WARPGROUP):
    """Tile row of 16-byte chunk ``c * threads + tx``: 8 consecutive chunks fill one core matrix,
    so 8 consecutive threads write 128 contiguous bytes and read 16 bytes of 8 rows each."""
    idx = c * threads + tx
    return idx // (CORE_ROWS * CHUNKS_PER_ROW) * CORE_ROWS + idx % CORE_ROWS


def chunk_k(c, tx, chunk: int = BF16.chunk, threads: int = WARPGROUP):
    """First K element (within the tile) of chunk ``c * threads + tx``."""
    return (c * threads + tx) // CORE_ROWS % CHUNKS_PER_ROW * chunk


# --- 128-byte swizzled layouts (the swizzle spike) -------------------------------------------------
SWIZZLES = ("none", "128b")
"""Shared-memory layouts of the operands: ``none`` the no-swizzle ("interleave") K-major form
above, ``128b`` the 128-byte swizzled K-major form (:func:`smem_offset_sw128`)."""
LAYOUT_TYPE = {"none": 0, "128b": 1}
"""The matrix descriptor's layout type, bits 62-63 (ISA 9.7.15.5.1.2.2, Matrix Descriptor):
0 no swizzle ("interleave"), 1 128-byte swizzle, 2 64-byte, 3 32-byte."""
TVM_SWIZZLE_ARG = {"none": 0, "128b": 3}
"""The ``swizzle`` argument of ``T.cuda.wgmma.encode_matrix_descriptor`` that writes each
:data:`LAYOUT_TYPE` (TVM 0.27 takes CUtensorMapSwizzle's numbering -- 0 none, 1 32B, 2 64B,
3 128B -- and maps it: ``case 3: layout_type_ = 1``)."""
SWIZZLE_ATOM_BYTES = 1024
"""The 128-byte swizzle's repeating pattern (its "swizzle atom"): 8 rows of 128 bytes, starting
at a 1024-byte boundary of the shared-memory address (then the descriptor's base offset is 0)."""
ROW_BYTES_SW128 = 128
"""Bytes per tile row in the 128-byte swizzled layout: one K tile (:data:`TILE_K_BYTES`)."""


def swizzle_128b(byte):
    """The 128-byte swizzle of a shared-memory byte address (int or TIR): the 16-byte chunk
    index within a 128-byte row (address bits 4-6) XOR the row within the 1024-byte atom
    (bits 7-9) -- CUTLASS's ``Swizzle<3, 4, 3>`` on byte addresses.  An involution that
    permutes the 16-byte chunks of each 128-byte row of each atom."""
    return byte ^ (((byte >> 7) & 7) << 4)


def smem_offset_sw128(row, k, chunk: int = BF16.chunk):
    """Element offset of tile element (row, k) in the 128-byte swizzled K-major layout of a
    ``rows x 128-byte`` tile (``8 * chunk`` elements of K), the tile starting at a 1024-byte
    boundary: row ``r`` at byte ``128 r`` (eight rows make one 1024-byte swizzle atom, atoms
    follow each other), its 16-byte chunk ``j`` (K elements ``j * chunk ..``) at chunk
    ``j XOR (r % 8)`` of the row -- so byte ``swizzle_128b(128 r + 16 j) + (k % chunk) * size``.

    PTX ISA 9.7.15.5.1.2 (Shared Memory Matrix Layout, K-major, 128B swizzling mode: an atom
    of 8 x 8 16-byte elements) and its Matrix Descriptor: the *stride* byte offset (between
    8-row groups) is 1024 bytes, the *leading* byte offset is not used by swizzled K-major
    layouts ("assumed to be 1"), and a wgmma K step of 32 bytes advances the start address by
    32 bytes inside the atom (the hardware swizzles the address it computes)."""
    return row * (CHUNKS_PER_ROW * chunk) + ((k // chunk) ^ (row % CORE_ROWS)) * chunk + k % chunk


def layout_offset(swizzle: str, row, k, rows: int, chunk: int = BF16.chunk):
    """:func:`smem_offset` (``none``) or :func:`smem_offset_sw128` (``128b``)."""
    if swizzle == "128b":
        return smem_offset_sw128(row, k, chunk)
    return smem_offset(row, k, rows, chunk)


def layout_descriptor_fields(swizzle: str, rows: int, swapped: bool = False) -> tuple[int, int]:
    """(LBO, SBO) in 16-byte units of a ``rows``-row tile in layout ``swizzle``: ``none``
    :func:`descriptor_fields`; ``128b`` (1, 64): LBO unused (1 by convention), SBO 1024 bytes."""
    if swizzle == "128b":
        return (1, SWIZZLE_ATOM_BYTES // 16)
    return descriptor_fields(rows, swapped)


def layout_k_step_units(swizzle: str, rows: int) -> int:
    """16-byte units from one wgmma K step to the next in the descriptor's start address:
    ``none`` :func:`k_step_bytes` / 16; ``128b`` 2 (32 bytes along the swizzled row)."""
    if swizzle == "128b":
        return STEP_K_BYTES // 16
    return k_step_bytes(rows) // 16


def layout_row_units(swizzle: str, row0: int) -> int:
    """16-byte units from a tile's start to its row ``row0`` (a multiple of 8), where a second
    warpgroup's operand starts: ``none`` ``row0 / 8`` core matrices of 128 bytes; ``128b``
    ``row0`` rows of 128 bytes."""
    if row0 % CORE_ROWS:
        raise ValueError(f"row0 must be a multiple of {CORE_ROWS}, got {row0}")
    return row0 * (ROW_BYTES_SW128 if swizzle == "128b" else CHUNK_BYTES) // 16


def copy_row(c, tx, threads: int, swizzle: str):
    """Tile row of chunk ``c`` of thread ``tx`` (of ``threads``): ``none`` :func:`chunk_row`
    over ``c * threads + tx``; ``128b`` row-major (8 consecutive threads copy one 128-byte row:
    coalesced reads, and their 16-byte writes land on 8 distinct chunks of one swizzled row)."""
    if swizzle == "128b":
        return (c * threads + tx) // CHUNKS_PER_ROW
    return chunk_row(c, tx, threads)


def copy_k(c, tx, threads: int, swizzle: str, chunk: int = BF16.chunk):
    """First K element of chunk ``c`` of thread ``tx`` (see :func:`copy_row`)."""
    if swizzle == "128b":
        return (c * threads + tx) % CHUNKS_PER_ROW * chunk
    return chunk_k(c, tx, chunk, threads)


def encode_descriptor(start_address: int, lbo: int, sbo: int, layout_type: int, base_offset: int = 0) -> int:
    """The 64-bit wgmma matrix descriptor (PTX ISA 9.7.15.5.1.2.2, Matrix Descriptor Format):
    bits 0-13 ``(start_address & 0x3FFFF) >> 4``, 16-29 the leading dimension byte offset and
    32-45 the stride dimension byte offset (both in 16-byte units, as given here), 49-51 the
    base offset, 62-63 the layout type (:data:`LAYOUT_TYPE`); the other bits 0.  Raises
    ValueError for a field that does not fit or a start address not 16-byte aligned."""
    if start_address % 16 or not 0 <= start_address < 1 << 18:
        raise ValueError(f"start address must be 16-byte aligned and < 256 KiB, got {start_address}")
    for name, value, bits in (("lbo", lbo, 14), ("sbo", sbo, 14), ("base_offset", base_offset, 3),
                              ("layout_type", layout_type, 2)):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{name} must fit {bits} bits, got {value}")
    return (start_address >> 4) | lbo << 16 | sbo << 32 | base_offset << 49 | layout_type << 62


def decode_descriptor(desc: int) -> dict:
    """The fields of a descriptor (:func:`encode_descriptor`'s inverse; start address in bytes)."""
    return {"start_address": (desc & 0x3FFF) << 4, "lbo": desc >> 16 & 0x3FFF, "sbo": desc >> 32 & 0x3FFF,
            "base_offset": desc >> 49 & 7, "layout_type": desc >> 62 & 3}


CONSUMER_CHOICES = (1, 2)
"""Consumer warpgroups per CTA: 1 (a 64-row tile) or 2 (a 128-row tile, each warpgroup its
own m64 wgmma over its half of A, both against the one B tile)."""


@dataclass(frozen=True)
class PipelinePlan:
    """Where the cp.async pipeline of :func:`wgmma_gemm.wgmma_gemm` puts its tiles and what its
    descriptors say -- the numbers the kernel is built from and the CPU tests emulate.

    One dynamic shared-memory buffer of ``smem_elems`` elements: ``pad`` elements (0, or, with a
    swizzle, the run-time distance to the next 1024-byte boundary: :data:`ALIGN_PAD_SOURCE`),
    then the A tiles of every stage (``a_size`` elements each, ``a_rows = 64 * consumers`` rows),
    then the B tiles (``b_size``, ``bn`` rows) from ``b_base``.  Element (row, k) of a tile is at
    :meth:`a_offset` / :meth:`b_offset`; thread ``tx``'s chunk ``c`` (``a_chunks`` / ``b_chunks``
    per thread) is row :meth:`copy_row`, K :meth:`copy_k`.  Descriptors: encoded once at the
    first A / B tile with (LBO, SBO) ``a_fields`` / ``b_fields`` and ``tvm_swizzle``; a wgmma of
    stage s, K step kk, warpgroup w adds ``s * a_stage + kk * a_step + w * a_warpgroup`` (B:
    ``s * b_stage + kk * b_step``) to the start-address field (16-byte units)."""

    precision: Precision
    bn: int
    stages: int
    swizzle: str = "none"
    consumers: int = 1
    swapped: bool = False

    def __post_init__(self):
        if self.swizzle not in SWIZZLES:
            raise ValueError(f"swizzle must be one of {SWIZZLES}, got {self.swizzle!r}")
        if self.consumers not in CONSUMER_CHOICES:
            raise ValueError(f"consumers must be one of {CONSUMER_CHOICES}, got {self.consumers}")
        if self.swapped and self.swizzle != "none":
            raise ValueError("swapped_descriptor is a variant of the no-swizzle layout only")

    @property
    def threads(self) -> int:
        return WARPGROUP * self.consumers

    @property
    def a_rows(self) -> int:
        return TILE_M * self.consumers

    @property
    def a_size(self) -> int:
        return self.a_rows * self.precision.tile_k

    @property
    def b_size(self) -> int:
        return self.bn * self.precision.tile_k

    @property
    def b_base(self) -> int:
        return self.stages * self.a_size

    @property
    def aligned(self) -> bool:
        """The tiles start at a run-time 1024-byte boundary (a swizzled layout's atoms must)."""
        return self.swizzle != "none"

    @property
    def smem_elems(self) -> int:
        pad = SWIZZLE_ATOM_BYTES // self.precision.elem_bytes if self.aligned else 0
        return self.stages * (self.a_size + self.b_size) + pad

    @property
    def a_chunks(self) -> int:
        return self.a_size // self.precision.chunk // self.threads

    @property
    def b_chunks(self) -> int:
        return self.b_size // self.precision.chunk // self.threads

    @property
    def a_fields(self) -> tuple[int, int]:
        return layout_descriptor_fields(self.swizzle, self.a_rows, self.swapped)

    @property
    def b_fields(self) -> tuple[int, int]:
        return layout_descriptor_fields(self.swizzle, self.bn, self.swapped)

    @property
    def a_step(self) -> int:
        return layout_k_step_units(self.swizzle, self.a_rows)

    @property
    def b_step(self) -> int:
        return layout_k_step_units(self.swizzle, self.bn)

    @property
    def a_stage(self) -> int:
        return self.a_size * self.precision.elem_bytes // 16

    @property
    def b_stage(self) -> int:
        return self.b_size * self.precision.elem_bytes // 16

    @property
    def a_warpgroup(self) -> int:
        return layout_row_units(self.swizzle, TILE_M)

    @property
    def tvm_swizzle(self) -> int:
        return TVM_SWIZZLE_ARG[self.swizzle]

    def a_offset(self, row, k):
        return layout_offset(self.swizzle, row, k, self.a_rows, self.precision.chunk)

    def b_offset(self, row, k):
        return layout_offset(self.swizzle, row, k, self.bn, self.precision.chunk)

    def copy_row(self, c, tx):
        return copy_row(c, tx, self.threads, self.swizzle)

    def copy_k(self, c, tx):
        return copy_k(c, tx, self.threads, self.swizzle, self.precision.chunk)


ALIGN_PAD = "hetpart_smem_align_pad"
ALIGN_PAD_SOURCE = """
__forceinline__ __device__ int hetpart_smem_align_pad(void* p) {
  return (int)((1024u - ((unsigned int)__cvta_generic_to_shared(p) & 1023u)) & 1023u);
}
"""
"""Bytes from a shared-memory pointer to the next 1024-byte boundary of its shared-window
address (0 if it is on one): where a swizzled pipeline's tiles start (:func:`align_pad`)."""


def align_pad(shared_address: int) -> int:
    """:data:`ALIGN_PAD_SOURCE` in Python (for the CPU emulation)."""
    return (SWIZZLE_ATOM_BYTES - shared_address % SWIZZLE_ATOM_BYTES) % SWIZZLE_ATOM_BYTES


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


def cta_fragment(thread, i, consumers: int = 1):
    """(row, col) in the CTA's ``64 * consumers x N`` tile of accumulator register ``i`` of CTA
    thread ``thread``: warpgroup ``w = thread / 128`` holds rows ``64 w ..`` by :func:`d_fragment`
    of its own thread index ``thread % 128`` (``consumers == 1``: :func:`d_fragment` itself)."""
    if consumers == 1:
        return d_fragment(thread, i)
    row, col = d_fragment(thread % WARPGROUP, i)
    return thread // WARPGROUP * TILE_M + row, col


__all__ = ["ALIGN_PAD", "ALIGN_PAD_SOURCE", "BF16", "CHUNKS_PER_ROW", "CHUNK_BYTES", "CONSUMER_CHOICES",
           "CORE_ROWS", "LAYOUT_TYPE", "PRECISIONS", "PipelinePlan", "Precision", "ROW_BYTES_SW128",
           "STEP_K_BYTES", "SWIZZLES", "SWIZZLE_ATOM_BYTES", "TILE_K_BYTES", "TILE_M", "TILE_N_CHOICES",
           "TVM_SWIZZLE_ARG", "WARPGROUP", "align_pad", "chunk_k", "chunk_row", "copy_k", "copy_row",
           "cta_fragment", "d_fragment", "decode_descriptor", "descriptor_fields", "encode_descriptor",
           "k_step_bytes", "layout_descriptor_fields", "layout_k_step_units", "layout_offset",
           "layout_row_units", "precision", "smem_offset", "smem_offset_sw128", "swizzle_128b"]
