"""A model compiled for several shape buckets: one ordinary artifact per bucket.

On disk a directory::

    manifest.json        schema "hetpart-buckets", version 1: the model, its inputs
                         and outputs (symbolic dims as names), the bucket spec
                         (:class:`~hetpart.contracts.buckets.BucketSpec`), and per
                         bucket its sizes and sub-directory
    batch=1/ batch=2/ …  one complete artifact each (manifest.json, plan.json,
                         libraries): :func:`~.loader.load_compiled` opens any of them alone

:func:`~.loader.load_compiled` returns a :class:`BucketedModel` for such a directory
and ``hetpart.Session`` opens it as a
:class:`~hetpart.runtime.bucketed_session.BucketedSession`.  Invariant: ``buckets``
are in :meth:`BucketSpec.grid` order, one per bucket of the spec; every bucket's
compiled model has the same inputs and outputs as the model, with the bucket's sizes
in place of the bucketed dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..contracts.buckets import BucketSpec, bucket_label
from ..contracts.jsonfile import read_json, write_json
from ..errors import CompileError
from .artifact import MANIFEST, CompiledModel, TensorSpec, confined

SCHEMA = "hetpart-buckets"
VERSION = 1


@dataclass
class Bucket:
    """One bucket: its sizes (dim name -> size), its sub-directory name, its compiled model."""

    sizes: dict[str, int]
    directory: str
    compiled: CompiledModel

    @property
    def label(self) -> str:
        return bucket_label(self.sizes)


@dataclass
class BucketedModel:
    """A model compiled once per shape bucket; see the module docstring."""

    spec: BucketSpec
    buckets: list[Bucket]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_names: list[str]
    model: str = ""
    directory: Path | None = None
    compile_seconds: float = 0.0
    build_stats: dict = field(default_factory=dict)  # e.g. libraries reused across buckets

    is_bucketed = True  # what hetpart.Session looks at to open a BucketedSession

    def bucket(self, sizes: dict[str, int]) -> Bucket:
        for b in self.buckets:
            if b.sizes == sizes:
                return b
        raise KeyError(f"no bucket {bucket_label(sizes)} in '{self.model}'")

    def manifest(self) -> dict:
        return {"model": self.model, "compile_seconds": round(self.compile_seconds, 3),
                "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
                "output_names": list(self.output_names), "spec": self.spec.to_json(),
                "build_stats": self.build_stats,
                "buckets": [{"sizes": b.sizes, "directory": b.directory} for b in self.buckets]}

    def save(self, directory) -> Path:
        """Each bucket's artifact into its sub-directory, then the top manifest last
        (a directory with a manifest is complete).  Returns the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for b in self.buckets:
            b.compiled.save(_subdir(out, b.directory, mkdir=True))
        write_json(out / MANIFEST, SCHEMA, VERSION, self.manifest())
        self.directory = out
        return out


def bucket_directory(sizes: dict[str, int]) -> str:
    """The sub-directory name of a bucket: ``batch=8`` or ``batch=8,seq=128``."""
    return bucket_label(sizes)


def is_bucketed_manifest(data) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def load_bucketed(root: Path, load_one, **kwargs) -> BucketedModel:
    """The :class:`BucketedModel` in ``root``; ``load_one(dir, **kwargs)`` loads each
    bucket's artifact (:func:`~.loader.load_compiled`, with its checks).  CompileError
    naming the manifest when it is malformed or lists another set of buckets than its spec."""
    path = root / MANIFEST
    data = read_json(path, SCHEMA, VERSION, CompileError)
    try:
        spec = BucketSpec.from_json(data["spec"])
        entries = [({str(k): int(v) for k, v in e["sizes"].items()}, str(e["directory"])) for e in data["buckets"]]
        inputs = [TensorSpec.from_json(t) for t in data["inputs"]]
        outputs = [TensorSpec.from_json(t) for t in data["outputs"]]
        names = [str(n) for n in data["output_names"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CompileError(f"{path} is malformed ({type(exc).__name__}: {exc}); recompile the model") from exc
    if [s for s, _ in entries] != spec.grid():
        raise CompileError(f"{path} lists buckets {[bucket_label(s) for s, _ in entries]}, but its spec makes "
                           f"{[bucket_label(s) for s in spec.grid()]}; recompile the model")
    buckets = [Bucket(sizes, d, _load_bucket(root, d, load_one, kwargs)) for sizes, d in entries]
    return BucketedModel(spec=spec, buckets=buckets, inputs=inputs, outputs=outputs, output_names=names,
                         model=str(data.get("model", "")), directory=root,
                         compile_seconds=float(data.get("compile_seconds", 0.0)),
                         build_stats=dict(data.get("build_stats", {})))


def _load_bucket(root: Path, name: str, load_one, kwargs) -> CompiledModel:
    compiled = load_one(_subdir(root, name), **kwargs)
    if not isinstance(compiled, CompiledModel):  # buckets of buckets: never written by hetpart
        raise CompileError(f"bucket directory {root / name} holds buckets itself; recompile the model")
    return compiled


def _subdir(root: Path, name: str, mkdir: bool = False) -> Path:
    """``root / name``, a directory directly inside ``root`` (no path out of it)."""
    path = Path(root) / name if isinstance(name, str) else None
    if path is not None and mkdir:
        if Path(name).name == name and name not in ("", ".", ".."):
            path.mkdir(exist_ok=True)
    return confined(Path(root), name, "bucket directory")
