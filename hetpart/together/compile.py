"""``compile_together(joint)``: every model of a joint plan compiled, with its quota and priority.

In: a :class:`~.joint_plan.JointPlan`.  Out: a :class:`JointModel`, one
:class:`~hetpart.compiler.CompiledModel` per model (each from its own plan, by the
ordinary :func:`hetpart.compile`; one library cache across them) beside the quota
and priority the runtime opens it with::

    joint = hetpart.partition_together([g1, g2], gpu_memory=8 << 30)
    models = hetpart.compile_together(joint, simulate=True)
    with hetpart.MultiSession(models) as multi:          # a pooled arena and a stream each
        outs = multi.run([feeds1, feeds2])
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CompileError
from .joint_plan import JointPlan


@dataclass
class CompiledShare:
    """One model ready to open: its compiled artifact, its GPU memory quota, its priority."""

    name: str
    compiled: object
    quota_bytes: int
    priority: int = 0


@dataclass
class JointModel:
    """The models of a joint plan, compiled; ``MultiSession(joint_model)`` opens them."""

    models: list[CompiledShare]
    gpu_memory_cap: int

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


def compile_together(joint: JointPlan, graphs: dict | None = None, **compile_options) -> JointModel:
    """Compile each model of ``joint`` (``graphs``: name -> OpGraph, for plans loaded
    from a file; else each plan's own graph).  ``compile_options`` go to
    :func:`hetpart.compile` (``simulate=``, ``cuda_arch=``, ``options=``, ...)."""
    from ..compiler import compile as compile_one
    from ..compiler.build import LibraryCache

    graphs = graphs or {}
    compile_options.setdefault("library_cache", LibraryCache())
    compile_options.setdefault("progress", False)
    shares = []
    for m in joint.models:
        graph = graphs.get(m.name, m.plan.graph)
        if graph is None:
            raise CompileError(f"model '{m.name}': its plan carries no op graph; pass graphs={{'{m.name}': graph}}")
        shares.append(CompiledShare(m.name, compile_one(m.plan, graph, **compile_options), m.quota_bytes, m.priority))
    return JointModel(shares, joint.gpu_memory_cap)
