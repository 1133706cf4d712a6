"""The joint plan: several models placed together under one GPU memory cap.

A :class:`JointPlan` is plain data: per model (:class:`ModelShare`) its ordinary
:class:`~hetpart.partitioner.Plan`, the GPU memory quota it is given up front
(``quota_bytes``; the runtime allocates it as one pooled arena), its priority (higher
runs first: the server's gate and the CUDA stream priority) and its expected request
rate, if one was given.  Invariants (checked by :meth:`JointPlan.check`, on every
load): names are unique; every plan's predicted GPU memory is at most its model's
quota; the quotas sum to at most ``gpu_memory_cap``.

``predicted`` holds the joint numbers (:mod:`.quotas`): ``objective_value`` (J),
``cpu_utilisation`` and ``gpu_utilisation`` (None without rates); each share's
``predicted`` its ``latency_s`` alone, ``expected_latency_s`` under contention,
``cpu_busy_s``, ``gpu_busy_s``, ``weight`` and ``memory_bytes`` (the plan's).

On disk: JSON ``"schema": "hetpart-joint-plan", "version": 1``, each plan embedded as
its own ``hetpart-plan`` document; :meth:`JointPlan.load` reads it back equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..contracts.jsonfile import read_json, write_json
from ..errors import PlanError
from ..importer.summary import human_bytes
from ..partitioner.plan import Plan

SCHEMA = "hetpart-joint-plan"
VERSION = 1


@dataclass
class ModelShare:
    """One model of a joint plan: its plan, its GPU memory quota (bytes), its priority."""

    name: str
    plan: Plan
    quota_bytes: int
    priority: int = 0
    rate_per_s: float | None = None
    predicted: dict = field(default_factory=dict)

    @property
    def memory_bytes(self) -> int:
        """The GPU memory the plan predicts (parameters, stream ring, peak activations)."""
        return int(self.plan.predicted["gpu_memory_bytes"])


@dataclass
class JointPlan:
    """See the module docstring."""

    models: list[ModelShare]
    gpu_memory_cap: int
    objective: str
    predicted: dict = field(default_factory=dict)

    def __post_init__(self):
        self.check()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def quotas(self) -> dict[str, int]:
        return {m.name: m.quota_bytes for m in self.models}

    def share(self, name: str) -> ModelShare:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named '{name}' in this joint plan (models: {', '.join(self.names)})")

    def check(self) -> None:
        """PlanError unless the invariants of the module docstring hold."""
        if len(set(self.names)) != len(self.names):
            raise PlanError(f"a joint plan's models need distinct names, got {self.names}")
        for m in self.models:
            if m.memory_bytes > m.quota_bytes:
                raise PlanError(f"model '{m.name}': its plan needs {human_bytes(m.memory_bytes)} of GPU memory, "
                                f"over its quota of {human_bytes(m.quota_bytes)}; make the joint plan again")
        total = sum(m.quota_bytes for m in self.models)
        if total > self.gpu_memory_cap:
            raise PlanError(f"the quotas sum to {human_bytes(total)}, over the GPU memory cap of "
                            f"{human_bytes(self.gpu_memory_cap)}; make the joint plan again")

    # --- JSON --------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"schema": SCHEMA, "version": VERSION, **self._body()}

    def _body(self) -> dict:
        return {"gpu_memory_cap": self.gpu_memory_cap, "objective": self.objective, "predicted": self.predicted,
                "models": [{"name": m.name, "quota_bytes": m.quota_bytes, "priority": m.priority,
                            "rate_per_s": m.rate_per_s, "predicted": m.predicted, "plan": m.plan.to_json()}
                           for m in self.models]}

    @classmethod
    def from_json(cls, d: dict, graphs: dict | None = None) -> "JointPlan":
        """The joint plan of ``d``; ``graphs`` (name -> OpGraph) attaches each model's
        graph to its plan (and checks the plan was made for it)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA or d.get("version") != VERSION:
            raise PlanError(f"not a {SCHEMA} version {VERSION} document; make the joint plan again")
        graphs = graphs or {}
        try:
            models = [ModelShare(m["name"], Plan.from_json(m["plan"], graphs.get(m["name"])), int(m["quota_bytes"]),
                                 int(m.get("priority", 0)), m.get("rate_per_s"), dict(m.get("predicted", {})))
                      for m in d["models"]]
            return cls(models, int(d["gpu_memory_cap"]), d["objective"], dict(d.get("predicted", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"joint plan is incomplete or malformed ({exc}); make it again") from None

    def save(self, path) -> Path:
        """Write the joint plan as JSON to ``path`` (atomically)."""
        try:
            return write_json(path, SCHEMA, VERSION, self._body())
        except OSError as exc:
            raise PlanError(f"cannot write the joint plan to {path}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path, graphs: dict | None = None) -> "JointPlan":
        return cls.from_json(read_json(path, SCHEMA, VERSION, PlanError), graphs)
