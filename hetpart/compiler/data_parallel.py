"""A data-parallel plan compiled: one ordinary artifact per side.

On disk a directory::

    manifest.json   schema "hetpart-data-parallel", version 1: the model, the batch,
                    the rows of each side and its sub-directory, the batch axes
    plan.json       the DataParallelPlan (schema "hetpart-data-parallel-plan")
    cuda/ cpu/      one complete artifact each (a side with 0 rows has none):
                    :func:`~.loader.load_compiled` opens either alone

:func:`~.loader.load_compiled` on the directory itself returns the
:class:`DataParallelModel` (through :func:`load_data_parallel`), and ``hetpart.Session`` of it
(or of the directory) a :class:`~hetpart.runtime.data_parallel_session.DataParallelSession`.

Invariant: ``gpu`` is compiled for ``plan.b_gpu`` rows (None when 0), ``cpu`` for
``plan.b_cpu``; :class:`~hetpart.runtime.data_parallel_session.DataParallelSession`
runs both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..contracts.batch_axes import BatchAxes
from ..contracts.jsonfile import read_json, write_json
from ..errors import CompileError
from ..partitioner.data_parallel_plan import DataParallelPlan
from .artifact import MANIFEST, CompiledModel, confined

SCHEMA = "hetpart-data-parallel"
VERSION = 1
SIDES = {"cuda": "gpu", "cpu": "cpu"}  # device -> attribute


@dataclass
class DataParallelModel:
    plan: DataParallelPlan
    gpu: CompiledModel | None
    cpu: CompiledModel | None

    is_data_parallel = True  # what hetpart.Session looks at to open a DataParallelSession

    def __post_init__(self):
        for device, rows, _ in self.plan.sides():
            if getattr(self, SIDES[device]) is None:
                raise CompileError(f"the data-parallel plan gives {rows} rows to {device}, which has no build")

    @property
    def batch(self) -> int:
        return self.plan.batch

    @property
    def axes(self) -> BatchAxes:
        return self.plan.axes

    def sides(self) -> list[tuple[str, int, CompiledModel]]:
        """(device, rows, compiled) of each non-empty side, in row order (GPU rows first)."""
        return [(d, n, getattr(self, SIDES[d])) for d, n, _ in self.plan.sides()]

    def save(self, directory) -> Path:
        """Write both artifacts, the plan and the manifest under ``directory``."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        for device, _, compiled in self.sides():
            compiled.save(root / device)
        self.plan.save(root / "plan.json")
        write_json(root / MANIFEST, SCHEMA, VERSION,
                   {"model": self.plan.model, "batch": self.plan.batch,
                    "sides": [{"device": d, "rows": n, "directory": d} for d, n, _ in self.sides()],
                    "axes": self.plan.axes.to_json()})
        return root


def is_data_parallel_manifest(data) -> bool:
    """Whether a parsed ``manifest.json`` is a data-parallel model's (schema ``hetpart-data-parallel``)."""
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def load_data_parallel(directory, load_one, **kwargs) -> DataParallelModel:
    """The model :meth:`DataParallelModel.save` wrote to ``directory``; ``load_one(dir,
    **kwargs)`` loads each side's artifact (:func:`~.loader.load_compiled`, with its
    checks), as :func:`~.bucketed.load_bucketed` loads each bucket."""
    root = Path(directory)
    manifest = read_json(root / MANIFEST, SCHEMA, VERSION, CompileError)
    plan = DataParallelPlan.load(root / "plan.json")
    built = {}
    for side in manifest["sides"]:
        if side["device"] not in SIDES:
            raise CompileError(f"{root}: unknown side device {side['device']!r}")
        built[side["device"]] = load_one(confined(root, side["directory"], f"{side['device']} side"), **kwargs)
    return DataParallelModel(plan=plan, gpu=built.get("cuda"), cpu=built.get("cpu"))
