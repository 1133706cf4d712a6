"""How a kernel walks its inputs: a feature the predictor can see.

In: a kernel's PrimFunc (``graph.module[kernel.func]``).  Out: :data:`STRIDED` when
some buffer its output-writing blocks read is read with a non-unit stride along
the block's innermost spatial iterator (consecutive outputs read elements that are
not neighbours in memory: a transpose whose last output dim is not the input's last
dim), :data:`CONTIGUOUS` when every such read moves by 0 or 1 element per output,
and :data:`UNKNOWN` (``""``) when it cannot be told (no PrimFunc, no spatial
iterator, only data-dependent or dynamic indices).

How: the function's single-consumer spatial blocks are inlined into their consumers
first (:func:`hetpart.kernels.analysis.try_inline_spatial`, as the CPU and GPU rules
do), so a fused ``reshape -> transpose`` is judged by the composed index, not by
its steps (a reshape that a transpose undoes is contiguous).  Then each read's
stride along the block's innermost iterator is measured
(:func:`hetpart.kernels.access.read_strides`, which the CPU injective rule uses too).

Invariant: a deterministic function of the PrimFunc alone -- no target, no
hardware -- so it is the same for a measured kernel and for one never measured.

Why: FLOPs, bytes, op class and schedule rule cannot tell BERT's K^T transpose
(``[1,128,12,64] -> [1,12,64,128]``, 164 us on the H200 host's CPU) from the
head-split transpose of the same bytes (``-> [1,12,128,64]``, 14 us): the first
reads one float per cache line along its innermost loop, the second streams.
"""

from __future__ import annotations

from tvm import s_tir, tirx

from ..kernels.facts import is_one_of, read_strides
from .kernel_bench import kernel_primfunc, module_primfunc

CONTIGUOUS = "contiguous"
STRIDED = "strided"
UNKNOWN = ""


def access_of(func) -> str:
    """The access pattern of ``func`` (see the module docstring); never raises."""
    if not isinstance(func, tirx.PrimFunc):
        return UNKNOWN
    try:
        sch = s_tir.Schedule(func)
        _inline(sch)
        strides = [s for blk in _output_blocks(sch) for s in read_strides(blk)]
    except Exception:  # noqa: BLE001 - a function the schedule cannot take (opaque, extern): unknown
        return UNKNOWN
    if not strides:
        return UNKNOWN
    return STRIDED if any(abs(s) > 1 for s in strides) else CONTIGUOUS


def module_access(mod) -> str:
    """:func:`access_of` the (single) PrimFunc of a single-kernel module; ``""`` if it has none."""
    return access_of(module_primfunc(mod))


def kernel_access(graph, kernel) -> str:
    """:func:`access_of` the PrimFunc of ``kernel`` in ``graph.module`` (``""`` when the
    kernel calls no PrimFunc of the module, e.g. a packed library call)."""
    return access_of(kernel_primfunc(graph, kernel))


# --- the analysis ------------------------------------------------------------------
def _inline(sch: s_tir.Schedule) -> None:
    """Inline the intermediate spatial blocks, so reads are of the composed index."""
    from ..kernels.facts import try_inline_spatial

    try_inline_spatial(sch)


def _output_blocks(sch: s_tir.Schedule) -> list:
    """The block statements of ``sch``'s function that write one of its parameters."""
    params = list(sch.mod["main"].params)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    return [st for st in blocks if any(is_one_of(w.source, params) for w in st.writes)]
