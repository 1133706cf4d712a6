"""What the schedule rules need to know about a target and a fused PrimFunc.

Two kinds of facts live here, shared by every rule:

* the *machine*: SIMD width and register count of an LLVM target (:class:`CpuShape`);
* the *program*: the blocks of a PrimFunc with their spatial ("S") and reduction
  ("R") iterators, and the multiply-accumulate block at the heart of a matmul or a
  convolution (:class:`MacBlock`).

Nothing here changes a schedule except the small helpers at the end
(:func:`try_inline_spatial`, :func:`parallel_vectorize`), which every CPU rule uses the
same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr
from tvm.ir import TensorLoad
from tvm.target import Target, codegen


# --- the machine ------------------------------------------------------------------
@dataclass(frozen=True)
class CpuShape:
    """SIMD facts of an LLVM target.

    ``vector_bits`` is the widest SIMD register (512 with AVX-512, 256 with AVX2, else
    128); ``registers`` how many of them the ISA has (32 with AVX-512, else 16);
    ``cores`` the target's ``num-cores`` (1 when absent).
    """

    vector_bits: int
    registers: int
    cores: int

    def lanes(self, dtype: str) -> int:
        """Elements of ``dtype`` in one SIMD register (at least 4)."""
        bits = tvm.runtime.DataType(dtype).bits
        return max(self.vector_bits // max(bits, 8), 4)


@lru_cache(maxsize=64)
def _cpu_shape(target_json: str) -> CpuShape:
    target = Target(target_json)
    # llvm_get_vector_width reports 512 even for AVX2-only CPUs (znver3) in TVM 0.27,
    # so ask for the ISA features instead.
    triple = str(target.attrs.get("mtriple", "") or "")
    cores = int(target.attrs.get("num-cores", 1) or 1)
    if triple and not triple.startswith(("x86_64", "i686", "i386")):
        # Not x86: LLVM would crash asked about x86 features of an unknown triple.
        # 128-bit SIMD (NEON) with 32 registers on aarch64, 16 elsewhere.
        return CpuShape(128, 32 if triple.startswith("aarch64") else 16, cores)
    with target:
        if codegen.target_has_features("avx512f"):
            bits, regs = 512, 32
        elif codegen.target_has_features("avx2") or codegen.target_has_features("avx"):
            bits, regs = 256, 16
        else:
            bits, regs = 128, 16
    return CpuShape(bits, regs, cores)


def cpu_shape(target: Target) -> CpuShape:
    """The :class:`CpuShape` of an LLVM ``target``."""
    return _cpu_shape(str(target))


# x86 ISA extensions whose instructions a kernel may contain: code built for a target
# with one the host lacks dies of SIGILL when run here.
_X86_ISA = ("sse4.2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl",
            "avx512vnni", "avxvnni", "avx512bf16", "avx512fp16", "amx-tile", "amx-int8", "amx-bf16")


def runs_on_host(target: Target) -> bool:
    """Whether this machine can run code built for the LLVM ``target``.

    in: any target. out: False for a non-LLVM target, another architecture, or an x86
    target with an ISA extension (:data:`_X86_ISA`) the host CPU lacks (``skylake-avx512``
    on an AVX2-only host). invariant: True for :func:`hetpart.targets.cpu_tvm_target`.
    """
    return _runs_on_host(str(target))


@lru_cache(maxsize=64)
def _runs_on_host(target_json: str) -> bool:
    from ..targets import cpu_tvm_target, host_cpu_name, host_triple

    target = Target(target_json)
    if target.kind.name != "llvm":
        return False
    arch = (str(target.attrs.get("mtriple", "") or "") or host_triple()).split("-")[0]
    if arch != host_triple().split("-")[0]:
        return False
    if not arch.startswith(("x86_64", "i686", "i386")):
        # LLVM is asked about x86 features only on x86; elsewhere trust the CPU name alone.
        return str(target.attrs.get("mcpu", "") or "generic") in ("generic", host_cpu_name())

    def features(t: Target) -> set[str]:
        with t:
            return {f for f in _X86_ISA if codegen.target_has_features(f)}

    return features(target) <= features(cpu_tvm_target(1))


def is_cpu(target: Target) -> bool:
    return target.kind.name == "llvm"


def is_gpu(target: Target) -> bool:
    return "gpu" in [str(k) for k in target.keys]


def arch_of(target: Target) -> int:
    """The compute capability in ``target``'s ``arch`` (``sm_90a`` -> 90; 0 when absent)."""
    digits = "".join(ch for ch in str(target.attrs.get("arch", "") or "") if ch.isdigit())
    return int(digits) if digits else 0


# --- the program ------------------------------------------------------------------
def block_infos(sch: s_tir.Schedule) -> list[SBlockInfo] | None:
    """dlight's normal form of ``sch``'s function: one entry per block, loops 1:1 with
    block iterators, or None where the function is not in that form (e.g. a block whose
    iterator is bound to a fused loop, or an opaque block)."""
    return normalize_prim_func(sch)


def buffer_bytes(buffer) -> int:
    """Bytes of a ``tirx.Buffer`` (a symbolic dim counts as 1; a sub-byte type as 1 byte an element)."""
    n = max(1, tvm.runtime.DataType(str(buffer.dtype)).bits // 8)
    for d in buffer.shape:
        n *= int(d) if isinstance(d, tirx.IntImm) else 1
    return n


def const_extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def loop_of(sch: s_tir.Schedule, block):
    """``by(v)``: the loop of ``block`` bound to its iterator ``v``.  In: a block whose loops
    are one per iterator, in iterator order (a normalised nest, before any split or fuse).
    The loops are read once, here: a later split or fuse leaves the other loops' handles
    valid, not the split one's."""
    loops = list(zip([iv.var for iv in sch.get(block).iter_vars], sch.get_loops(block)))

    def by(v):
        return next(lp for var, lp in loops if var.same_as(v))

    return by


def _strip_cast(e):
    while isinstance(e, tirx.Cast):
        e = e.value
    return e


@dataclass
class MacBlock:
    """A block ``C[s...] += A[...] * B[...]``: the heart of matmul and convolution.

    ``out`` is C; ``operands`` the two loaded buffers with their index expressions,
    in read order.  ``spatial``/``reduce`` are the block's iterator vars (in block
    order), ``extents`` their (static) extents by var.
    """

    info: SBlockInfo
    out: tvm.ir.Var  # the output buffer (buffers are typed Vars in TVM 0.27)
    out_indices: list
    operands: list  # [(buffer, [index exprs]), (buffer, [index exprs])]
    spatial: list
    reduce: list
    extents: dict

    @property
    def block(self):
        return self.info.block_rv

    def uses(self, operand: int, var) -> list[int]:
        """Dims of ``operands[operand]`` whose index mentions ``var``."""
        _, idx = self.operands[operand]
        return [d for d, e in enumerate(idx) if any(v.same_as(var) for v in collect_vars_used_in_prim_expr(e))]

    def is_plain(self, operand: int) -> bool:
        """True when ``operands[operand]`` is indexed by bare iterators and constants
        only: no convolution window, no gathered index."""
        return all(isinstance(e, (tirx.Var, tirx.IntImm)) for e in self.operands[operand][1])

    def plain_dim(self, operand: int, var) -> int | None:
        """The dim of ``operands[operand]`` indexed by exactly ``var`` (and no other
        dim mentions ``var``), else None."""
        dims = self.uses(operand, var)
        if len(dims) != 1:
            return None
        e = self.operands[operand][1][dims[0]]
        return dims[0] if isinstance(e, tirx.Var) and e.same_as(var) else None


RULE_ATTR = "hetpart.rule"
"""Function attribute naming the rule (class name) that scheduled a PrimFunc."""

SCHEDULED_ATTR = "tirx.is_scheduled"
"""TVM's own mark of a scheduled PrimFunc: dlight and the default pipelines skip it."""

HAND_WRITTEN_ATTR = "hetpart.tirx_pipeline"
"""PrimFunc attribute of a hand-written kernel (no root block; :mod:`.wgmma_substitute`): TVM's
``tirx`` pipeline compiles it, and block-level passes (SplitLayoutRewritePreproc) must not see it."""


def is_hand_written(func) -> bool:
    """``func`` is a PrimFunc marked :data:`HAND_WRITTEN_ATTR`."""
    return isinstance(func, tirx.PrimFunc) and func.attrs is not None and bool(func.attrs.get(HAND_WRITTEN_ATTR, False))

LAYOUT_FREE_ATTR = "layout_free_buffers"
"""PrimFunc attribute set by Relax's ``AttachAttrLayoutFreeBuffers``: the positions of
the parameters bound to model constants (weights), whose layout a schedule may change."""


def is_layout_free(func: tirx.PrimFunc, buffer) -> bool:
    """True when ``buffer`` is a parameter of ``func`` that Relax marked layout-free
    (a model weight: see :mod:`hetpart.kernels.weight_prepack`)."""
    positions = func.attrs.get(LAYOUT_FREE_ATTR) if func.attrs is not None else None
    if not positions:
        return False
    return any(func.params[int(i)].same_as(buffer) for i in positions)


def copy_module(mod: tvm.IRModule) -> tvm.IRModule:
    """A new IRModule holding ``mod``'s functions: what the passes here return, so the
    caller's module (an op graph's, a partition's) is never changed under it."""
    return mod.shallow_copy() if hasattr(mod, "shallow_copy") else tvm.IRModule(dict(mod.functions_items()))


def contains(stmt, node_type, predicate) -> bool:
    """True when some node of type ``node_type`` in ``stmt`` satisfies ``predicate``."""
    found = []
    tvm_ffi.structural_walk(stmt, (node_type, lambda node: found.append(node) if predicate(node) else None),
                            order="post")
    return bool(found)


def tests_bounds(stmt) -> bool:
    """True when block ``stmt`` holds an ``if_then_else``: an inlined padding testing its
    input's bounds per element."""
    return contains(stmt.body, tvm.ir.Call, lambda e: str(getattr(e.op, "name", "")).endswith("if_then_else"))


def schedule_mac(func: tirx.PrimFunc) -> tuple[s_tir.Schedule, MacBlock] | None:
    """A fresh schedule of ``func`` and its multiply-accumulate block (:func:`find_mac`),
    or None when ``func`` is not in dlight's normal form or has no such block: the
    first step of every contraction rule."""
    sch = s_tir.Schedule(func)
    mac = mac_of(sch)
    return (sch, mac) if mac is not None else None


def mac_of(sch: s_tir.Schedule) -> MacBlock | None:
    """The multiply-accumulate block of ``sch`` as it stands (:func:`find_mac`), or None
    when it is not in dlight's normal form or has no such block: what a rule re-reads
    after changing a layout or padding."""
    infos = block_infos(sch)
    return find_mac(sch, infos) if infos is not None else None


def find_mac(sch: s_tir.Schedule, infos: list[SBlockInfo]) -> MacBlock | None:
    """The single multiply-accumulate block of a function, or None.

    Accepts ``C = C + A*B`` (either order, with casts) over static extents, where C is
    indexed by exactly the block's spatial iterators.  A function with two reduction
    blocks (e.g. matmul followed by softmax) is not a contraction kernel: None.
    """
    reductions = [bi for bi in infos if not bi.is_injective()]
    if len(reductions) != 1 or reductions[0].dom_kind().strip("SR"):
        return None
    return _mac_from(sch, reductions[0])


def mac_at(sch: s_tir.Schedule, block_rv) -> MacBlock | None:
    """The multiply-accumulate block ``block_rv`` of ``sch`` read as :func:`find_mac` reads
    one, without dlight's normal form of the whole function (which a producer's reordered
    loops break); None where it is not ``C = C + A*B`` over static extents."""
    return _mac_from(sch, SBlockInfo(sch.get(block_rv).name_hint, [], block_rv, True))


def _mac_from(sch: s_tir.Schedule, info: SBlockInfo) -> MacBlock | None:
    """:func:`find_mac`'s reading of the one reduction block ``info``."""
    stmt = sch.get(info.block_rv)
    body = stmt.body
    if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tirx.Add):
        return None
    a, b = body.value.a, body.value.b
    if isinstance(_strip_cast(a), TensorLoad) and _strip_cast(a).source.same_as(body.buffer):
        prod = _strip_cast(b)
    elif isinstance(_strip_cast(b), TensorLoad) and _strip_cast(b).source.same_as(body.buffer):
        prod = _strip_cast(a)
    else:
        return None
    if not isinstance(prod, tirx.Mul):
        return None
    x, y = _strip_cast(prod.a), _strip_cast(prod.b)
    if not (isinstance(x, TensorLoad) and isinstance(y, TensorLoad)):
        return None
    iters = list(stmt.iter_vars)
    extents = {}
    for it in iters:
        if not isinstance(it.dom.extent, tirx.IntImm):
            return None
        extents[it.var] = int(it.dom.extent)
    spatial = [it.var for it in iters if it.iter_type == tirx.IterVar.DataPar]
    reduce = [it.var for it in iters if it.iter_type == tirx.IterVar.CommReduce]
    # C is indexed by the spatial iterators, each once and in order; dlight's
    # normalisation leaves constant 0 where it removed a unit iterator (batch 1).
    out_idx = list(body.indices)
    named = [e for e in out_idx if not isinstance(e, tirx.IntImm)]
    if len(named) != len(spatial) or not all(
        isinstance(e, tirx.Var) and e.same_as(v) for e, v in zip(named, spatial)
    ):
        return None
    return MacBlock(
        info, body.buffer, out_idx, [(x.source, list(x.indices)), (y.source, list(y.indices))],
        spatial, reduce, extents,
    )


# --- shared schedule helpers ------------------------------------------------------
@dataclass(frozen=True)
class Contraction:
    """A PrimFunc's one reduction block read as a contraction: ``spatial``, the static extents
    of its data-parallel iterators in order (the batch first); ``terms``, the product of its
    reduction extents."""

    block: object  # the block's schedule handle
    spatial: tuple[int, ...]
    terms: int


def _static_extent(iv) -> int | None:
    return int(iv.dom.extent) if isinstance(iv.dom.extent, tirx.IntImm) else None


def lone_contraction(sch: s_tir.Schedule) -> Contraction | None:
    """The function's single reduction block when it is a contraction: static extents, only
    data-parallel and reduction iterators, one write, and at least two distinct buffers read
    besides the output (a norm's or a pool's reduction reads one).  None otherwise, or when
    the function has no reduction or several."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    block = sch.get(reductions[0])
    ivs = block.iter_vars
    if any(_static_extent(iv) is None for iv in ivs) or len(block.writes) != 1:
        return None
    if any(iv.iter_type not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce) for iv in ivs):
        return None
    out = block.writes[0].source
    if len({r.source for r in block.reads if not r.source.same_as(out)}) < 2:
        return None
    spatial = tuple(_static_extent(iv) for iv in ivs if iv.iter_type == tirx.IterVar.DataPar)
    terms = math.prod(_static_extent(iv) for iv in ivs if iv.iter_type == tirx.IterVar.CommReduce)
    return Contraction(reductions[0], spatial, terms)


def consumer_chain(sch: s_tir.Schedule, block, *, static_extents: bool = False) -> list | None:
    """The blocks after ``block``, each the only consumer of the one before, ending at the
    function's output block (the write-back copies and the epilogue); None when the chain
    forks or a block in it is not element-wise (every iter var data-parallel, and of a
    constant extent where ``static_extents``)."""
    chain, cur = [], block
    while True:
        consumers = sch.get_consumers(cur)
        if not consumers:
            return chain
        if len(consumers) != 1:
            return None
        cur = consumers[0]
        for iv in sch.get(cur).iter_vars:
            if iv.iter_type != tirx.IterVar.DataPar:
                return None
            if static_extents and not isinstance(iv.dom.extent, tirx.IntImm):
                return None
        chain.append(cur)


def try_inline_spatial(sch: s_tir.Schedule, keep=(), *, keep_broadcast_arithmetic: bool = False) -> None:
    """Inline every spatial block that has exactly one consumer, except those named in
    ``keep`` and the function's outputs.

    One consumer only: inlining a block read twice (softmax's ``exp``) would compute it
    twice.  Nor a block with a ``Let`` or a call in it (``fast_exp``'s code, a
    ``T.sigmoid``...) that its consumer broadcasts (:func:`_broadcast`): squeeze-excite's
    gate ``sigmoid(fc2)`` has one value per channel, and inlined into the gating
    multiply it was computed once per pixel (``[1,144,56,56]``: 451 Ki exps instead of
    144).  With ``keep_broadcast_arithmetic`` (the injective rule) nor any block that
    computes (:func:`_computes`: more than a copy of a load) and is broadcast so: a
    decode step's rotary embedding of the new key (``[1, kv, 1, 64]``) written into its
    cache slot by ``Where(hit, rope(k), past)`` over ``[1, kv, 2048, 64]`` was computed
    for every slot, its rotate-half ``if_then_else`` making the rule partition the
    cache write serially along the head dim (issue 19).  Its producers are inlined
    into it first (blocks are visited in order), so the kept block holds the whole
    computation once.  Failures (the primitive refuses, e.g. for a reduction) just
    keep the block.
    """
    root = sch.get_sblock("root") if _has_root(sch) else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for blk in blocks:
        name = sch.get(blk).name_hint
        if name in keep:
            continue
        stmt = sch.get(blk)
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in stmt.iter_vars):
            continue
        consumers = sch.get_consumers(blk)
        if len(consumers) != 1:
            continue
        if (_costly(stmt) or keep_broadcast_arithmetic and _computes(stmt)) and _broadcast(sch, blk, consumers[0]):
            continue
        try:
            sch.compute_inline(blk)
        except Exception:  # noqa: BLE001 - the primitive explains refusals by raising
            pass


BROADCAST_RATIO = 16
"""Consumer points per producer element from which a costly producer is not inlined
(:func:`try_inline_spatial`)."""


def _points(stmt) -> int | None:
    n = 1
    for iv in stmt.iter_vars:
        if not isinstance(iv.dom.extent, tirx.IntImm):
            return None
        n *= int(iv.dom.extent)
    return n


_TRANSCENDENTAL = ("tirx.exp", "tirx.sigmoid", "tirx.tanh")


def _costly(stmt) -> bool:
    """Whether a block computes an ``exp``, ``sigmoid`` or ``tanh`` (as the call, or as
    :mod:`~hetpart.kernels.fast_exp`'s code, which binds its argument by a ``Let``):
    tens of instructions per element.  (Padding's ``if_then_else`` is not costly here:
    the rules decide where padding goes.)"""
    return (contains(stmt, tirx.Let, lambda e: True)
            or contains(stmt, tvm.ir.Call, lambda e: str(getattr(e.op, "name", "")) in _TRANSCENDENTAL))


def _computes(stmt) -> bool:
    """Whether block ``stmt`` stores more than a load (or a constant), casts aside:
    arithmetic, a select, an ``if_then_else`` -- work repeated per element if inlined
    into a consumer that broadcasts it.  A reshape, transpose or slice does not."""
    body = stmt.body
    if not isinstance(body, tirx.BufferStore):
        return False
    value = _strip_cast(body.value)
    return not isinstance(value, (TensorLoad, tirx.IntImm, tirx.FloatImm))


def _broadcast(sch, producer, consumer) -> bool:
    """Whether ``consumer`` runs over at least :data:`BROADCAST_RATIO` times as many
    points as ``producer`` writes (it reads each produced element that often)."""
    p, c = _points(sch.get(producer)), _points(sch.get(consumer))
    return p is not None and c is not None and c >= BROADCAST_RATIO * p


def fuse_epilogue(sch: s_tir.Schedule, block) -> None:
    """Inline the element-wise chain after ``block`` (a write-back) into it, one consumer
    at a time, while there is exactly one and it inlines; the rest stay root blocks."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001 - not element-wise: stays a root block
            return


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


PARALLEL_MIN_ELEMENTS = 1 << 18
"""Outputs below which an injective loop nest stays on one thread.  A parallel region
costs a thread-pool wake-up and join (several microseconds, far more when the cores
are shared); a memory-bound pass over 256 Ki floats (1 MiB) takes tens of
microseconds on one core, enough to amortise it.  Measured on the 2-core dev box: a
128x768 embedding gather ran 2-3x slower with two threads than with one."""


def parallel_vectorize(sch: s_tir.Schedule, block, lanes: int, *, min_parallel: int = PARALLEL_MIN_ELEMENTS) -> None:
    """The injective schedule: split ``lanes`` SIMD lanes off the innermost loop (or
    off all loops fused, for a plain element-wise block) and vectorise them when they
    divide its extent; run the remaining outer loops in parallel when the nest has at
    least ``min_parallel`` outputs.

    Only a *plain* block (:func:`lane_safe`: no ``if_then_else``, no index loaded from
    memory) may have a lane group span two rows: there every index stays affine in the
    fused loop.  Elsewhere a lane group crossing a row boundary turns each index into
    per-lane div/mod -- the padding of a 58-wide row, a gather whose row index is
    loaded from memory -- which LLVM emits as scalar gathers, slower than the plain
    loop (measured: a padded depthwise conv 17x slower).  An innermost extent ``lanes``
    does not divide is left to LLVM's own loop vectoriser; a narrower power-of-two
    width that divides it is used instead (:func:`fitting_lanes`).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    extents = [const_extent(sch, lp) for lp in loops]
    if any(e is None for e in extents):
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
        return
    total = math.prod(extents)
    k = _whole_vector_suffix(extents, lanes) if lane_safe(sch.get(block)) else None
    if k and BROADCAST_ROWS_PAST_SUFFIX and (b := _rows_pay(sch, block, loops, extents, lanes)) > k:
        # The whole-vector suffix starts outside a loop a broadcast operand is indexed by
        # (a batch of squeeze-excite gates on 14x14 / 7x7 planes: ``n, c, h, w`` holds whole
        # vectors only from ``c``): its lanes would gather the operand per lane -- the rows.
        _broadcast_rows(sch, loops, b, total >= min_parallel)
        return
    if k is not None and k > 0:
        # The innermost loops that hold whole vectors, fused: a value indexed by the
        # outer loops only (squeeze-excite's per-channel gate over [C, H, W]) stays one
        # broadcast scalar per vector instead of a per-lane gather of ``c = i // (H*W)``.
        inner = sch.fuse(*loops[k:]) if k < len(loops) - 1 else loops[k]
        outer, ext = list(loops[:k]), math.prod(extents[k:])
    elif k is not None and (b := _rows_pay(sch, block, loops, extents, lanes)):
        # No whole-vector suffix, but an operand indexed by the first ``b`` loops only
        # (the squeeze-excite gate of a 14x14 or 7x7 plane): those loops stay outside
        # and the rest is one contiguous loop (LLVM's vectoriser takes it when ``lanes``
        # does not divide it), so the operand is one scalar per row, not a per-lane
        # gather of ``c = i // 196`` -- and the rows can run in parallel.
        # (No explicit vector: no suffix holds whole ones, k == 0.)
        _broadcast_rows(sch, loops, b, total >= min_parallel)
        return
    elif k is not None:
        inner = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        outer, ext = [], total
    else:
        # Trailing unit loops joined to the innermost real loop (same extent).
        k = len(loops) - 1
        while k > 0 and extents[k] == 1:
            k -= 1
        inner = sch.fuse(*loops[k:]) if k < len(loops) - 1 else loops[k]
        outer, ext = list(loops[:k]), extents[k]
    width = fitting_lanes(ext, lanes)
    vectorised = width is not None
    if vectorised:
        chunks, vec = sch.split(inner, factors=[None, width])
        sch.vectorize(vec)
        outer.append(chunks)
    if total < min_parallel:
        return
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    elif not vectorised:
        sch.parallel(inner)


def _broadcast_rows(sch: s_tir.Schedule, loops, b: int, parallel: bool) -> None:
    """The rows of a broadcast block: ``loops[:b]`` (those a broadcast operand is indexed
    by) outside, fused and in parallel where ``parallel``; ``loops[b:]`` fused into one
    contiguous loop left to LLVM's vectoriser (the operand one scalar per row)."""
    if b < len(loops) - 1:
        sch.fuse(*loops[b:])
    if parallel:
        sch.parallel(sch.fuse(*loops[:b]) if b > 1 else loops[0])


BROADCAST_ROWS_PAST_SUFFIX = True
"""Whether :func:`parallel_vectorize` takes a broadcast block's rows (:func:`_rows_pay`)
where its whole-vector suffix of loops starts outside the loops a broadcast operand is
indexed by: squeeze-excite's gate ``g[n, c] * x[n, c, h, w]`` at batch >= 2 on 14x14 and
7x7 planes, whose ``h, w`` (196, 49) hold no whole vectors but ``c, h, w`` do, so the nest
was vectorised across channels with ``g`` gathered per lane (``c = i // 196``) and the
hard-sigmoid recomputed per lane.  At batch 1 (no ``n`` loop) the suffix is the whole nest
and the rows were already taken.  Measured: bench/results/cpu-b32-nets-2core.md."""


ROWS_MIN_VECTORS = 3
"""Whole vectors a row must hold for :func:`parallel_vectorize` to keep a broadcast
operand's loops outside when the operand is read once per element.  Measured (2
threads, the fc2 + gate kernel alone, fused across channels -> in rows): 14x14 planes
(196) gain, EfficientNet's 480x14x14 sigmoid gate 0.038 -> 0.009 ms; on 7x7 (49, 3
vectors and 1) its 672x7x7 and 1152x7x7 gates 0.014 -> 0.020 and 0.025 -> 0.034 in one
run, within the noise of a later run of unchanged code (0.025 vs 0.033): no gain
measured, so they keep the fused form.  Read more than once per element (MobileNetV3's
hard-sigmoid inlined: ``min(max(g/6 + 1/2, 0), 1)`` names ``g`` three times, each a
per-lane gather when fused) rows win on 7x7 too: 960x7x7 0.053 -> 0.019 ms.  On AVX-512 a 7x7
row is 3 vectors of 16 (and 1): measured there (1 thread, CPU time, the fc2 + sigmoid gate kernel
alone, fused -> rows, tools/kernel_switch_ab.py with ``ROWS_MIN_VECTORS=4`` as before) a batch of
3 48x7x7 gates 0.0077 -> 0.0054 ms, 8 672x7x7 gates 0.235 -> 0.130 ms: rows from 3 vectors."""


def _rows_pay(sch: s_tir.Schedule, block, loops, extents: list[int], lanes: int) -> int:
    """:func:`broadcast_prefix` of ``block`` where keeping those loops outside pays
    (:data:`ROWS_MIN_VECTORS`), else 0."""
    b = broadcast_prefix(sch, block, loops)
    if not b or math.prod(extents[b:]) >= ROWS_MIN_VECTORS * lanes:
        return b
    realize = sch.get(loops[-1]).body
    loop_vars = {sch.get(lp).loop_var for lp in loops[b:]}
    inner_ivs = {iv.var for iv, value in zip(realize.block.iter_vars, realize.iter_values)
                 if any(v in loop_vars for v in collect_vars_used_in_prim_expr(value))}
    loads = []

    def visit(e):
        if not any(v in inner_ivs for idx in e.indices for v in collect_vars_used_in_prim_expr(idx)):
            loads.append(e)

    tvm_ffi.structural_walk(realize.block.body, (TensorLoad, visit), order="post")
    return b if len(loads) > 1 else 0


def broadcast_prefix(sch: s_tir.Schedule, block, loops=None) -> int:
    """The most outer loops (fewer than all) that some operand of ``block`` is indexed by
    alone -- 1 for ``gate[c] * x[c, h, w]`` under loops ``c, h, w`` -- or 0 when every
    operand depends on the innermost loop.  Needs each block iterator bound to one loop
    (the nest as TIR's normal form writes it, before any fuse); else 0.  ``loops``:
    the block's loops (default: all of them)."""
    loops = sch.get_loops(block) if loops is None else loops
    if not loops:
        return 0
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, s_tir.SBlockRealize):
        return 0
    loop_of = {sch.get(lp).loop_var: i for i, lp in enumerate(loops)}
    depth = {}  # block iterator -> the loop it is bound to
    for iv, value in zip(realize.block.iter_vars, realize.iter_values):
        used = [loop_of[v] for v in collect_vars_used_in_prim_expr(value) if v in loop_of]
        if len(used) > 1:
            return 0
        depth[iv.var] = used[0] if used else -1
    best = 0
    for region in realize.block.reads:
        deepest = -1
        for rng in region.region:
            for v in collect_vars_used_in_prim_expr(rng.min):
                deepest = max(deepest, depth.get(v, -1))
        if 0 <= deepest < len(loops) - 1:
            best = max(best, deepest + 1)
    return best


def _whole_vector_suffix(extents: list[int], lanes: int) -> int:
    """The largest ``k`` such that ``extents[k:]`` hold a whole number of ``lanes``-wide
    vectors (0: only all loops together, or none -- then all are fused, as before)."""
    for k in range(len(extents) - 1, 0, -1):
        if math.prod(extents[k:]) % lanes == 0:
            return k
    return 0


def lane_safe(stmt) -> bool:
    """True when ``stmt`` (a block) has no ``if_then_else`` and no load whose index
    itself loads: then its indices are affine in its iterators and a vector may run
    across rows."""
    bad = []

    def visit_call(e):
        if str(getattr(e.op, "name", "")).endswith("if_then_else"):
            bad.append(e)

    def visit_load(e):
        for idx in e.indices:
            tvm_ffi.structural_walk(idx, (TensorLoad, bad.append), order="post")

    tvm_ffi.structural_walk(stmt.body, [(tvm.ir.Call, visit_call), (TensorLoad, visit_load)], order="post")
    return not bad


def fitting_lanes(extent: int, lanes: int, minimum: int = 4) -> int | None:
    """The widest vector, ``lanes`` or a power-of-two fraction of it down to ``minimum``,
    that divides ``extent``; None when none does.

    An AVX-512 register holds 16 floats, but a dim of 24, 72 or 1000 is a whole number
    of 8-wide (AVX2-width) vectors: half-width vectors beat the scalar loop that a
    full-width-only rule would leave (LLVM narrows them to ymm registers)."""
    w = lanes
    while w >= minimum:
        if extent % w == 0 and extent >= w:
            return w
        w //= 2
    return None


def largest_divisor(n: int, at_most: int) -> int:
    """The largest d <= at_most with n % d == 0 (1 when n == 0)."""
    for d in range(min(n, at_most), 0, -1):
        if n % d == 0:
            return d
    return 1
