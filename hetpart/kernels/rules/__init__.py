"""The registry of schedule rules: which rules :func:`hetpart.kernels.schedule` tries,
in which order, for each kind of target.

Each rule is a ``tvm.s_tir.dlight.ScheduleRule``: ``apply(func, target, tunable)``
returns a ``Schedule`` when it knows how to schedule ``func`` and None otherwise.
The first rule that returns a schedule wins, so specific rules come before general
ones, and each list ends with a rule that accepts anything.  To add a rule: write a
module here (one operator family each) and put an instance in the list below.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl

from ..options import DEFAULT, KernelOptions
from .cpu_conv2d import CpuConv2d
from .cpu_fallback import CpuFallback
from .cpu_gathered_matmul import CpuGatheredMatmul
from .cpu_int8_matmul import CpuInt8Matmul
from .cpu_injective import CpuInjective
from .cpu_matmul import CpuMatmul
from .cpu_reduction import CpuReduction
from .gpu_broadcast_epilogue import GpuBroadcastEpilogue
from .gpu_gemv import GEMV
from .gpu_layout_copy import GpuLayoutCopy
from .gpu_reduction import Reduction
from .gpu_conv2d import GpuConv2dImplicitGemm
from .gpu_gathered_gemv import GpuGatheredGemv
from .gpu_splitk import GpuSplitKGemm
from .gpu_small_contraction import GpuSmallContraction
from .gpu_splitk_fine import GpuFineSplitK
from .gpu_tensor_core import GpuTensorCoreConvSplitK, GpuTensorCoreGemm, GpuTensorCoreSplitK
from .gpu_window import GpuWindowReduction


def cpu_rules() -> list:
    """Rules for LLVM (CPU) targets, most specific first."""
    # CpuGatheredMatmul first: it takes only hetpart.importer.expert_matmul's kernels (else the conv rule would)
    return [CpuGatheredMatmul(), CpuConv2d(), CpuInt8Matmul(), CpuMatmul(), CpuReduction(), CpuInjective(),
            CpuFallback()]


def gpu_rules(options: KernelOptions = DEFAULT) -> list:
    """Rules for CUDA targets, hetpart's own built for ``options`` (TF32, split-K, SM count): hetpart's own GPU rules first
    (at batch 1, matmuls and convolutions no tensor-core tile grid fills split in K on the tensor cores,
    :class:`.gpu_tensor_core.GpuTensorCoreSplitK`, :class:`.gpu_tensor_core.GpuTensorCoreConvSplitK`; split-K for convolutions
    and matmuls whose output tiles cannot fill the GPU -- at batch 1 in chunks as short as
    48 of K where the ordinary split leaves half the SMs idle, :mod:`.gpu_splitk_fine` -- then conv2d as implicit
    GEMM; with :data:`.gpu_small_contraction.SMALL_CONTRACTIONS` on, batched contractions of few outputs
    as a block per output, :mod:`.gpu_small_contraction`), then TVM's dlight GPU rules (the set TVM's default
    CUDA pipeline uses, plus LowBatchGEMV), with hetpart's small-contraction-with-broadcast-epilogue rule
    (squeeze-excite's FC and gate at batch 1, :mod:`.gpu_broadcast_epilogue`) before
    dlight's GEMV and its short-reduction rule (depthwise convolutions and
    pooling, :mod:`.gpu_window`) before dlight's ``GeneralReduction``,
    with :data:`.gpu_layout_copy.LAYOUT_COPY` on (off by default) layout copies -- transposes,
    reshapes, slices of one input with an element-wise epilogue -- as vectorised copies or tiled
    transposes (:mod:`.gpu_layout_copy`),
    ending with dlight's catch-all Fallback.

    Not dlight's Transpose rule: on the H200 the kernel it made for the detector's
    score head (transpose, reshape, transpose, sigmoid) crashed the process."""
    return [
        GpuGatheredGemv(),  # importer.expert_matmul's kernels only: split-K over the chosen rows
        GpuTensorCoreSplitK(options),  # batch 1: matmuls no tile grid fills, K split on tensor cores
        GpuTensorCoreConvSplitK(options),  # batch 1: convolutions no tile grid fills, the same
        GpuFineSplitK(options),  # batch 1: K in short chunks where split-K leaves half the SMs idle
        GpuSplitKGemm(options),
        GpuTensorCoreGemm(options),
        GpuConv2dImplicitGemm(),
        GpuSmallContraction(),  # batch > 1, few outputs (SE's first FC): a block per output; off by default
        dl.gpu.Matmul(),
        GpuBroadcastEpilogue(),  # batch 1: squeeze-excite's FC + gate as reduce, then broadcast
        GEMV(),  # dlight's, declining schedules whose stages disagree on threads (gpu_gemv)
        dl.gpu.LowBatchGEMV(),
        Reduction(),  # dlight's, epilogue hand-off fixed (gpu_reduction)
        GpuWindowReduction(options),  # depthwise conv / pooling: a thread per output
        dl.gpu.GeneralReduction(),
        GpuLayoutCopy(),  # transposes / reshapes of one input: vector copy or tiled transpose; off by default
        dl.gpu.Fallback(),
    ]


def rule_name(rule) -> str:
    """A rule's name as recorded on the functions it schedules (its class name)."""
    return type(rule).__name__


__all__ = [
    "CpuConv2d", "CpuFallback", "CpuGatheredMatmul", "CpuInjective", "CpuInt8Matmul", "CpuMatmul", "CpuReduction",
    "GpuBroadcastEpilogue", "GpuConv2dImplicitGemm", "GpuFineSplitK", "GpuGatheredGemv", "GpuLayoutCopy",
    "GpuSmallContraction",
    "GpuSplitKGemm", "GpuTensorCoreConvSplitK",
    "GpuTensorCoreGemm", "GpuTensorCoreSplitK", "GpuWindowReduction", "cpu_rules", "gpu_rules", "rule_name",
]
