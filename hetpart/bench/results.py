"""The benchmark's results as plain data: one :class:`Row` per thing measured.

Everything here is a dataclass that :meth:`BenchReport.to_json` turns into plain
JSON (``"schema": "hetpart-bench"``, ``"version": 1``) and
:meth:`BenchReport.from_json` reads back equal.  Times are seconds; ``error`` is
``(measured - predicted) / predicted``.  A row that could not be measured has
``skipped`` set to the reason and no numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import HetpartError
from .timing import Stats

SCHEMA = "hetpart-bench"
VERSION = 1

KINDS = ("plan", "single_device", "baseline", "peer")
"""``plan``: a hetpart plan (one per objective); ``single_device``: all-CPU or
all-CUDA built by the same TVM compiler; ``baseline``: another placement (greedy);
``peer``: another runtime (PyTorch, ONNX Runtime)."""


@dataclass
class Row:
    """One contender on one workload.

    ``name`` is stable (``hetpart:latency``, ``tvm:all_cpu``, ``peer:torch_cuda``);
    ``label`` is what the table shows.  ``placement`` summarises the devices
    (``"cpu 3 + cuda 40 kernels, 3 partitions"``); ``build`` names the compiled
    build it ran (rows with the same build ran the same libraries).
    """

    name: str
    label: str
    kind: str
    placement: str = ""
    latency: Stats | None = None
    items_per_s: float | None = None
    predicted_latency_s: float | None = None
    predicted_items_per_s: float | None = None
    build: str = ""
    compile_s: float | None = None
    skipped: str | None = None
    note: str = ""

    @property
    def error(self) -> float | None:
        """(measured - predicted) / predicted median latency, when both exist."""
        if self.latency is None or not self.predicted_latency_s:
            return None
        return (self.latency.median_s - self.predicted_latency_s) / self.predicted_latency_s


@dataclass
class Candidate:
    """One plan the oracle check measured: ``origin`` says where it came from."""

    origin: str
    placement: str
    predicted_s: float
    measured_s: float | None
    skipped: str | None = None


@dataclass
class Oracle:
    """The chosen (latency) plan against the best measured of the candidates."""

    chosen_s: float
    best_s: float
    best_origin: str
    candidates: list[Candidate]
    rank_correlation: float | None  # Spearman rho of predicted vs measured over candidates

    @property
    def gap(self) -> float:
        """How much slower the chosen plan is than the best measured one (0.05 = 5 %)."""
        return self.chosen_s / self.best_s - 1.0


@dataclass
class WorkloadResult:
    label: str
    model: str
    batch: int
    gpu_memory: int | None
    kernels: int
    simulated: bool
    rows: list[Row]
    heterogeneous: bool = False  # a workload where heterogeneity is expected to pay
    oracle: Oracle | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time spent on this workload, compiling included

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


@dataclass
class ConcurrentResult:
    """Two (or more) models at once (MultiSession) against one after another."""

    label: str
    models: list[str]
    sequential: Stats | None
    concurrent: Stats | None
    skipped: str | None = None

    @property
    def speedup(self) -> float | None:
        if self.sequential is None or self.concurrent is None:
            return None
        return self.sequential.median_s / self.concurrent.median_s


@dataclass
class BenchReport:
    created: str
    machine: dict
    commands: list[str]
    settings: dict
    workloads: list[WorkloadResult] = field(default_factory=list)
    concurrent: list[ConcurrentResult] = field(default_factory=list)
    goals: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = {"schema": SCHEMA, "version": VERSION}
        out.update(_plain(self))
        return out

    @classmethod
    def from_json(cls, d: dict) -> "BenchReport":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA or d.get("version") != VERSION:
            raise HetpartError(f"not a hetpart benchmark report of version {VERSION} "
                               f"(schema {d.get('schema') if isinstance(d, dict) else None!r})")
        return _build(cls, d)


# --- JSON, both ways, driven by the dataclass fields --------------------------------
DERIVED = {Row: ("error",), Oracle: ("gap",), ConcurrentResult: ("speedup",)}
"""Properties written to JSON for readers of the file, ignored when reading back."""


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        d = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        for name in DERIVED.get(type(value), ()):
            d[name] = getattr(value, name)
        return d
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_NESTED = {
    (BenchReport, "workloads"): WorkloadResult, (BenchReport, "concurrent"): ConcurrentResult,
    (WorkloadResult, "rows"): Row, (WorkloadResult, "oracle"): Oracle, (Oracle, "candidates"): Candidate,
    (Row, "latency"): Stats, (ConcurrentResult, "sequential"): Stats, (ConcurrentResult, "concurrent"): Stats,
}


def _build(cls, d: dict):
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v, inner = d[f.name], _NESTED.get((cls, f.name))
        if inner is not None and v is not None:
            v = [_build(inner, x) for x in v] if isinstance(v, list) else _build(inner, v)
        kwargs[f.name] = v
    return cls(**kwargs)


__all__ = ["BenchReport", "Candidate", "ConcurrentResult", "KINDS", "Oracle", "Row", "SCHEMA", "VERSION",
           "WorkloadResult"]
