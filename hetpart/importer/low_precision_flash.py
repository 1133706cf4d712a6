"""Mark the fused attention kernels of bfloat16 CUDA partitions for the flash kernel.

In: an :class:`~hetpart.importer.OpGraph` and groups of kernel ids (each the kernels of one
CUDA partition that computes in bfloat16).  Out (:func:`mark_flash`): the same graph where the
PrimFunc of each ``attention`` kernel (:mod:`.fused_attention`) in a group carries
:data:`FLASH_ATTR`; :mod:`hetpart.kernels.flash_substitute` then calls the hand-written
flash kernel in its place on an sm_90 target (elsewhere the mark is ignored: the legalised
TIR kernel runs).  The graph itself (the same object) when no group has such a kernel --
always when :data:`.fused_attention.FUSE_ATTENTION` was off at import.

Invariant: kernel ids, order, edges and tensors unchanged; a marked kernel's ``signature``
is its marked PrimFunc's structural hash (a profile measured for the float32 kernel is not
taken for it).  The mark is on the PrimFunc, which identical layers share: a CPU
partition's call of the same PrimFunc sees it too and ignores it.
"""

from __future__ import annotations

import dataclasses

import tvm
import tvm_ffi

FLASH_ATTR = "hetpart.flash_attention"
"""PrimFunc attribute: a bf16 CUDA build may run this ``attention`` kernel as the flash kernel."""

OPS = ("attention",)
"""The ``ops`` of a fused attention kernel."""


def mark_flash(graph, groups):
    """``graph`` with the attention kernels of ``groups`` marked (module docstring)."""
    funcs = {graph.kernels[k].func for g in groups for k in g if graph.kernels[k].ops == OPS}
    if not funcs:
        return graph
    module = tvm.IRModule(dict(graph.module.functions_items()), attrs=graph.module.attrs,
                          global_infos=graph.module.global_infos)
    signatures = {}
    for name in funcs:
        gv = module.get_global_var(name)
        marked = module[gv].with_attr(FLASH_ATTR, 1)
        module[gv] = marked
        signatures[name] = f"{tvm_ffi.structural_hash(marked):016x}"
    kernels = {kid: dataclasses.replace(k, signature=signatures[k.func]) if k.func in signatures else k
               for kid, k in graph.kernels.items()}
    return dataclasses.replace(graph, kernels=kernels, module=module)
