"""Several models sharing one GPU under memory quotas (issue 20).

:mod:`.planning` (``partition_together``: each model's latency-vs-memory curve from
the ordinary partitioner, the cap split by :mod:`.quotas`, exactly, under the joint
objective) -> :mod:`.joint_plan` (``JointPlan``: a plan, a quota and a priority per
model; JSON ``hetpart-joint-plan``) -> :mod:`.compile` (``compile_together`` ->
``JointModel``).  The runtime opens a ``JointModel`` with ``MultiSession``: per model
its quota as one pooled device arena (:mod:`hetpart.runtime.pool`) and its own CUDA
stream at its priority.
"""

from .compile import CompiledShare, JointModel, compile_together
from .joint_plan import JointPlan, ModelShare
from .planning import partition_together

__all__ = ["CompiledShare", "JointModel", "JointPlan", "ModelShare", "compile_together", "partition_together"]
