"""What a kernel's shape implies for its cost, derived from its :class:`KernelFeatures`.

A profile stores, for each kernel, its op class, FLOPs and bytes (read, written,
of which weights) -- not its tensor shapes.  The quantities below recover what the
predictor needs from those numbers alone, so they are the same for a measured
record and for a kernel of a model never profiled.  Elements are counted as 4-byte
floats: the profile does not store dtypes, and the float tensors that dominate
cost are float32.

* :func:`streamed_bytes`, :func:`weight_bytes`: memory traffic, split by how it
  is read; :func:`weight_bytes_read`: the weight bytes one call reads;
* :func:`outputs`, :func:`reduction_length`: how much work each output is;
* :func:`output_width`: the dim a contraction's weights and outputs share (the
  columns of a matmul, the output channels of a convolution);
* :func:`one_thread`: whether the CPU schedules keep the kernel on one thread;
* :func:`sort_work`: the comparisons of a sort (which the FLOP count omits).

The schedule rules' own thresholds and vector widths come from
:mod:`hetpart.kernels.facts`, never copied, so the predictor follows a rule's change.
"""

from __future__ import annotations

import math

from ..kernels.facts import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_MACS, STRIDED_PARALLEL_MIN_ELEMENTS, fitting_lanes
from ..importer.expert_matmul import OP as GATHERED_MATMUL
from .profile_db import KernelFeatures

ELEMENT_BYTES = 4
EPILOGUE_FLOPS = 128  # most FLOPs per output a fused element-wise epilogue adds (an erf polynomial: ~80)
CONTRACTIONS = ("matmul", "conv2d")
REDUCTIONS = CONTRACTIONS + ("reduce", "norm", "softmax", "pool")
SORT_OPS = ("topk", "sort", "argsort")


def outputs(f: KernelFeatures) -> int:
    """Elements the kernel writes (at least 1)."""
    return max(f.bytes_written // ELEMENT_BYTES, 1)


def weight_bytes(f: KernelFeatures) -> int:
    """Weight bytes of a contraction, 0 for any other kernel.

    A matmul or convolution reads each weight once per tile of outputs and may pack
    it first, so its weights cost differently from the activations it streams.  Any
    other kernel reads its constants (a bias, an embedding table) like activations.
    """
    return weight_bytes_read(f) if f.op_class in CONTRACTIONS else 0


def weight_bytes_read(f: KernelFeatures) -> int:
    """Bytes of its weights (constants) a kernel reads per call: all of ``param_bytes``,
    except a gather, which reads only the rows it outputs (at most what it writes: a
    MoE step gathers 2 of 8 experts' weights, a lookup a few rows of its table), and a
    matmul by gathered expert weights read in place (:func:`gathered_rows`)."""
    if f.op_class == "gather":
        return min(f.param_bytes, f.bytes_written)
    if is_gathered_matmul(f):
        return min(f.param_bytes, gathered_rows(f))
    return f.param_bytes


def is_gathered_matmul(f: KernelFeatures) -> bool:
    """Whether ``f`` is a matmul reading its weights' rows by index in place
    (:mod:`hetpart.importer.expert_matmul`, the op :data:`GATHERED_MATMUL`)."""
    return f.op_class == "matmul" and GATHERED_MATMUL in f.ops


def gathered_rows(f: KernelFeatures) -> int:
    """Weight bytes a gathered matmul's multiply-adds read: one weight element each, the
    chosen expert's ``[K, N]`` once per row of ``x`` (``outputs * K`` elements, K from
    :func:`reduction_length` rounded down: a fused epilogue's few FLOPs per output add
    under 1% at zoo moe's K of 1024 / 2816).  Exact for one row per chosen expert (a MoE
    step: ``x`` is ``[T, 1, 1, K]``); more rows count it again.  Invariant: 0 <= result;
    the caller bounds it by ``param_bytes``."""
    return ELEMENT_BYTES * outputs(f) * int(reduction_length(f))


def graph_weight_bytes(graph) -> int:
    """Weight bytes all of ``graph``'s kernels read in one run (:func:`weight_bytes_read`
    summed; a weight two kernels read counts twice): the most any placement holds on
    one device, the bound of the cold-weight floor's cache rule
    (``CostModel.weights_stay_cached``)."""
    return sum(weight_bytes_read(KernelFeatures.of(k)) for k in graph.kernels.values())


def streamed_bytes(f: KernelFeatures) -> int:
    """Bytes read or written once, in order: everything but a contraction's weights.

    A gather reads only the rows it outputs, not its whole table (an embedding
    lookup of 64 rows touches 16 KiB of a 50 MiB table): it moves about twice what
    it writes.
    """
    if f.op_class == "gather":
        return f.bytes_written + min(f.bytes_read, f.bytes_written)
    return f.bytes - (f.param_bytes if f.op_class in CONTRACTIONS else 0)


def reduction_length(f: KernelFeatures) -> float:
    """FLOPs per output / 2: the K of a matmul or convolution (``C_in * kh * kw``),
    the extent a reduction sums over; 0 for element-wise and data-movement kernels."""
    if f.op_class not in REDUCTIONS:
        return 0.0
    return f.flops / (2.0 * outputs(f))


def output_width(f: KernelFeatures) -> int | None:
    """N of a contraction: matmul columns (``[M, K] @ [K, N]``), conv output channels.

    With weights: they hold ``N * K`` values (``N * (K + 1)`` with a bias) and the
    outputs ``M * N``, so N is the one divisor of the weight count near ``K`` that
    also divides the output count.  Without weights (``A @ B`` of two activations):
    when A and B have equal size (Q @ K^T, a Gram matrix) each is ``B * N * K``
    elements, so ``N = outputs * 2K / inputs``; otherwise the output count itself
    (any vector-width factor N lacks, it lacks too).  None when unknown.
    """
    if f.op_class not in CONTRACTIONS or f.flops <= 0:
        return None
    out, params = outputs(f), f.param_bytes // ELEMENT_BYTES
    k = int(f.flops // (2 * out))  # fused epilogues add FLOPs per output: K or a little more
    if k <= 0:
        return None
    if params == 0:
        inputs = f.bytes_read // ELEMENT_BYTES
        n, rest = divmod(out * 2 * k, max(inputs, 1))
        return n if rest == 0 and n > 0 and out % n == 0 else out
    # FLOPs beyond 2K per output mean an epilogue (a bias adds one): try "with a bias"
    # first then, since N*(K+1) can also factor as (N+1)*K (K = N = 110).
    with_bias_first = f.flops > 2 * k * out
    # A fused epilogue adds FLOPs per output (a bias 1, a relu 1, an erf polynomial
    # ~30), so K is at most k and may be a little less.
    for kk in range(k, max(k - EPILOGUE_FLOPS // 2, 0), -1):
        for per_column in ((kk + 1, kk) if with_bias_first else (kk, kk + 1)):
            n, rest = divmod(params, max(per_column, 1))
            if rest == 0 and n > 0 and out % n == 0:
                return n
    return None


def rows(f: KernelFeatures) -> int | None:
    """M of a contraction: the outputs that share each weight (matmul rows, conv
    output pixels), ``outputs / N``; None when N is unknown."""
    n = output_width(f)
    return outputs(f) // n if n else None


def scalar_flops(f: KernelFeatures, simd_lanes: int) -> int:
    """FLOPs of a contraction that cannot be vectorised along its outputs, else 0.

    The CPU schedules tile N in SIMD registers of ``simd_lanes``, or of a power-of-two
    fraction of it down to 4 lanes that divides N (:func:`hetpart.kernels.analysis.fitting_lanes`);
    where none does, each output is a scalar dot product (N = 1000 with 16 lanes runs
    on 8-lane vectors; N = 10 or 1001 runs scalar, ~10x slower per FLOP).
    """
    if simd_lanes <= 1:
        return 0
    n = output_width(f)
    return f.flops if n is not None and fitting_lanes(n, simd_lanes) is None else 0


def one_thread(f: KernelFeatures, strided: bool = False) -> bool:
    """True when hetpart's CPU schedules run the kernel on one thread: waking the
    thread pool costs microseconds, so an element-wise or data-movement kernel with
    fewer than ``PARALLEL_MIN_ELEMENTS`` outputs (``STRIDED_PARALLEL_MIN_ELEMENTS``
    when it reads an input ``strided``, see :mod:`hetpart.kernels.rules.cpu_injective`),
    or a contraction with fewer than ``PARALLEL_MIN_MACS`` multiply-adds, stays
    serial (reductions always split their rows).  Its bytes then move at one core's
    bandwidth, not the socket's."""
    if f.op_class in CONTRACTIONS:
        return f.flops // 2 < PARALLEL_MIN_MACS
    limit = STRIDED_PARALLEL_MIN_ELEMENTS if strided else PARALLEL_MIN_ELEMENTS
    return f.op_class not in REDUCTIONS and outputs(f) < limit


def sort_work(f: KernelFeatures) -> float:
    """``n log2 n`` for a kernel that sorts (an op in :data:`SORT_OPS`) its ``n``
    input elements, else 0.

    A sort or top-k is an extern call that compares and moves elements serially:
    its FLOP count is 0 and its bytes are few (9600 floats, 38 KB, took 238 us on
    the H200 host's CPU), so neither the FLOP nor the byte term can price it, and a
    sort class fitted without this term overprices the element-wise kernels that
    share the class (``less``/``where`` index fix-ups) to compensate."""
    if not any(op in SORT_OPS for op in f.ops):
        return 0.0
    n = max(f.bytes_read // ELEMENT_BYTES, 2)
    return n * math.log2(n)
