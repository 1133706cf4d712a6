"""The compiled artifact: what the compiler writes and the runtime loads.

A :class:`CompiledModel` is a plan turned into one built library per partition.  On
disk it is a directory::

    manifest.json     schema "hetpart-artifact", versions, targets, kernel options, per-partition
                      inputs/outputs (names, shapes, dtypes), sha256 of each library,
                      the model's output names (``output_names``, one per output)
    plan.json         the plan it was compiled from
    p0_cpu.so ...     one shared library per partition (a Relax VM executable
                      exported with ``export_library``)
    p1_cuda.weights.bin  per partition whose weights are streamed: its weights packed
                      into one buffer (``PartitionArtifact.weights``: file, sha256,
                      nbytes, and per weight name, shape, dtype, byte offset)
    p0_cpu.params.bin    per partition whose weights are external (over
                      ``external_min_bytes``, :mod:`.external`): the same layout
                      (``PartitionArtifact.external``), bound by the runtime at load

Invariants: ``partitions`` are in a topological order (every input of a partition is
a model input or an output of an earlier partition); ``main`` of a partition takes
exactly ``inputs`` in order and returns ``outputs`` in order (a single tensor when
there is one output, else a tuple).  When ``dps`` is true the library also has
``main_dps(*inputs, *outputs)``, which writes each output into the buffer passed for
it and returns those same buffers.  ``sha256`` is the hash of the library file;
:func:`load_compiled` refuses a file whose hash differs.  ``library`` is a plain file
name inside the directory (:func:`confined`: no path, no symlink out), and
:func:`check_order` checks the partition order against the data dependencies.
``index_limits`` (optional) gives, per model input used as indices, the range its
values must lie in (:class:`~hetpart.importer.op_graph.IndexLimits`).  ``conv_block``
(optional, absent for NCHW) the channel block the model's convolutions were imported in
(:mod:`hetpart.importer.conv_layout`: an all-CPU build).

A partition with ``weights`` (streamed, :class:`WeightFile`) takes them as
parameters after its inputs: ``main(*inputs, *weights)`` and
``main_dps(*inputs, *weights, *outputs)`` (``main_dps(*inputs, *outputs, *weights)``
where ``slot_graphs``), each weight a view of the packed buffer at
its ``offset`` (a multiple of :data:`WEIGHT_ALIGNMENT`).  Version 2 of the manifest
added ``weights``; version 1 manifests (no streamed partition) still read.
Version 3 added ``precision`` (each device's number format,
:class:`~hetpart.contracts.precision.Precision`; a streamed weight's ``dtype`` is then
``bfloat16``/``float16`` on a bf16/fp16 device); versions 1 and 2 read as the default.

A partition with ``external`` weights (:class:`WeightFile`; :mod:`.external` says why)
takes them as parameters after *all* its others: ``main(*inputs, *weights)`` and
``main_dps(*inputs, *outputs, *weights)``; its library holds none of them.  Version 4
added ``external`` per partition and ``external_min_bytes`` (the threshold the model
was compiled with: a partition whose weights exceed it keeps them all in its file;
null: never).  Versions 1-3 (every weight inside its library) still read: a library
whose embedded data was cut by the 4 GiB limit is refused with a typed error when it
is checked (:func:`hetpart.compiler.elf.check_bounds`), never loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..contracts.precision import DEFAULT as DEFAULT_PRECISION, Precision
from ..errors import CompileError
from ..kernels.options import DEFAULT, KernelOptions
from ..partitioner.plan import Plan
from ..importer.op_graph import IndexLimits

SCHEMA = "hetpart-artifact"
VERSION = 6  # 2: PartitionArtifact.weights (streamed weights in a .weights.bin file); 3: precision;
# 4: PartitionArtifact.external (resident weights in a .params.bin file) and external_min_bytes;
# 5: PartitionArtifact.cuda_graph, slot_graphs, static_io (how a streaming plan's CUDA libraries were built);
# 6: PartitionArtifact.contraction_reads (read as none before: the handoff then maps as it did)
MAPPED_VERSION = 7  # 7: PartitionArtifact.mapped; written (with the key) only by a model with a mapped partition
READS = (1, 2, 3, 4, 5, 6, 7)  # 1 and 2 read as the default precision; 1-3 have no external weights; 1-4 read
# the graph flags as False (built before a streaming plan's libraries had graphs)
WEIGHT_ALIGNMENT = 64  # byte alignment of each weight in a packed buffer (what TVM kernels assume)
MANIFEST = "manifest.json"
PLAN = "plan.json"

MAIN_FUNCTION = "main"
"""The plain entry point of every partition library."""

DPS_FUNCTION = "main_dps"
"""The destination-passing entry point (present when ``PartitionArtifact.dps``)."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor crossing a partition boundary (or the model's boundary)."""

    name: str
    shape: tuple
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class WeightSpec:
    """One streamed weight: a tensor at ``offset`` bytes into its partition's packed buffer."""

    name: str
    shape: tuple
    dtype: str
    offset: int
    nbytes: int

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "offset": self.offset, "nbytes": self.nbytes}

    @classmethod
    def from_json(cls, d: dict) -> "WeightSpec":
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]), int(d["offset"]),
                   int(d["nbytes"]))


@dataclass(frozen=True)
class WeightFile:
    """A partition's weights in a file of the artifact (streamed or external): ``file``
    (in the artifact directory) holds ``nbytes`` bytes, every tensor of ``tensors``
    (parameter order) at its offset; ``sha256`` is the file's hash, checked before the
    runtime loads it."""

    file: str
    nbytes: int
    sha256: str
    tensors: tuple[WeightSpec, ...]

    def to_json(self) -> dict:
        return {"file": self.file, "nbytes": self.nbytes, "sha256": self.sha256,
                "tensors": [t.to_json() for t in self.tensors]}

    @classmethod
    def from_json(cls, d: dict) -> "WeightFile":
        return cls(str(d["file"]), int(d["nbytes"]), str(d["sha256"]),
                   tuple(WeightSpec.from_json(t) for t in d["tensors"]))


StreamedWeights = WeightFile  # the name before external weights shared the layout


def pack_weights(values, names) -> tuple[bytes, tuple[WeightSpec, ...]]:
    """``values`` (numpy arrays) packed into one buffer, each at an offset that is a
    multiple of :data:`WEIGHT_ALIGNMENT`; returns the bytes and the layout."""
    import numpy as np

    specs, offset = [], 0
    for name, v in zip(names, values):
        specs.append(WeightSpec(name, tuple(v.shape), str(v.dtype), offset, int(v.nbytes)))
        offset += -(-int(v.nbytes) // WEIGHT_ALIGNMENT) * WEIGHT_ALIGNMENT
    out = bytearray(offset)
    for spec, v in zip(specs, values):
        out[spec.offset:spec.offset + spec.nbytes] = np.ascontiguousarray(v).tobytes()
    return bytes(out), tuple(specs)


@dataclass
class PartitionArtifact:
    """One compiled partition.

    ``device`` is the plan's device name; ``device_type`` where it really runs
    (``"cpu"`` for a simulated CUDA partition); ``target`` the TVM target as JSON.
    ``module`` is what ``relax.VirtualMachine(module, dev)`` takes: the loaded library
    (None until built or loaded, and for a cross-compiled CUDA library on a machine
    without a GPU).  ``dps`` says whether the library has ``main_dps``.  ``weights``
    is None for a partition holding its weights in its library, else its streamed
    weights (taken as parameters after the inputs).  ``external`` is None, else the
    file of the weights its library does not hold (taken after every other parameter;
    never set together with ``weights``).  ``cuda_graph``: the library was built with
    CUDA graphs (a GPU build; its first call of each function captures one); absent in
    manifests before it was recorded, read as False.  ``slot_graphs``: a streamed partition
    built for graphs (:func:`hetpart.compiler.extract.slot_graph_signature`): it takes
    ``main_dps(*inputs, *outputs, *weights)`` (weights last, as external ones), and the
    runtime keeps one VM per ring slot, so a graph replays only the slot it captured.
    ``static_io``: built with every parameter fixed
    (:func:`hetpart.compiler.extract.static_io_signature`): inputs and outputs captured too,
    the runtime keeps one VM per distinct set of argument addresses.
    ``contraction_reads``: its inputs and outputs that a contraction kernel of it reads
    (:func:`hetpart.compiler.extract.contraction_reads`); the handoff keeps them out of mapped
    host memory (:data:`hetpart.runtime.handoff.COPY_GPU_CONTRACTION_READS`).  Absent before
    version 6, read as none.  ``mapped``: a CUDA partition the plan maps the weights of
    (``Partition.weights == "mapped"``): every weight in its ``external`` file, which the
    runtime reads into mapped pinned host memory and the kernels read in place
    (:mod:`hetpart.runtime.external_weights`), never copied to the GPU.  Written (and the
    manifest as version 7) only where True; absent, read as False.
    """

    name: str
    device: str
    device_type: str
    target: dict
    library: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    kernels: list[str]
    sha256: str = ""
    function: str = MAIN_FUNCTION
    simulated: bool = False
    dps: bool = False
    weights: WeightFile | None = None
    external: WeightFile | None = None
    cuda_graph: bool = False
    slot_graphs: bool = False
    static_io: bool = False
    contraction_reads: list[str] = field(default_factory=list)
    mapped: bool = False
    module: Any = field(default=None, repr=False, compare=False)
    # the external weights read into host memory once, shared by every CPU runner of this artifact
    host_weights: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("module", "host_weights") and (f.name != "mapped" or self.mapped)}
        d["inputs"] = [t.to_json() for t in self.inputs]
        d["outputs"] = [t.to_json() for t in self.outputs]
        d["weights"] = self.weights.to_json() if self.weights is not None else None
        d["external"] = self.external.to_json() if self.external is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PartitionArtifact":
        d = dict(d)
        d["inputs"] = [TensorSpec.from_json(t) for t in d["inputs"]]
        d["outputs"] = [TensorSpec.from_json(t) for t in d["outputs"]]
        d["weights"] = WeightFile.from_json(d["weights"]) if d.get("weights") else None
        d["external"] = WeightFile.from_json(d["external"]) if d.get("external") else None
        if d["weights"] is not None and d["external"] is not None:
            raise ValueError(f"partition {d.get('name')!r} has both streamed and external weights")
        return cls(**d)


@dataclass
class CompiledModel:
    """A plan compiled into partitions; see the module docstring for the invariants.

    ``directory`` holds the library files: a private staging directory right after
    :func:`hetpart.compile`, the saved directory after :meth:`save` or
    :func:`load_compiled`.  ``targets`` maps each device name to its TVM target JSON;
    ``kernel_options`` the code-generation choices every partition was built with.
    ``output_names[i]`` is the model's name of ``outputs[i]`` (the ONNX output name;
    ``outputs`` are named by graph tensor); empty means the tensor names.
    ``external_min_bytes``: the threshold over which a partition's weights were kept
    out of its library (:mod:`.external`; None: never, e.g. an artifact before version 4).
    """

    plan: Plan
    partitions: list[PartitionArtifact]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    directory: Path | None = None
    compile_seconds: float = 0.0
    model: str = ""
    targets: dict = field(default_factory=dict)
    simulated: bool = False
    kernel_options: KernelOptions = DEFAULT
    precision: Precision = DEFAULT_PRECISION
    output_names: list[str] = field(default_factory=list)
    # model inputs used as indices -> their valid values, checked on every feed
    index_limits: dict[str, IndexLimits] = field(default_factory=dict)
    external_min_bytes: int | None = None
    conv_block: int | None = None  # the graph's conv layout, NCHW{c}c (importer.conv_layout); None: NCHW
    _staging: Any = field(default=None, repr=False, compare=False)  # keeps a TemporaryDirectory alive

    @property
    def model_output_names(self) -> list[str]:
        """The name under which :class:`hetpart.Session` returns each of ``outputs``."""
        return list(self.output_names) or [t.name for t in self.outputs]

    def partition(self, name: str) -> PartitionArtifact:
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(f"compiled model '{self.model}' has no partition '{name}'")

    def library_path(self, partition: PartitionArtifact) -> Path:
        """The partition's library file, checked to lie in ``directory`` (:func:`confined`)."""
        if self.directory is None:
            raise CompileError(f"partition '{partition.name}' has no library on disk yet")
        return confined(Path(self.directory), partition.library, f"library of partition '{partition.name}'")

    def weights_path(self, partition: PartitionArtifact, external: bool = False) -> Path:
        """The partition's streamed-weights file (its external-weights file when
        ``external``), checked to lie in ``directory``."""
        wf = partition.external if external else partition.weights
        kind = "external" if external else "streamed"
        if self.directory is None or wf is None:
            raise CompileError(f"partition '{partition.name}' has no {kind} weights on disk")
        return confined(Path(self.directory), wf.file, f"{kind} weights of partition '{partition.name}'")

    def manifest(self) -> dict:
        """The manifest as a JSON-ready dict (see the module docstring)."""
        import tvm

        from .. import __version__

        return {
            "schema": SCHEMA,
            "version": MAPPED_VERSION if any(p.mapped for p in self.partitions) else VERSION,
            "hetpart": __version__,
            "tvm": tvm.__version__,
            "model": self.model,
            "simulated": self.simulated,
            "compile_seconds": round(self.compile_seconds, 3),
            "targets": self.targets,
            "kernel_options": self.kernel_options.to_json(),
            "precision": self.precision.to_json(),
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "output_names": self.model_output_names,
            "partitions": [p.to_json() for p in self.partitions],
            "index_limits": {name: lim.to_json() for name, lim in self.index_limits.items()},
            "external_min_bytes": self.external_min_bytes,
            **({"conv_block": self.conv_block} if self.conv_block else {}),
        }

    def save(self, directory) -> Path:
        """Write the artifact directory (libraries, ``plan.json``, then ``manifest.json``
        last, so a directory with a manifest is complete).  Returns the directory."""
        out = Path(directory)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file there or above it, no permission
            raise CompileError(f"cannot save the compiled model to {out}: {exc.strerror or exc}; name a new or "
                               "empty directory (save writes its files into one)") from None
        for p in self.partitions:
            src = self.library_path(p)
            dst = confined(out, p.library, f"library of partition '{p.name}'")
            if src.resolve() != dst.resolve():
                shutil.copyfile(src, dst)
            for external, wf in ((False, p.weights), (True, p.external)):
                if wf is None:
                    continue
                src = self.weights_path(p, external)
                dst = confined(out, wf.file, f"weights of partition '{p.name}'")
                if src.resolve() != dst.resolve():
                    shutil.copyfile(src, dst)
        _write_json(out / PLAN, self.plan.to_json())
        _write_json(out / MANIFEST, self.manifest())
        self.directory = out
        return out


def confined(root: Path, name, what: str) -> Path:
    """``root / name`` for a file a manifest names, checked to stay in ``root``: ``name``
    is a plain file name (not absolute, no directory part, not ``..``) and, symlinks
    resolved, the file is still directly in ``root``.  CompileError otherwise (a library
    elsewhere is native code from who knows where: it is never loaded or written)."""
    ok = isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name
    path = Path(root) / name if ok else None
    if ok:
        try:
            ok = path.resolve().parent == Path(root).resolve()
        except (OSError, RuntimeError):  # a symlink loop, an unreadable directory
            ok = False
    if not ok:
        raise CompileError(f"the {what} is {name!r}, which is not a file directly inside the artifact "
                           f"directory {root} (paths and symlinks out of it are refused); recompile the model")
    return path


def check_order(model: "CompiledModel", where: str = "the compiled model") -> None:
    """CompileError unless every partition reads only model inputs and outputs of
    earlier partitions, no tensor is made twice, and every model output is made: the
    order the runtime relies on (a wrong one would wait forever for a value)."""
    available = {t.name for t in model.inputs}
    for p in model.partitions:
        missing = [t.name for t in p.inputs if t.name not in available]
        if missing:
            raise CompileError(f"{where}: partition '{p.name}' reads {', '.join(missing)} before any earlier "
                               "partition makes it: the partitions are not in a valid order; recompile the model")
        twice = [t.name for t in p.outputs if t.name in available]
        if twice:
            raise CompileError(f"{where}: partition '{p.name}' makes {', '.join(twice)}, already made before it: "
                               "the partition order is invalid; recompile the model")
        available.update(t.name for t in p.outputs)
    lost = [t.name for t in model.outputs if t.name not in available]
    if lost:
        raise CompileError(f"{where}: no partition makes the model output(s) {', '.join(lost)}; "
                           "the partition order is invalid; recompile the model")


def target_json(target) -> dict:
    """A TVM target as plain JSON data (``Target.export()`` holds FFI containers)."""
    return _plain(target.export())


def _plain(obj):
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if hasattr(obj, "__iter__"):
        return [_plain(v) for v in obj]
    return str(obj)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a stale file or a symlink there must not be written through
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
