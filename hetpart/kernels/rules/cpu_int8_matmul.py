"""CPU rule for int8 matmuls on AVX-512 VNNI: ``uint8 @ int8 -> int32`` with ``vpdpbusd``.

Matches a function whose one reduction block is ``C[.., i, j] += int32(A[.., i, k]) *
int32(B[k, j])`` (A uint8 with ``k`` innermost, B int8 of two dims, C int32) -- what
the importer makes of MatMulInteger, QLinearMatMul and a dynamically quantised
model's matmuls (:mod:`hetpart.importer.integer_ops`) -- on a target with
``avx512vnni``, where ``j`` is a whole number of 16-lane vectors and ``k`` of 4.

Schedule: B is packed into ``[j/16, k/4, 16, 4]`` panels (a weight once, at compile
time: :mod:`hetpart.kernels.weight_prepack`); each tile of ``rows x vecs`` outputs (:data:`ROWS`, :data:`VECS`)
accumulates in registers, one ``vpdpbusd`` per 4 steps of ``k`` and 16 outputs
(TVM's ``dot_16x4_vnni`` intrinsic, 64 multiply-adds an instruction where the generic
rule's int32 multiplies do 16); tiles run in parallel; the element-wise epilogue (the
zero-point correction, the rescale to float, a bias, a GELU) is fused into the tile's
write-back, all of it: blocks read by several others are inlined once those readers are
(:func:`_inline_epilogue`; BERT's erf GELU reads ``x / sqrt 2`` three times, and was left
as a float tensor of the product's size stored and read back), ``exp``/``sigmoid``/``tanh``
as :func:`hetpart.kernels.fast_exp.replace_exp`'s vector arithmetic and ``pow`` of a
whole exponent 2..4 as products (:func:`_integer_powers`) -- LLVM makes each of those a
scalar libm call per element of the vectorised write-back (GPT-2's ``gelu_new``, with
``Pow(x, 3)`` and ``Tanh``: ``[128, 768] x [768, 3072]`` 7.8 -> 0.75 ms, 2 threads).

AMX (:data:`AMX_INT8`, on a target with ``amx-int8`` in a process Linux lets use the
tile data): where the rows and columns are whole 32-blocks and ``k`` a multiple of 64,
each 32 x 32 block's whole ``k`` loop is one tensorized call (:func:`amx_intrin`: 2 x 2
``tdpbusd`` per 64 of ``k``, 16 x 16 x 64 multiply-adds each, the int32 block loaded and
stored once), B in the same packed layout (a 16-column panel's rows are AMX B rows), the
epilogue as above.  Rows no tile divides are padded (``pad_einsum``: :data:`AMX_PAD_ROWS`,
:data:`VNNI_PAD_ROWS`; the 1-row VNNI tile ran 11x slower).  Measured (Sapphire Rapids-class VM, 1 thread, CPU time, ``[128, K] @
[K, N]``): 768x3072 1.6 -> 0.53 ms, 3072x768 1.0 -> 0.32 ms, 768x768 0.30 -> 0.11 ms.

Invariant: the contraction is integer arithmetic, so exactly the unscheduled function's;
the epilogue's floats too, but for ``exp``/``sigmoid``/``tanh`` (within fast_exp's ulps)
and whole powers (two roundings for ``x**3``).
Declines (None) anything else; :class:`~.cpu_matmul.CpuMatmul` then takes it.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight import ScheduleRule
from tvm.script import tirx as T
from tvm.target import Target, codegen

from ..analysis import contains, is_cpu, is_layout_free, mac_of, parallel_vectorize, try_inline_spatial
from ..fast_exp import replace_exp
from ...targets import amx_tile_permission as _tile_permission
from ..register_tile import LAYOUT_REWRITE_PREPROC, PARALLEL_MIN_MACS, mac_count

LANES, DEPTH = 16, 4  # vpdpbusd: 16 int32 outputs, each over 4 u8*s8 products
ROWS, VECS = (8, 4), (3, 2)
"""Register tile: rows x vecs accumulators (zmm registers), the first of each that
divides the extent (else 1).  8 x 3: 24 accumulators, 3 weight vectors and a broadcast
row value in 28 of the 32 zmm registers, 24 ``vpdpbusd`` per 11 loads (4 x 2: 8 per 6).
Measured (2-core Zen 4, a shared machine, best of 3 rounds of 60 runs, ``[128, K] @ [K, N]``
with its DynamicQuantizeLinear): 768x3072 0.60 -> 0.51 ms, 3072x768 0.55 -> 0.47 ms,
768x768 0.26 -> 0.17 ms."""
INTRIN = "hetpart_dot_16x4_u8i8i32_vnni"
"""The tensor intrinsic: TVM's ``dot_16x4_vnni`` (``tvm.s_tir.tensor_intrin.x86``,
whose import parses every target's intrinsics: ~20 s) with the operand types LLVM
21+ gives ``vpdpbusd`` (``<64 x i8>``; TVM's ``<16 x i32>`` fails to verify there)."""


@lru_cache(maxsize=None)
def vnni_intrin() -> str:
    """:data:`INTRIN`, registered on first use (parsing its two TVMScript functions at import cost
    every process that imports the rules -- each CLI run, each build subprocess -- ~0.3 s)."""
    @T.prim_func(s_tir=True)
    def _dot_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def _dot_vnni(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_u8x4 = A.vload([0], "uint8x4")
            a_i32 = T.reinterpret(a_u8x4, dtype="int32")
            a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
            b_i8x64 = B.vload([0, 0], dtype="int8x64")
            c_i32x16 = C.vload([0], dtype="int32x16")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c_i32x16, a_u8x64, b_i8x64,
                dtype="int32x16")

    TensorIntrin.register(INTRIN, _dot_desc, _dot_vnni, override=True)
    return INTRIN


AMX_INT8 = True
"""Switch: on a target with AMX-INT8 (``amx-int8`` among its LLVM features) in a process
the kernel allowed the tile registers (:func:`amx_ready`), contractions of 32-row,
32-column blocks and ``k`` a multiple of 64 run on AMX tiles (:func:`_schedule_amx`)
instead of ``vpdpbusd``; off: VNNI for all."""
MT, NT, KT = 32, 32, 64
"""AMX block: 2 x 2 tiles of 16 x 16 int32 outputs (tmm0-3), 2 A tiles of 16 rows x 64
bytes (tmm4-5), 2 B tiles of 16 x (16 x 4) packed bytes (tmm6-7)."""

def _call(name, *args):
    return T.call_llvm_intrin("void", name, *args)

@lru_cache(maxsize=None)
def amx_intrin(k: int) -> str:
    name = f"hetpart_amx_u8i8i32_{MT}x{NT}x{k}"
    k4 = k // 4

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sc = T.int64()
        A = T.match_buffer(a, (MT, k), "uint8", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (2, k4, 16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (MT, NT), "int32", strides=[sc, 1], offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:MT, 0:NT], A[0:MT, 0:k], B[0:2, 0:k4, 0:16, 0:4])
            T.writes(C[0:MT, 0:NT])
            for i, j, kk in T.grid(MT, NT, k):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, kk])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(
                        B[vj // 16, vk // 4, vj % 16, vk % 4], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa = T.int64()
        sc = T.int64()
        A = T.match_buffer(a, (MT, k), "uint8", strides=[sa, 1], offset_factor=1)
        B = T.match_buffer(b, (2, k4, 16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (MT, NT), "int32", strides=[sc, 1], offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:MT, 0:NT], A[0:MT, 0:k], B[0:2, 0:k4, 0:16, 0:4])
            T.writes(C[0:MT, 0:NT])
            cfg = T.decl_buffer((64,), "uint8", scope="local")
            for n in range(64):
                cfg[n] = T.uint8(0)
            cfg[0] = T.uint8(1)
            for t in range(8):
                cfg[16 + 2 * t] = T.uint8(64)
                cfg[48 + t] = T.uint8(16)
            T.evaluate(_call("llvm.x86.ldtilecfg", T.address_of(cfg[0])))
            T.evaluate(_call("llvm.x86.tileloadd64", T.int8(0), T.address_of(C[0, 0]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tileloadd64", T.int8(1), T.address_of(C[0, 16]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tileloadd64", T.int8(2), T.address_of(C[16, 0]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tileloadd64", T.int8(3), T.address_of(C[16, 16]), T.Cast("int64", sc * 4)))
            for kb in range(k // 64):
                T.evaluate(_call("llvm.x86.tileloadd64", T.int8(4), T.address_of(A[0, kb * 64]), T.Cast("int64", sa)))
                T.evaluate(_call("llvm.x86.tileloadd64", T.int8(5), T.address_of(A[16, kb * 64]), T.Cast("int64", sa)))
                T.evaluate(_call("llvm.x86.tileloadd64", T.int8(6), T.address_of(B[0, kb * 16, 0, 0]), T.int64(64)))
                T.evaluate(_call("llvm.x86.tileloadd64", T.int8(7), T.address_of(B[1, kb * 16, 0, 0]), T.int64(64)))
                T.evaluate(_call("llvm.x86.tdpbusd", T.int8(0), T.int8(4), T.int8(6)))
                T.evaluate(_call("llvm.x86.tdpbusd", T.int8(1), T.int8(4), T.int8(7)))
                T.evaluate(_call("llvm.x86.tdpbusd", T.int8(2), T.int8(5), T.int8(6)))
                T.evaluate(_call("llvm.x86.tdpbusd", T.int8(3), T.int8(5), T.int8(7)))
            T.evaluate(_call("llvm.x86.tilestored64", T.int8(0), T.address_of(C[0, 0]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tilestored64", T.int8(1), T.address_of(C[0, 16]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tilestored64", T.int8(2), T.address_of(C[16, 0]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tilestored64", T.int8(3), T.address_of(C[16, 16]), T.Cast("int64", sc * 4)))
            T.evaluate(_call("llvm.x86.tilerelease"))

    TensorIntrin.register(name, desc, impl, override=True)
    return name


VNNI_PAD_ROWS = True
"""Switch: a VNNI contraction whose row count no register tile height divides (77: the
1-row tile, ~50 GOP/s) has its rows padded up to a multiple of ``ROWS[0]`` (``pad_einsum``,
as :data:`AMX_PAD_ROWS`) and takes the full tile.  Off: the 1-row tile."""

AMX_PAD_ROWS = True
"""Switch: the AMX schedule also takes row counts that are not a multiple of :data:`MT`
(at least one block): ``pad_einsum`` pads the rows (A's copy gets zero rows, the padded
block's extra outputs are not written back).  Off: such contractions stay VNNI."""

_POW = tvm.ir.Op.get("tirx.pow")
MAX_POWER = 4


def _integer_powers(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every float ``T.pow(x, n)`` of a constant whole ``n`` in
    ``2..MAX_POWER`` computed as products of ``x`` (bound once by a ``Let``): within
    ``n - 1`` roundings of libm's ``powf`` (``x**3``: two), the same signs, zeros and
    infinities; every other ``pow`` unchanged."""

    def visit(call):
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_POW) and str(call.ty).startswith("float")):
            return call
        base, exponent = call.args
        if not isinstance(exponent, tirx.FloatImm) or exponent.value not in range(2, MAX_POWER + 1):
            return call
        v = tirx.Var("b", base.ty)
        body = v
        for _ in range(int(exponent.value) - 1):
            body = body * v
        return tirx.Let(v, base, body)

    return func.with_body(tvm_ffi.structural_map(func.body, (tvm.ir.Call, visit)))


def _inline_epilogue(sch: s_tir.Schedule) -> None:
    """:func:`~..analysis.try_inline_spatial` until it inlines nothing more: a block
    read by several others (BERT's GELU reads its ``x / sqrt(2)`` three times) has one
    consumer once those are inlined, so the whole epilogue becomes one block."""
    def blocks() -> int:
        try:
            return len(sch.get_child_blocks(sch.get_sblock("root")))
        except Exception:  # noqa: BLE001 - no root block: nothing to inline
            return 0

    count = None
    while count != (count := blocks()):
        try_inline_spatial(sch)


def has_vnni(target: Target) -> bool:
    """Whether an LLVM ``target`` has AVX-512 VNNI."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple and not triple.startswith(("x86_64", "i686", "i386")):
        return False
    if codegen.llvm_version_major() < 21:  # vpdpbusd took <16 x i32> operands then
        return False
    with target:
        return bool(codegen.target_has_features("avx512vnni"))


def amx_ready(target: Target) -> bool:
    """Whether :data:`AMX_INT8` is on, ``target`` has AMX-INT8 and this process may use the
    tiles (:func:`hetpart.targets.amx_tile_permission`, requested here; a CPU partition's
    runner requests it again in the process that loads the library)."""
    if not AMX_INT8 or not has_vnni(target):
        return False
    with target:
        if not (codegen.target_has_features("amx-int8") and codegen.target_has_features("amx-tile")):
            return False
    return _tile_permission()


def _dtype(buf) -> str:
    return str(buf.dtype)


class CpuInt8Matmul(ScheduleRule):
    """VNNI-tensorized uint8 x int8 matmul (see the module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if not is_cpu(target) or not has_vnni(target) or not _reads_uint8(func) or not _reduces(func):
            return None
        schedules = ([_schedule_amx] if amx_ready(target) else []) + [_schedule]
        for schedule in schedules:
            # A deep copy per try: the rewritten function shares ``func``'s statements (its body
            # itself when there is no power or exp to rewrite), and scheduling it changed them in
            # place -- the caller's function came back renamed and its next rule (or this loop's
            # next schedule, after a failed AMX try) saw the change (tests/test_kernels_rules_no_mutation.py).
            own = copy.deepcopy(func)
            sch = s_tir.Schedule(replace_exp(_integer_powers(own)))
            _inline_epilogue(sch)
            mac = mac_of(sch)
            shape = _shape(mac)
            if shape is None:
                return None
            if schedule is _schedule_amx and not _amx_fits(mac, *shape):
                continue
            try:
                schedule(sch, own, mac, *shape)
            except Exception:  # noqa: BLE001 - a form tensorize does not match: the next schedule, else the generic rule
                continue
            return sch
        return None


def _reads_uint8(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` has any 8-bit integer buffer (a VNNI contraction's operands): the
    rule rewrites a function (powers, exps) only after this cheap check, so float kernels
    are declined untouched -- rewriting every kernel of a float model before declining
    went with an intermittent heap corruption in a float BERT build (1 in 8 runs of
    test_runtime_indices' bert case, "malloc(): unaligned fastbin chunk"; none in 32 with this check; the cause inside the rewrite is not found)."""
    return contains(func.body, tvm.ir.Expr, lambda e: str(getattr(e, "dtype", "")) in ("uint8", "int8"))


def _reduces(func: tirx.PrimFunc) -> bool:
    """Whether some block of ``func`` has an iterator that is not data-parallel: a function
    without one has no multiply-accumulate to find, before or after :func:`_inline_epilogue`
    (inlining spatial blocks makes no reduction), so the rule declines it without inlining.
    Inlining first cost seconds on an int8 elementwise kernel: opset 21's blocked
    QuantizeLinear inlined into one block whose expression repeats its ``isnan``/``max``
    arms, and dlight's normal form of it took 4 s (its decline is the same either way)."""
    return contains(func.body, s_tir.SBlock,
                    lambda b: any(iv.iter_type != tirx.IterVar.DataPar for iv in b.iter_vars))


def _shape(mac):
    """(i, j, k) iterator vars of a VNNI-shaped contraction, or None."""
    if mac is None or len(mac.reduce) != 1 or _dtype(mac.out) != "int32":
        return None
    (a, a_idx), (b, b_idx) = mac.operands
    if (_dtype(a), _dtype(b)) != ("uint8", "int8") or not (mac.is_plain(0) and mac.is_plain(1)):
        return None
    k = mac.reduce[0]
    if len(b_idx) != 2 or not b_idx[0].same_as(k) or not isinstance(b_idx[1], tirx.Var):
        return None
    j = b_idx[1]
    if not isinstance(a_idx[-1], tirx.Var) or not a_idx[-1].same_as(k):
        return None
    if not mac.out_indices or not isinstance(mac.out_indices[-1], tirx.Var) or not mac.out_indices[-1].same_as(j):
        return None
    if mac.extents[j] % LANES or mac.extents[k] % DEPTH:
        return None
    rows = [v for v in mac.spatial if not v.same_as(j) and mac.uses(0, v) and not mac.uses(1, v)]
    i = rows[-1] if rows else None
    return i, j, k


def _fit(extent: int, choices) -> int:
    """The first of ``choices`` that divides ``extent``, else 1."""
    return next((c for c in choices if extent % c == 0), 1)


def _pack_b(sch, func, main, b_buf):
    """B's read by block ``main`` through a packed copy ``[j/16, k/4, 16, 4]`` (a weight's
    packing marked for compile time: :data:`LAYOUT_REWRITE_PREPROC`); returns the copy's block.
    The VNNI and the AMX schedule's B alike (a 16-column panel is an AMX B tile's rows)."""
    read = next(n for n, r in enumerate(sch.get(main).reads) if r.source.same_as(b_buf))
    pk = sch.cache_read(main, read, "global")
    sch.transform_layout(pk, ("write", 0),
                         lambda kk, jj: [jj // LANES, kk // DEPTH, jj % LANES, kk % DEPTH])
    if is_layout_free(func, b_buf):
        sch.annotate(pk, LAYOUT_REWRITE_PREPROC, 1)
    return pk


def _write_back(sch, main, padded: bool):
    """The block writing ``main``'s int32 result out, the element-wise epilogue inlined into it
    (a block that is not element-wise stays a root block).  ``padded`` (rows padded by
    ``pad_einsum``): pad_einsum's copy-back of the real rows is the write-back (a cache of the
    padded block would write the padding rows out too once the copy-back is inlined into it);
    else a ``cache_write`` of ``main``."""
    wb = sch.get_consumers(main)[0] if padded else sch.cache_write(main, 0, "global")
    while len(sch.get_consumers(wb)) == 1:
        try:
            sch.reverse_compute_inline(sch.get_consumers(wb)[0])
        except Exception:  # noqa: BLE001 - not element-wise: stays a root block
            break
    return wb


def _loop_of(sch, main, order):
    """``v -> `` the loop of ``main`` over its iterator var ``v`` (``order``: the block's vars, in
    its loops' order), as the loops are now."""
    loops = sch.get_loops(main)

    def by(v):
        return loops[next(n for n, var in enumerate(order) if var.same_as(v))]

    return by


def _schedule(sch, func, mac, i, j, k) -> None:
    main = mac.block
    b_buf = mac.operands[1][0]
    order = [iv.var for iv in sch.get(main).iter_vars]
    rows = _fit(mac.extents[i], ROWS) if i is not None else 1
    padded = VNNI_PAD_ROWS and i is not None and rows == 1 and mac.extents[i] > ROWS[0]
    if padded:  # rows up to a multiple of the widest register tile (VNNI_PAD_ROWS)
        sch.pad_einsum(main, [ROWS[0] if v.same_as(i) else 1 for v in order])
    pk, wb = _pack_b(sch, func, main, b_buf), _write_back(sch, main, padded)
    by = _loop_of(sch, main, order)

    vecs = _fit(mac.extents[j] // LANES, VECS)
    j0, j1, j2 = sch.split(by(j), factors=[None, vecs, LANES])
    k0, k1 = sch.split(by(k), factors=[None, DEPTH])
    outer = [by(v) for v in mac.spatial if not v.same_as(j) and (i is None or not v.same_as(i))] + [j0]
    inner_row = []
    if i is not None:
        rows = ROWS[0] if padded else rows
        i0, i1 = sch.split(by(i), factors=[None, rows])
        outer.append(i0)
        inner_row = [i1]
    sch.reorder(*outer, k0, *inner_row, j1, j2, k1)
    tile = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(tile)
    sch.reverse_compute_at(wb, tile, preserve_unit_loops=True)
    for loop in inner_row + [j1]:
        sch.unroll(loop)
    init = sch.decompose_reduction(main, k0)
    done = {sch.get(b).name_hint for b in (main, wb, init, pk)}
    sch.tensorize(j2, vnni_intrin())
    init_loops = sch.get_loops(init)
    sch.vectorize(init_loops[-1])
    wb_loops = [lp for lp in sch.get_loops(wb)[1:]]
    if wb_loops:
        sch.vectorize(wb_loops[-1])
    _rest(sch, done)


PARALLEL_PAD = True
"""Switch: the row padding's copy of the 8-bit A (``pad_einsum``: :data:`VNNI_PAD_ROWS`,
:data:`AMX_PAD_ROWS`) runs in parallel from :data:`PAD_PARALLEL_MIN` bytes, not from the
injective rule's 256 Ki elements (set for float copies): resnet18 QDQ's stride-2 3x3 convs'
columns (196 x 1152 padded to 224 rows: 252 KiB; 49 x 2304 to 64: 144 KiB) were copied on
one thread before a 56- and a 32-tile parallel matmul at 16 threads.  Off: as before."""
PAD_PARALLEL_MIN = 1 << 16
"""Bytes of a padded 8-bit copy from which it runs in parallel (:data:`PARALLEL_PAD`; ~3 us
on one core, a few thread-pool wake-ups)."""


def _rest(sch, done) -> None:
    """The root blocks the schedule left (a padding copy, an epilogue not inlined): the injective
    schedule, an 8-bit copy in parallel from :data:`PAD_PARALLEL_MIN` (:data:`PARALLEL_PAD`)."""
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(blk)
        if stmt.name_hint in done or not all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars):
            continue
        narrow = PARALLEL_PAD and all(_dtype(w.source) in ("uint8", "int8") for w in stmt.writes)
        if narrow:
            parallel_vectorize(sch, blk, LANES, min_parallel=PAD_PARALLEL_MIN)
        else:
            parallel_vectorize(sch, blk, LANES)


def _amx_fits(mac, i, j, k) -> bool:
    """Whether the contraction splits into whole AMX blocks: :data:`MT` rows, :data:`NT`
    columns, ``k`` a multiple of :data:`KT`."""
    if i is None or mac.extents[i] < MT:
        return False
    rows_fit = mac.extents[i] % MT == 0 or AMX_PAD_ROWS
    return rows_fit and mac.extents[j] % NT == 0 and mac.extents[k] % KT == 0


def _amx_shape_fits(a_shape, n: int) -> bool:
    """:func:`_amx_fits` for a plain ``A[..., rows, k] @ W[k, n]`` (tests' shapes)."""
    rows = a_shape[-2] if len(a_shape) >= 2 else 0
    rows_fit = rows % MT == 0 or (AMX_PAD_ROWS and rows >= MT)
    return rows >= MT and rows_fit and n % NT == 0 and a_shape[-1] % KT == 0


def _schedule_amx(sch, func, mac, i, j, k) -> None:
    """The AMX schedule: B packed as for VNNI (``[j/16, k/4, 16, 4]``: a 16-column panel is
    already an AMX B tile's rows of 16 x 4 bytes); per ``MT x NT`` block (parallel) the
    whole ``k`` loop is one tensorized :func:`amx_intrin` call (tiles loaded, multiplied,
    stored once a block), the int32 block zeroed before and the fused epilogue after it."""
    main = mac.block
    b_buf = mac.operands[1][0]
    order = [iv.var for iv in sch.get(main).iter_vars]
    padded = mac.extents[i] % MT != 0
    if padded:  # rows up to a whole number of blocks (AMX_PAD_ROWS): A copied into zero rows, C cut back
        sch.pad_einsum(main, [MT if v.same_as(i) else 1 for v in order])
    pk, wb = _pack_b(sch, func, main, b_buf), _write_back(sch, main, padded)
    by = _loop_of(sch, main, order)

    j0, j1 = sch.split(by(j), factors=[None, NT])
    i0, i1 = sch.split(by(i), factors=[None, MT])
    outer = [by(v) for v in mac.spatial if not v.same_as(j) and not v.same_as(i)] + [j0, i0]
    sch.reorder(*outer, i1, j1, by(k))
    tile = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if mac_count(mac) >= PARALLEL_MIN_MACS:
        sch.parallel(tile)
    sch.reverse_compute_at(wb, tile, preserve_unit_loops=True)
    init = sch.decompose_reduction(main, i1)
    done = {sch.get(b).name_hint for b in (main, wb, init, pk)}
    sch.tensorize(i1, amx_intrin(int(mac.extents[k])))
    sch.vectorize(sch.get_loops(init)[-1])
    wb_loops = sch.get_loops(wb)[1:]
    if wb_loops:
        sch.vectorize(wb_loops[-1])
    _rest(sch, done)
