"""Which schedule rule a kernel gets on a target: a feature the predictor can see.

In: a kernel's PrimFunc (``graph.module[kernel.func]``) and a TVM target (object or
JSON, e.g. ``profile.targets[device]``).  Out: the name
:func:`hetpart.kernels.schedule_primfunc` stamps in ``hetpart.rule`` (``CpuMatmul``,
``GpuSplitKGemm``, dlight's ``Matmul`` ...), ``"tuned"`` where a tuning database
supplied the schedule, or ``""`` when nothing schedules it (or there is no PrimFunc).

Why it is a legitimate feature: the rule is a deterministic function of the
PrimFunc and the target, so it is known for a kernel never measured as well as for
one that was; and scheduling only transforms TIR, so it needs no hardware (the
recorded CUDA target is scheduled on a machine without a GPU).
"""

from __future__ import annotations

from functools import lru_cache

import tvm
from tvm import tirx
from tvm.target import Target

from ..kernels.options import DEFAULT, KernelOptions
from .kernel_bench import kernel_primfunc, module_primfunc

NO_RULE = ""


def rule_of(func, target, tuning_db: str | None = None, options: KernelOptions = DEFAULT) -> str:
    """The rule name that schedules ``func`` for ``target`` with ``options`` (see the
    module docstring).

    ``tuning_db``: the database :func:`hetpart.kernels.build` would apply first
    (``"tuned"`` if it holds a record for ``func``).  Never raises for a function
    no rule takes: that is ``""``.
    """
    from ..kernels import RULE_ATTR, schedule_primfunc

    if not isinstance(func, tirx.PrimFunc):
        return NO_RULE
    target = target_of(target) if isinstance(target, str) else target
    if tuning_db is not None:
        from ..kernels.tuning import apply_database

        func = apply_database(tvm.IRModule({"main": func}), target, tuning_db)["main"]
    scheduled = schedule_primfunc(func, target, options)
    if scheduled.attrs is None or RULE_ATTR not in scheduled.attrs:
        return NO_RULE
    return str(scheduled.attrs[RULE_ATTR])


def module_rule(mod: tvm.IRModule, target, tuning_db: str | None = None, options: KernelOptions = DEFAULT) -> str:
    """:func:`rule_of` the (single) PrimFunc of a single-kernel module; ``""`` if it has none."""
    return rule_of(module_primfunc(mod), target, tuning_db, options)


def kernel_rule(graph, kernel, target, options: KernelOptions = DEFAULT) -> str:
    """:func:`rule_of` the PrimFunc of ``kernel`` in ``graph.module`` (``""`` when the
    kernel calls no PrimFunc of the module, e.g. a packed library call)."""
    return rule_of(kernel_primfunc(graph, kernel), target, options=options)


@lru_cache(maxsize=16)
def target_of(target_json: str) -> Target:
    """A TVM Target from its JSON (parsed once per distinct string)."""
    return Target(target_json)
