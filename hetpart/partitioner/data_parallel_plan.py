"""The data-parallel plan: a batch split between a GPU build and a CPU build of the whole model.

A :class:`DataParallelPlan` says: of a batch of ``batch`` rows, the first ``b_gpu``
run on ``gpu`` (a :class:`~.plan.Plan` of the model at batch ``b_gpu``, every kernel
on CUDA that can run there) and the other ``b_cpu`` on ``cpu`` (the model at batch
``b_cpu``, every kernel on the CPU), both at once; the outputs are concatenated in
row order (``axes``: where the batch sits in each input and output).  Invariant:
``b_gpu + b_cpu == batch``, both >= 0; a side with 0 rows has no plan (``None``).

``predicted`` (seconds):

* ``latency_s`` = ``max(gpu_s, cpu_s) + merge_s``: one batch, both sides at once;
* ``gpu_s``, ``cpu_s``: each side's predicted latency (its plan's; 0 for an empty side);
  ``merge_s``: splitting the inputs, joining the two runs, concatenating the outputs
  (:class:`~.data_parallel.SplitCosts`; 0 when one side is empty);
* ``per_kernel_s``: seconds per batch of the best per-kernel plan at ``batch`` (what
  the split is compared against; ``per_kernel_objective`` names its objective);
  ``gain`` = ``per_kernel_s / latency_s`` (> 1: the split is predicted faster);
* ``rows_per_s`` = ``batch / latency_s``.

``candidates`` lists every split the cost model priced (``b_gpu``, ``b_cpu``,
``gpu_s``, ``cpu_s``, ``merge_s``, ``latency_s``; None where a side is infeasible),
and ``chosen`` whether the split beat the per-kernel plan by the rule of
:func:`~.data_parallel.beats` (``rule`` says it in words).  JSON:
``"schema": "hetpart-data-parallel-plan"``, the sides as plan documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..contracts.batch_axes import BatchAxes
from ..errors import PlanError
from .plan import Plan, read_plan_file

SCHEMA = "hetpart-data-parallel-plan"
VERSION = 1


@dataclass
class DataParallelPlan:
    model: str
    batch: int
    b_gpu: int
    b_cpu: int
    gpu: Plan | None
    cpu: Plan | None
    axes: BatchAxes
    predicted: dict
    candidates: list[dict] = field(default_factory=list)
    chosen: bool = False
    rule: str = ""
    profile_origin: str = ""
    # in memory only: the per-kernel plan compared against, and the model's BatchSource
    per_kernel: Plan | None = field(default=None, compare=False, repr=False)
    source: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """PlanError unless the invariant of the module docstring holds."""
        if self.b_gpu < 0 or self.b_cpu < 0 or self.b_gpu + self.b_cpu != self.batch or self.batch < 1:
            raise PlanError(f"a data-parallel split of {self.batch} rows into {self.b_gpu} (GPU) + {self.b_cpu} (CPU) "
                            "is not a split of the batch")
        for side, rows, plan in (("gpu", self.b_gpu, self.gpu), ("cpu", self.b_cpu, self.cpu)):
            if (rows > 0) != (plan is not None):
                raise PlanError(f"the {side} side has {rows} rows but {'a' if plan else 'no'} plan")

    @property
    def split(self) -> bool:
        """Whether both devices get rows."""
        return self.b_gpu > 0 and self.b_cpu > 0

    def sides(self) -> list[tuple[str, int, Plan]]:
        """(device, rows, plan) of each non-empty side, in row order (GPU rows first)."""
        return [(d, n, p) for d, n, p in (("cuda", self.b_gpu, self.gpu), ("cpu", self.b_cpu, self.cpu)) if n]

    def summary(self) -> dict:
        """The numbers a report needs, JSON-ready (also attached to a per-kernel plan the
        split lost to, as ``plan.predicted["data_parallel"]``)."""
        return {"batch": self.batch, "b_gpu": self.b_gpu, "b_cpu": self.b_cpu, "chosen": self.chosen,
                "rule": self.rule, "predicted": dict(self.predicted), "candidates": list(self.candidates)}

    # --- JSON --------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"schema": SCHEMA, "version": VERSION, "model": self.model, "batch": self.batch,
                "b_gpu": self.b_gpu, "b_cpu": self.b_cpu,
                "gpu": self.gpu.to_json() if self.gpu else None, "cpu": self.cpu.to_json() if self.cpu else None,
                "axes": self.axes.to_json(), "predicted": self.predicted, "candidates": self.candidates,
                "chosen": self.chosen, "rule": self.rule, "profile_origin": self.profile_origin}

    @classmethod
    def from_json(cls, d: dict, graphs: dict[int, object] | None = None) -> "DataParallelPlan":
        """The plan in ``d``; ``graphs`` (rows -> OpGraph at that batch) attach op graphs
        to the sides (needed to compile them)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise PlanError(f"not a hetpart data-parallel plan (schema "
                            f"{d.get('schema') if isinstance(d, dict) else None!r}, expected {SCHEMA!r})")
        if d.get("version") != VERSION:
            raise PlanError(f"data-parallel plan version {d.get('version')} is not supported (this hetpart reads "
                            f"version {VERSION}); make the plan again")
        graphs = graphs or {}
        try:
            side = lambda key, rows: Plan.from_json(d[key], graphs.get(rows)) if d[key] else None  # noqa: E731
            return cls(model=d["model"], batch=int(d["batch"]), b_gpu=int(d["b_gpu"]), b_cpu=int(d["b_cpu"]),
                       gpu=side("gpu", d["b_gpu"]), cpu=side("cpu", d["b_cpu"]),
                       axes=BatchAxes.from_json(d["axes"]), predicted=dict(d["predicted"]),
                       candidates=list(d["candidates"]), chosen=bool(d["chosen"]), rule=str(d["rule"]),
                       profile_origin=str(d.get("profile_origin", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"data-parallel plan is incomplete or malformed ({exc}); make the plan again") from None

    def save(self, path) -> Path:
        from ..contracts import atomic_write_text

        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")
        except OSError as exc:
            raise PlanError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None
        return path

    @classmethod
    def load(cls, path, graphs: dict[int, object] | None = None) -> "DataParallelPlan":
        return cls.from_json(read_plan_file(path), graphs)
