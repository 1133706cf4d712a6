"""Which ``wgmma`` GEMM variant replaces a matched dense layer (issue 17): the rule read off the H100.

In:  a matched GEMM's M, N, K and precision (:attr:`.wgmma_match.WgmmaGemm.precision`: ``bf16``
     when the kernel's A input is already bfloat16, ``f32a`` when it is float32 and the weight
     bf16 -- :func:`family` -- ``tf32r`` for a TF32 build's float32 weight), and the SMs the
     launch should fill.
Out: :func:`choose`, a :class:`Variant` -- ``bn``, ``stages``, ``swizzle``, ``consumers``,
     ``split``, ``producer``, ``inflight``, ``store`` -- the options :func:`.wgmma_splitk.gemm_module`
     builds the replacement with.
Invariant: every variant returned builds for the shape (``N % bn == 0``, ``K`` a multiple of
the precision's K tile times ``split``: :func:`.wgmma_splitk.choose_split` picks only such
splits) and is one whose layout device step 150 checked against float64 numpy on the H100
(``tests/test_kernels_wgmma_swizzle.py``'s cuda tests, 36/36) -- except, with :data:`WARP_PRODUCER_ROWS`
set, the warp-specialised variant (``tests/test_kernels_wgmma_ws.py``'s cuda tests, not yet run on a GPU).
``tf32r`` keeps the first spike's variant (:data:`TF32_STAGES`, no swizzle, one consumer): step 150's
swizzled TF32 kernels were no faster than hetpart's ``mma.sync`` ones, so a TF32 build substitutes
exactly what it did before this module.  The ``TF32_*`` switches (all at the old variant by default:
:data:`TF32_SWIZZLE`, :data:`TF32_CONSUMERS`, :data:`TF32_BN`, :data:`TF32_STAGES`, :data:`TF32_PAIR_STORE_ROWS`)
give ``tf32r`` the ``bf16`` families' options -- their layouts are the cuda tests' of
``tests/test_kernels_wgmma_epilogue.py`` (tf32r rows; not yet run on a GPU).

The measurement (``bench/results/gpu-wgmma-swizzle-150-nvidia-h100.json``, spike write-up
section 10): ViT-B/16's four GEMMs at M = 197, us through the VM harness, against hetpart's
bf16 ``mma.sync`` build (qkv 18.36, proj 10.47, fc1 21.08, fc2 24.27):

* 128-byte swizzle always: the unswizzled two-consumer kernels were 1.9-2.5x slower than the
  swizzled ones (qkv 25.35 vs 13.12, fc2 72.94 vs 28.77 at bn 128); stages 4 (the deepest
  timed at bn <= 128); bn 256 was 1.3-1.7x slower than bn 128 everywhere.
* ``bf16`` (A bf16): two consumers at bn 64 is the fastest layout for qkv / proj / fc1 (8.16,
  7.66, 8.79 us: 85 / 30 / 106 TFLOP/s); for fc2 (K = 4 N) bn 128 with
  :func:`~.wgmma_splitk.choose_split`'s 8 slices is (14.34 us, against 20.60 at bn 64 unsplit).
  proj (K = N) is faster unsplit at bn 64 (7.66) than split 6 at bn 128 (11.21), so only
  K >= :data:`BF16_SPLIT_K_OVER_N` x N splits.
* ``f32a`` (A float32, narrowed to bf16 in the kernel): only bn 128 / 256 were timed (bn 64
  with two consumers was not: ``tools/gpu_wgmma_probe.py --only f32a64`` measures it next);
  bn 128 two consumers: qkv 16.98, fc1 16.85 unsplit; proj 16.82 unsplit but 11.81 at split
  6, fc2 47.34 unsplit but 16.41 at split 8 -- so K >= :data:`F32A_SPLIT_K_OVER_N` x N (proj
  too) splits.  proj stays slower than ``mma.sync`` (11.81 vs 10.47 us); the others 1.08-1.48x
  faster.  Whether the whole model gains is device step 152's A/B.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import wgmma_layout as lay
from . import wgmma_splitk as wsk

SWIZZLE = "128b"
"""The shared-memory layout of every ``bf16`` / ``f32a`` variant (module doc)."""
STAGES = 4
"""``cp.async`` pipeline depth of the ``bf16`` / ``f32a`` variants (the timed one at bn <= 128)."""
CONSUMERS = 2
"""Warpgroups per CTA of the ``bf16`` / ``f32a`` variants (128-row tiles)."""
BF16_SPLIT_K_OVER_N = 4
"""``bf16``: K / N from which the GEMM is split (fc2's 4: split 8 at bn 128, 14.34 us vs 20.60
unsplit at bn 64; proj's 1: unsplit at bn 64, 7.66 us vs 11.21 split)."""
F32A_SPLIT_K_OVER_N = 1
"""``f32a``: K / N from which the GEMM is split (proj's 1: 11.81 us split 6 vs 16.82 unsplit;
qkv / fc1, K / N 1/3 and 1/4, were timed unsplit only)."""
TF32_STAGES = 3
"""``tf32r`` / ``tf32``'s pipeline depth (the first spike's 3; a switch: :func:`_tf32_variant` takes the deepest of
it and what fits :data:`SHARED_MEMORY_BYTES`).  Why deeper: a TF32 K tile is 32 floats (128 bytes a row, as bf16's
64), so a stage holds half the K of a bf16 stage and the pipeline runs dry twice as fast per flop; one stage of the
default layout (64 + 128 rows x 128 B) is 24 KiB, of the swizzled two-consumer one (128 + 128 rows) 32 KiB -- so
the first fits 9 stages in an H100 CTA, the second 7 (with the 1 KiB swizzle pad).  Decided by
``tools/gpu_wgmma_probe.py --only tf32x`` (rows at 4-6 stages beside 3)."""
TF32_SWIZZLE = "none"
"""The shared-memory layout of a ``tf32r`` / ``tf32`` variant: ``none`` (the default: the first spike's
variant, the code of before) or ``128b`` -- the layout the ``bf16`` / ``f32a`` families took in step 150.  It
carries over to 4-byte elements unchanged because every map of :mod:`.wgmma_layout` is one in bytes: the
128-byte swizzle permutes the 16-byte chunks of each 128-byte row of a 1024-byte atom (CUTLASS's
``Swizzle<3, 4, 3>`` on byte addresses, ``Layout_K_SW128_Atom<T> = upcast<sizeof_bits<T>>`` of one 8 x 1024-bit
atom: 8 x 64 bf16 or 8 x 32 tf32), a staged K tile is one 128-byte row (32 floats), a ``k8`` tf32 wgmma reads
32 bytes of K per row (as a ``k16`` bf16 one), so the descriptor's K step is the same 2 units inside the atom
and its SBO the same 1024 bytes; tf32 is K-major only (no transpose immediates), which is the only layout the
kernel stages.  Checked: ``tests/test_kernels_wgmma_swizzle.py``'s emulation of the shared memory (tf32 and
tf32r layouts: every element a wgmma reads is the element the loader wrote), and on the H100 in step 150
(``tf32`` bn 128 / 256 two consumers 128b against float64 numpy, 2e-6; ``tf32r`` bn 256 in the cuda tests).
Why it was left off then: unsplit, the swizzled ``tf32`` kernels beat ``mma.sync`` on qkv / fc1 (18.69 / 18.56
us against 22.60 / 22.00) but lost on proj / fc2 (18.21 / 53.59 against 11.42 / 25.95) -- shapes where the rule
splits K (:func:`_tf32_variant`: ``choose_split`` with the variant's consumers), which step 150 did not time for
tf32.  Decided by the probe's ``--only tf32x`` rows and the model A/B (:data:`TF32_PAIR_STORE_ROWS`' doc)."""
TF32_CONSUMERS = 1
"""Consumer warpgroups per CTA of a ``tf32r`` / ``tf32`` variant: 1 (the default, the code of before) or 2
(128-row tiles, 256 threads: each warpgroup's m64 wgmmas against the one B tile, half the B traffic per row of
C).  Meant with :data:`TF32_SWIZZLE` ``128b`` (step 150: unswizzled two-consumer ``bf16`` kernels were 1.9-2.5x
slower than swizzled ones); ``choose_split`` counts the CTAs of 128-row tiles."""
TF32_BN = 128
"""The widest tile N a ``tf32r`` / ``tf32`` variant takes (of 64 / 128 / 256, the widest that divides N and is
at most this): 128 (the default: 128, or 64 where N % 128 -- the code of before); 64 the ``bf16`` family's
unsplit choice with two consumers (step 150), to A/B."""
TF32_PAIR_STORE_ROWS = 0
"""From this many rows (M) up, a ``tf32r`` / ``tf32`` GEMM stores its accumulators as column pairs
(``store="pairs"``, :data:`.wgmma_gemm.STORES`: one 8-byte ``float2`` per two float32 accumulators, each warp
instruction writing whole 32-byte sectors); 0 (the default): off, ``gemm_options`` has no ``store`` key (the code
of before).  What :data:`PAIR_STORE_ROWS` does for ``bf16`` / ``f32a`` (step 167: ViT b32's GEMMs 1.1-1.45x
faster; whole models at b1 1.10x / 1.06x): the D fragment of an ``m64nNk8`` tf32 wgmma is that of ``k16``, float32
either way, so the pairs are the same; the epilogues need nothing more -- bias, bias + GELU and the residual are
applied to each of the two values at its own column (``epilogue_value``), and split-K's partial sums ``P [split *
M, N]`` are float32 rows of N % 64 == 0 columns, so every pair is 8-byte aligned; the reduction reads them as
before.  Bit for bit the scalar store's values (the cuda tests check it; not yet run on a GPU).  A TF32 build substitutes a ``tf32r``
match only with ``KernelOptions.wgmma`` on (:data:`.wgmma_match.WGMMA_GEMM`, off): the whole-model A/B turns it on
on both sides -- ``tools/gpu_model_switch_ab.py vit_b_16-b1.onnx --precision tf32`` (the default precision,
``cuda=tf32``: TF32 on; ``--precision fp32`` turns TF32 off and no float32 weight matches at all) ``--before
TF32_...=old --after WGMMA_GEMM=1 --after TF32_...=new`` against the same with the old values, and
``--before WGMMA_GEMM=0`` for today's ``mma.sync`` build."""
SHARED_MEMORY_BYTES = 227 * 1024
"""Dynamic shared memory one H100 CTA may have (``cudaDevAttrMaxSharedMemoryPerBlockOptin``): the deepest
pipeline :data:`TF32_STAGES` may ask for is cut to fit it (:func:`fitting_stages`)."""
LARGE_M_ROWS = 4096
"""From this many rows (M) up, a GEMM of a :data:`LARGE_M_FAMILIES` family takes :data:`LARGE_M_BN`-wide
tiles unsplit; 0: off, every GEMM chosen as below.  The variants above were timed at
ViT's M = 197 (batch 1); device step 160 (H100, ``bench/results/gpu-wgmma-large-160-nvidia-h100.json``,
``tools/gpu_wgmma_probe.py --only large``) timed ViT's four GEMMs at batch 32 (M = 6304): ``f32a`` at
bn 256 (3 stages) took 117.8 / 55.6 / 151.0 / 146.1 us (qkv / proj / fc1 / fc2) against the rule's
bn 128: 162.2 / 73.5 / 206.9 / 229.6 (1.3-1.6x: the in-kernel narrowing of A is paid once per A tile,
and a wider tile reads each A tile half as often); ``bf16`` was fastest at the rule's own bn 64 (fc2:
128) and slower at 128 / 256 (86.1 / 96.2 / 99.3 us on qkv).  cuBLAS bf16 (PyTorch) did the same four
in 36.9 / 14.1 / 46.0 / 40.3 us: the bf16 kernel runs at 35-45 % of it.  On since device step 163
(session 57): distilbert b32 bf16 (M = 4096; 24 of 36 GEMMs ``f32a``) 4.96 -> 4.65 ms with the switch at
1024 (rounds 4.96-5.61 before, 4.65-4.77 after; ``bench/results/gpu-flash-attention-162-nvidia-h100.md``).
4096, not the A/B's 1024: the measured Ms were 4096 and 6304; between them nothing was timed, and an
unsplit grid at, e.g., Whisper b1's M = 1500, N = 384 would be 36 CTAs on 132 SMs where the split rule
fills them."""
LARGE_M_BN = 256
"""The tile N of :data:`LARGE_M_ROWS`' GEMMs (128 or 256; where N % it != 0, 128, else 64)."""
LARGE_M_STAGES = 3
"""Pipeline depth of a bn-256 tile (four stages of a 128 x 256 tile pass the shared-memory limit);
bn 128 keeps :data:`STAGES`."""
LARGE_M_FAMILIES = ("f32a",)
"""The families :data:`LARGE_M_ROWS` applies to (``bf16`` lost with wider tiles at M = 6304)."""
WARP_PRODUCER_ROWS = 0
"""From this many rows (M) up, a ``bf16``-family GEMM takes the warp-specialised variant
(``producer="warp"``, :mod:`.wgmma_ws`: a producer warpgroup filling the stages by TMA and mbarriers,
two consumer warpgroups) -- :func:`_warp_producer`; 0 (the default): off, every GEMM chosen as below
and built with the cp.async pipeline (``gemm_options`` then has no ``producer`` key: the code of
before).  Why: at ViT-B/16 batch 32 (M = 6304) the cp.async ``bf16`` kernel runs at 35-45 % of cuBLAS
(:data:`LARGE_M_ROWS`' measurement); CUTLASS's sm90 kernels hand the loads to a producer warpgroup (TMA)
so the consumers issue only wgmmas -- whether that closes the gap here is the A/B's question.  Only
``bf16``: the kernel copies A as it is (``f32a`` narrows A on the register path, ``tf32r`` rounds it:
:func:`.wgmma_ws.check_options` refuses both).  Device step 163 (session 57, H100): its cuda tests passed
(12/12 against float64 numpy); at M = 6304 it matched the cp.async kernel on qkv / proj / fc1 (85.3 / 36.4 /
110.2 us at 6 stages against 86.7 / 36.1 / 111.2) and was faster on fc2 only (74.6 us against 92.2; cuBLAS
40.9), so the loads were not the gap; ViT-B/16 b32 bf16 A/B at 1024 rows: 10.97 -> 10.99 ms (no change).
Stays off (``bench/results/gpu-flash-attention-162-nvidia-h100.md``)."""
WARP_PRODUCER_BN = 128
"""The tile N of a :data:`WARP_PRODUCER_ROWS` GEMM (where N % it != 0, 128, else 64): a ``128 x 128`` tile, 64
accumulators per consumer thread (of the 232 registers ``setmaxnreg`` gives it); 256 (the wgmma_ws
tests' other compiled layout, 128 accumulators) is a switch value to A/B, not the default."""
WARP_PRODUCER_STAGES = 4
"""Pipeline depth of a :data:`WARP_PRODUCER_ROWS` GEMM: 4 stages of a ``128 x 128`` tile's A and B
(32 KiB each, 128 KiB; bn 256: 192 KiB, still within an H100 CTA's 227 KiB)."""
INFLIGHT_ROWS = 0
"""From this many rows (M) up, a ``bf16`` / ``f32a`` GEMM built with the cp.async pipeline keeps one K
tile's wgmmas in flight (``inflight=1``: ``wgmma.wait_group 1`` instead of 0 at the end of each K tile, the
refill one stage later -- :mod:`.wgmma_schedule`); 0 (the default): off, ``gemm_options`` has no
``inflight`` key (the code of before).  Why: at M = 6304 the cp.async kernel drains the tensor cores every
K tile (issue 17's batch-32 spike, suspect (a)); CUTLASS keeps ``K_PIPE_MMAS = 1``.  Not yet run on a GPU:
``tests/test_kernels_wgmma_epilogue.py``'s cuda tests and ``tools/gpu_wgmma_probe.py --only large``'s
``inflight=1`` rows decide it.  Not for ``producer="warp"`` (it already waits for 1)."""
PAIR_STORE_ROWS = 192
"""From this many rows (M) up, a ``bf16`` / ``f32a`` GEMM stores its accumulators as column pairs
(``store="pairs"``: one 8-byte float2 / 4-byte bf16x2 store per two registers instead of two scalar ones,
each warp instruction writing whole 32-byte sectors -- :data:`.wgmma_gemm.STORES`); 0: off,
``gemm_options`` has no ``store`` key.  Issue 17's batch-32 spike, suspect (b).  Device step 167
(session 58, H100; ``bench/results/gpu-steps-165-169-nvidia-h100.md``): its cuda tests passed (24, against
numpy and the scalar store); ViT-B/16 b32's GEMMs (M = 6304, ``bf16``, bn 64, 4 stages) 86.0 / 35.7 /
110.2 / 91.5 us (qkv / proj / fc1 / fc2) -> 59.1 / 25.3 / 76.0 / 82.4 with the pair store alone
(``inflight=1`` alone was slower: 91.2 on qkv).  Whole models, bf16, least round median (step 168/169):
vit_b_16 b1 (M = 197) 1.185 -> 1.079 ms, whisper_encoder b1 (M = 1500) 1.102 -> 1.043; distilbert b1
(M = 128) 0.692 -> 0.728 with overlapping rounds (0.69-0.84 / 0.73-0.84) -- so the threshold sits
between 128 and 197 rows until a smaller M is shown to gain."""
FAMILIES = ("bf16", "f32a")
"""The variant families of a bf16 build, by A's dtype (:func:`family`)."""


@dataclass(frozen=True)
class Variant:
    """The layout options of one substituted GEMM (:func:`.wgmma_splitk.gemm_module`'s)."""

    precision: str
    bn: int
    stages: int
    swizzle: str
    consumers: int
    split: int
    producer: str = "threads"
    inflight: int = 0
    store: str = "scalar"

    def gemm_options(self) -> dict:
        """``gemm_module`` keyword arguments (``bn`` passed by position); ``producer``, ``inflight``,
        ``store`` only where they differ from the defaults (``threads``, 0, ``scalar``: the default's
        options -- and so its module -- are exactly those of before)."""
        options = {"stages": self.stages, "precision": self.precision, "split": self.split,
                   "swizzle": self.swizzle, "consumers": self.consumers}
        if self.producer != "threads":
            options["producer"] = self.producer
        if self.inflight:
            options["inflight"] = self.inflight
        if self.store != "scalar":
            options["store"] = self.store
        return options


def family(a_dtype: str) -> str:
    """The variant family of a GEMM with a bf16 weight: ``bf16`` when its A input is bfloat16
    already (staged by ``cp.async`` as is), ``f32a`` otherwise (float32 A, narrowed to bf16 on the
    register path).  hetpart's ``cuda=bf16`` builds store only weights in bf16, so their dense
    layers are ``f32a``."""
    return "bf16" if str(a_dtype) == "bfloat16" else "f32a"


def choose(m: int, n: int, k: int, precision: str, sms: int = wsk.H100_SMS) -> Variant:
    """The variant replacing an ``m x n x k`` GEMM of ``precision`` (module doc; N % 64 == 0).

    ``bf16``: 128B swizzle, 4 stages, 2 consumers; K >= 4 N: bn 128 (64 where N % 128) and
    :func:`~.wgmma_splitk.choose_split`'s split for it, else bn 64 unsplit.
    ``f32a``: 128B swizzle, 4 stages, 2 consumers, bn 128 (64 where N % 128); K >= N:
    ``choose_split``'s split, else unsplit.
    With :data:`WARP_PRODUCER_ROWS` set and M at least that, ``bf16``: :func:`_warp_producer`.
    With :data:`LARGE_M_ROWS` set and M at least that: :func:`_large_m` (:data:`LARGE_M_FAMILIES`).
    Then, for ``bf16`` / ``f32a``, :data:`INFLIGHT_ROWS` and :data:`PAIR_STORE_ROWS` (off by default).
    ``tf32r`` / ``tf32``: by default the first spike's variant -- bn 128 (64 where N % 128), 3 stages, no
    swizzle, one consumer, ``choose_split``'s split (what the substitution built before); the ``TF32_*``
    switches change it (:func:`_tf32_variant`).
    Raises ValueError for another precision or N % 64 != 0."""
    if n % 64:
        raise ValueError(f"N must be a multiple of 64, got {n}")
    wide = 128 if n % 128 == 0 else 64
    if precision in ("tf32r", "tf32"):
        return _tf32_variant(m, n, k, precision, sms)
    if precision not in FAMILIES:
        raise ValueError(f"precision must be one of {FAMILIES + ('tf32r', 'tf32')}, got {precision!r}")
    return _batch32_spike(m, _family_variant(m, n, k, precision, wide, sms))


def _family_variant(m: int, n: int, k: int, precision: str, wide: int, sms: int) -> Variant:
    """:func:`choose` for the ``bf16`` / ``f32a`` families before :func:`_batch32_spike`."""
    if WARP_PRODUCER_ROWS and m >= WARP_PRODUCER_ROWS and precision == "bf16":
        return _warp_producer(n)
    if LARGE_M_ROWS and m >= LARGE_M_ROWS and precision in LARGE_M_FAMILIES:
        return _large_m(m, n, k, precision)
    over = BF16_SPLIT_K_OVER_N if precision == "bf16" else F32A_SPLIT_K_OVER_N
    splits = k >= over * n
    bn = wide if (precision == "f32a" or splits) else 64
    split = wsk.choose_split(m, n, k, bn, precision, sms=sms, consumers=CONSUMERS) if splits else 1
    return Variant(precision, bn, STAGES, SWIZZLE, CONSUMERS, split)


def _tf32_variant(m: int, n: int, k: int, precision: str, sms: int) -> Variant:
    """:func:`choose` for ``tf32r`` / ``tf32``: the widest of 256 / 128 / 64 at most :data:`TF32_BN` that divides
    N, :data:`TF32_STAGES` (cut to what fits: :func:`fitting_stages`), :data:`TF32_SWIZZLE`,
    :data:`TF32_CONSUMERS`, ``choose_split``'s split for those CTAs, and from :data:`TF32_PAIR_STORE_ROWS` rows the
    pair store.  With every switch at its default, exactly the first spike's variant (``choose_split`` of one
    consumer is its default)."""
    bn = next(b for b in (256, 128, 64) if b <= TF32_BN and n % b == 0)
    stages = fitting_stages(precision, bn, TF32_STAGES, TF32_SWIZZLE, TF32_CONSUMERS)
    split = wsk.choose_split(m, n, k, bn, precision, sms=sms, consumers=TF32_CONSUMERS)
    variant = Variant(precision, bn, stages, TF32_SWIZZLE, TF32_CONSUMERS, split)
    if TF32_PAIR_STORE_ROWS and m >= TF32_PAIR_STORE_ROWS:
        variant = replace(variant, store="pairs")
    return variant


def smem_bytes(precision: str, bn: int, stages: int, swizzle: str, consumers: int) -> int:
    """Dynamic shared memory of the cp.async pipeline with these options (:class:`.wgmma_layout.PipelinePlan`:
    every stage's A and B tiles, and a swizzled layout's 1 KiB alignment pad)."""
    plan = lay.PipelinePlan(lay.precision(precision), bn, stages, swizzle, consumers)
    return plan.smem_elems * plan.precision.elem_bytes


def fitting_stages(precision: str, bn: int, stages: int, swizzle: str, consumers: int,
                   limit: int = SHARED_MEMORY_BYTES) -> int:
    """``stages``, or the deepest pipeline below it whose :func:`smem_bytes` fits ``limit`` (at least 2: the
    pipeline's least depth, so a ``stages`` of 1 comes back 2; ValueError if not even 2 fit)."""
    for depth in range(max(stages, 2), 1, -1):
        if smem_bytes(precision, bn, depth, swizzle, consumers) <= limit:
            return depth
    raise ValueError(f"no pipeline of {precision} bn {bn} {swizzle} x{consumers} fits {limit} bytes")


def _batch32_spike(m: int, variant: Variant) -> Variant:
    """``variant`` with :data:`INFLIGHT_ROWS`' ``inflight=1`` (the cp.async pipeline of >= 3 stages
    only) and :data:`PAIR_STORE_ROWS`' ``store="pairs"`` where M reaches them (both 0: unchanged)."""
    if INFLIGHT_ROWS and m >= INFLIGHT_ROWS and variant.producer == "threads" and variant.stages >= 3:
        variant = replace(variant, inflight=1)
    if PAIR_STORE_ROWS and m >= PAIR_STORE_ROWS:
        variant = replace(variant, store="pairs")
    return variant


def _large_m(m: int, n: int, k: int, precision: str) -> Variant:
    """:data:`LARGE_M_ROWS`' variant: the widest of :data:`LARGE_M_BN`, 128, 64 that divides N,
    unsplit (M this large fills the SMs many times over)."""
    bn = next(b for b in (LARGE_M_BN, 128, 64) if b <= LARGE_M_BN and n % b == 0)
    stages = LARGE_M_STAGES if bn == 256 else STAGES
    return Variant(precision, bn, stages, SWIZZLE, CONSUMERS, 1)


def _warp_producer(n: int) -> Variant:
    """:data:`WARP_PRODUCER_ROWS`' variant of a ``bf16`` GEMM: ``producer="warp"`` with the options
    :func:`.wgmma_ws.check_options` requires (128B swizzle, two consumers, stages >= 2) --
    the widest of :data:`WARP_PRODUCER_BN`, 128, 64 that divides N, :data:`WARP_PRODUCER_STAGES` -- and
    unsplit: the
    kernel's split-K path (a TMA map over the whole K, each slice's tiles from ``blockIdx.z``) has
    been neither compiled by a test nor run, and M this large fills the SMs without it (ViT-B/16 at
    M = 6304: 300 to 1200 CTAs of 128 x 128 on 132 SMs; a threshold near 1024 rows leaves an N = 768
    GEMM 48 CTAs, which is the A/B's to weigh)."""
    bn = next(b for b in (WARP_PRODUCER_BN, 128, 64) if b <= WARP_PRODUCER_BN and n % b == 0)
    return Variant("bf16", bn, WARP_PRODUCER_STAGES, SWIZZLE, CONSUMERS, 1, "warp")


__all__ = ["BF16_SPLIT_K_OVER_N", "CONSUMERS", "F32A_SPLIT_K_OVER_N", "FAMILIES", "INFLIGHT_ROWS", "LARGE_M_BN",
           "LARGE_M_FAMILIES", "LARGE_M_ROWS", "LARGE_M_STAGES", "PAIR_STORE_ROWS", "SHARED_MEMORY_BYTES", "STAGES",
           "SWIZZLE", "TF32_BN", "TF32_CONSUMERS", "TF32_PAIR_STORE_ROWS", "TF32_STAGES", "TF32_SWIZZLE", "Variant",
           "WARP_PRODUCER_BN", "WARP_PRODUCER_ROWS", "WARP_PRODUCER_STAGES", "choose", "family", "fitting_stages",
           "smem_bytes"]
