"""The plan: what runs where, what moves between devices, and what it should cost.

A :class:`Plan` is plain data.  It goes to the compiler (one module per
:class:`Partition`) and the runtime (which runs partitions in the order listed, copying
each :class:`Cut`), and to disk as JSON (``"schema": "hetpart-plan"``) that loads back
equal (:meth:`Plan.save`, :meth:`Plan.load`).  The op graph and the cost model a
plan was made from ride along in memory only.  ``state`` holds the device-resident
state pairs (model output -> model input) the plan was priced with
(:mod:`.state`); a plan with state is written as version 4, one without as version 3; a plan with a
``"mapped"`` partition as version 5 (a reader before it refuses it by its version).

Tensor names (partitions' ``inputs``/``outputs``, cuts, copy spans) are the op graph's.
A plan made before the importer named model outputs by their ONNX names (session 59)
holds Relax's names (``gv``); loaded with its graph, it reads under the graph's names
(:func:`graph_tensor_names`; its devices and kernels unchanged).  Without a graph the
file alone cannot say which ONNX name a Relax name stood for: it keeps them.

Times are seconds, sizes bytes.  ``predicted`` holds:

* ``latency_s``: one inference under the plan's objective (partitions one after
  another for ``latency``; overlapping for ``makespan`` and ``throughput``);
* ``throughput_per_s``: inferences per second: ``1 / latency_s``, or for the
  ``throughput`` objective ``1 / period_s`` (micro-batches pipelined);
* ``sequential_s``, ``makespan_s``, ``period_s``: all three execution models;
  ``compute_s``, ``transfer_s``, ``overhead_s`` (partition overheads, CPU wake-ups
  included: :func:`.layout.partition_overheads`), ``cpu_wakes`` (CPU partitions that
  start after a CUDA one; absent from plans older than it), ``transfer_bytes``; ``streamed_bytes``
  and ``stream_s``: weights copied per inference and their copies' seconds (0 when
  nothing streams);
* ``gpu_memory``: ``params``, ``peak_activations``, ``total``, ``cap`` (bytes);
  with streamed weights also ``stream_buffers`` (``stream_slots * stream_slot_bytes``);
* ``baselines``: ``{"all_cpu" | "all_cuda" | "greedy": {latency_s, throughput_per_s, ...}
  or None}``, and ``baseline_notes``: why one is None or what it had to keep elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..contracts.precision import DEFAULT as DEFAULT_PRECISION, Precision
from ..contracts.trace import Span  # noqa: F401 - the timeline's spans (tracks cpu, cuda, h2d, d2h); re-exported
from ..errors import PlanError
from ..importer.op_graph import OpGraph
from .costs import Costs

SCHEMA = "hetpart-plan"
VERSION = 3  # 2: Partition.weights / weight_bytes, Plan.stream_slots / stream_slot_bytes; 3: Plan.precision
STATE_VERSION = 4  # 4: Plan.state; written only by a plan with state, so a plan without stays version 3
MAPPED_VERSION = 5  # 5: Partition.weights "mapped"; written only by a plan with a mapped partition
READS = (1, 2, 3, 4, 5)  # version 1 reads as all weights resident; 1 and 2 as the default precision; < 4 no state
WEIGHTS = ("resident", "streamed", "mapped")


@dataclass
class Partition:
    """Kernels (topological order) that run as one call on one device.

    ``inputs`` are the tensors it reads from outside (model inputs or other
    partitions), ``outputs`` those it makes that are read outside or returned.
    ``predicted_s`` = ``compute_s`` + ``overhead_s``.

    ``weights`` says where a CUDA partition's constants live: ``"resident"`` (copied to
    the GPU once, when the session opens) or ``"streamed"`` (held once in pinned host
    memory and copied into one of the plan's ring slots on a copy stream ahead of each
    call; the call waits for its copy, and a slot is refilled only after the call that
    read it has finished) or ``"mapped"`` (held once in pinned host memory and read by the
    kernels in place, through its mapped device pointer: no GPU memory, no copy; each byte
    a call reads crosses the link; :data:`.streaming.MAPPED_WEIGHTS`).  ``weight_bytes`` is
    the size of those constants; a streamed partition's must fit one slot.  CPU partitions
    are always ``"resident"``.
    """

    name: str
    device: str
    kernels: list[str]
    predicted_s: float = 0.0
    compute_s: float = 0.0
    overhead_s: float = 0.0
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    weights: str = "resident"
    weight_bytes: int = 0


@dataclass
class Cut:
    """One copy of ``tensor`` from ``src_device`` to ``dst_device``.

    ``src`` is the partition making it (None: a model input, in host memory);
    ``readers`` every partition on ``dst_device`` that reads it, ``dst`` the first of
    them (None when only the model's output needs it on the host).  The copy is made
    once, whatever the number of readers.
    """

    tensor: str
    src: str | None
    dst: str | None
    readers: list[str]
    src_device: str
    dst_device: str
    nbytes: int
    seconds: float


@dataclass
class Plan:
    model: str
    objective: str
    assignment: dict[str, str]
    partitions: list[Partition]
    cuts: list[Cut]
    timeline: list[Span]
    predicted: dict
    profile_origin: str
    constraints: dict[str, str] = field(default_factory=dict)  # kernel -> why it is held on one device
    gpu_memory_cap: int | None = None
    # The ring of device buffers streamed partitions' weights are copied into
    # (0 slots: nothing streamed).  Counted in the GPU memory cap.
    stream_slots: int = 0
    stream_slot_bytes: int = 0
    # The number format of each device (hetpart.contracts.precision); weight_bytes and
    # the GPU memory counted in it.
    precision: Precision = DEFAULT_PRECISION
    # Device-resident state the plan was priced with (partitioner.state): model output ->
    # the model input it is read back as next step; the runtime binds the same pairs.
    state: dict[str, str] = field(default_factory=dict)
    graph: OpGraph | None = field(default=None, compare=False, repr=False)
    costs: Costs | None = field(default=None, compare=False, repr=False)

    # --- questions callers ask --------------------------------------------------
    @property
    def streamed(self) -> list[Partition]:
        """The partitions whose weights are streamed, in run order."""
        return [p for p in self.partitions if p.weights == "streamed"]

    @property
    def mapped(self) -> list[Partition]:
        """The partitions whose weights are mapped (read in place from pinned host memory), in run order."""
        return [p for p in self.partitions if p.weights == "mapped"]

    def partition_of(self, kernel_id: str) -> Partition:
        for p in self.partitions:
            if kernel_id in p.kernels:
                return p
        raise KeyError(f"no partition of this plan holds '{kernel_id}'")

    def best_baseline(self) -> tuple[str, float] | None:
        """(name, latency_s) of the fastest feasible baseline, or None."""
        feasible = [(v["latency_s"], k) for k, v in self.predicted["baselines"].items() if v]
        return (min(feasible)[1], min(feasible)[0]) if feasible else None

    # --- JSON --------------------------------------------------------------------
    def to_json(self) -> dict:
        version = MAPPED_VERSION if self.mapped else STATE_VERSION if self.state else VERSION
        out = {"schema": SCHEMA, "version": version}
        for f in fields(self):
            if f.name not in ("graph", "costs") and (f.name != "state" or self.state):
                out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_json(cls, d: dict, graph=None) -> "Plan":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise PlanError(f"not a hetpart plan (schema {d.get('schema') if isinstance(d, dict) else None!r}, "
                            f"expected {SCHEMA!r})")
        if d.get("version") not in READS:
            raise PlanError(f"plan file version {d.get('version')} is not supported (this hetpart reads "
                            f"versions {', '.join(map(str, READS))}); make the plan again with `partition MODEL -o OUT`")
        try:
            plan = cls(
                model=d["model"], objective=d["objective"], assignment=dict(d["assignment"]),
                partitions=[Partition(**p) for p in d["partitions"]], cuts=[Cut(**c) for c in d["cuts"]],
                timeline=[Span(**s) for s in d["timeline"]], predicted=d["predicted"],
                profile_origin=d["profile_origin"], constraints=dict(d.get("constraints", {})),
                gpu_memory_cap=d.get("gpu_memory_cap"), stream_slots=d.get("stream_slots", 0),
                stream_slot_bytes=d.get("stream_slot_bytes", 0),
                precision=Precision.from_json(d.get("precision")), state=_state(d.get("state", {})),
                graph=graph)
        except (KeyError, TypeError) as exc:
            raise PlanError(f"plan file is incomplete or malformed ({exc}); make the plan again") from None
        if graph is not None and set(graph.kernels) != set(plan.assignment):
            raise PlanError(f"this plan was made for a different model or input shapes than '{graph.name}' "
                            f"({len(plan.assignment)} kernels planned, {len(graph.kernels)} in the model)")
        _check_streaming(plan)
        if graph is not None:
            graph_tensor_names(plan, graph)
        return plan

    def save(self, path) -> Path:
        """Write the plan as JSON to ``path``, creating missing parent directories.

        Raises PlanError when the path cannot be written (a parent is a file, no
        permission)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        except OSError as exc:
            raise PlanError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None
        return path

    @classmethod
    def load(cls, path, graph=None) -> "Plan":
        return cls.from_json(read_plan_file(path), graph)

    @classmethod
    def by_hand(cls, graph: OpGraph, assignment: dict[str, str], objective: str = "manual",
                origin: str = "manual") -> "Plan":
        """An unpriced plan of ``assignment`` (kernel -> device) on ``graph``: its partitions
        the maximal same-device runs in topological order, named ``p<i>_<device>``; no cuts,
        timeline or predictions.  For tests, tools and benchmarks that place kernels by hand."""
        parts: list[Partition] = []
        for kid in graph.topological_order():
            device = assignment[kid]
            if parts and parts[-1].device == device:
                parts[-1].kernels.append(kid)
            else:
                parts.append(Partition(f"p{len(parts)}_{device}", device, [kid]))
        return cls(model=graph.name, objective=objective, assignment=dict(assignment), partitions=parts, cuts=[],
                   timeline=[], predicted={}, profile_origin=origin, graph=graph)


def graph_tensor_names(plan: "Plan", graph: OpGraph) -> None:
    """Rename, in place, the tensors of a ``plan`` made before its ``graph``'s importer
    renamed tensors (``graph.relax_names``: a model output's tensor took its ONNX name):
    partitions' inputs and outputs, cuts and copy spans then use the graph's names.

    Such a plan is told by a partition listing an output its kernels do not make
    under the graph's names; a plan that uses them already is left alone.  Only names
    change: devices, kernels and numbers are the plan's, and compiling reads kernels
    (the graph's names) only, so the build is the same."""
    old = {relax: t for t, relax in graph.relax_names.items()}
    made = [{o for k in p.kernels for o in graph.kernels[k].outputs} for p in plan.partitions]
    if not old or all(set(p.outputs) <= m for p, m in zip(plan.partitions, made)):
        return
    for p in plan.partitions:
        p.inputs = [old.get(t, t) for t in p.inputs]
        p.outputs = [old.get(t, t) for t in p.outputs]
    for c in plan.cuts:
        c.tensor = old.get(c.tensor, c.tensor)
    for s in plan.timeline:
        if s.kind == "copy" and s.name.startswith("copy "):
            s.name = "copy " + old.get(s.name[len("copy "):], s.name[len("copy "):])


def _state(value) -> dict[str, str]:
    """A plan file's ``state``: output name -> input name, both strings (PlanError else)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PlanError(f"plan file's state {value!r} is not a map of output names to input names; "
                        "make the plan again")
    return dict(value)


def _check_streaming(plan: "Plan") -> None:
    """PlanError unless streamed partitions are CUDA ones that fit a slot of the ring and
    mapped ones are CUDA ones."""
    for p in plan.partitions:
        if p.weights not in WEIGHTS:
            raise PlanError(f"partition {p.name}: weights {p.weights!r} is not one of {', '.join(WEIGHTS)}")
        if p.weights == "mapped" and p.device != "cuda":
            raise PlanError(f"partition {p.name} maps its weights on {p.device}; only a CUDA partition reads "
                            "mapped host memory; make the plan again")
        if p.weights == "streamed" and (p.device != "cuda" or p.weight_bytes > plan.stream_slot_bytes
                                        or plan.stream_slots < 1):
            raise PlanError(f"partition {p.name} streams {p.weight_bytes} bytes of weights on {p.device}, but the "
                            f"plan's ring has {plan.stream_slots} slots of {plan.stream_slot_bytes} bytes; "
                            "make the plan again")


def _plain(value):
    """Dataclasses and tuples to JSON-ready dicts and lists."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_plan_file(path) -> dict:
    """The JSON object in plan file ``path``; PlanError naming the file when it is
    missing or unreadable (every plan kind's ``load`` reads through here)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"plan file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"cannot read plan file {path}: {exc}") from None
