"""Read a compiled artifact directory back, checking it before trusting it.

In: a directory written by :meth:`CompiledModel.save`.  Out: a :class:`CompiledModel`
whose partitions have their libraries loaded.  Every check failure raises
:class:`~hetpart.errors.CompileError` naming the file and what to do: a missing or
unreadable file, another schema or schema version, another TVM version (a library
is only valid for the TVM that built it), a library named outside the directory, a
partition order that breaks a data dependency, a library whose sha256 differs from
the manifest's (corrupt or modified) or whose ELF headers reach past its end
(truncated: mapping it would fault).  :func:`load_checked` repeats the library checks
right before loading, on every path that loads a library from disk (the session's too).

An artifact is native code: these checks catch accidents and confine the files, but
the manifest carries its own hashes, so only load artifacts you trust.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import CompileError
from ..importer.op_graph import IndexLimits
from ..contracts.precision import Precision
from ..errors import PrecisionError
from ..kernels.options import KernelOptions
from ..partitioner.plan import Plan
from .artifact import (MANIFEST, PLAN, READS, SCHEMA, VERSION, CompiledModel, PartitionArtifact, TensorSpec,
                       check_order, confined, sha256_of)
from .bucketed import SCHEMA as BUCKETS_SCHEMA
from .bucketed import BucketedModel, is_bucketed_manifest, load_bucketed
from .data_parallel import SCHEMA as DATA_PARALLEL_SCHEMA
from .data_parallel import DataParallelModel, is_data_parallel_manifest, load_data_parallel
from .build import load_library
from .elf import check_bounds

log = logging.getLogger(__name__)

RECOMPILE = "recompile it with `partition MODEL -o DIR --compile`"


KINDS = {SCHEMA: "compiled", BUCKETS_SCHEMA: "bucketed", DATA_PARALLEL_SCHEMA: "data-parallel"}  # schema -> kind


def artifact_kind(directory) -> str:
    """What ``directory`` holds, from its manifest's schema alone (no library read):
    ``"compiled"`` (one artifact), ``"bucketed"`` (one per shape bucket) or
    ``"data-parallel"`` (a GPU side and a CPU side).  CompileError for a missing or
    unreadable manifest, or any other schema."""
    path = Path(directory) / MANIFEST
    data = _read_json(path, what="manifest")
    if is_bucketed_manifest(data):
        return "bucketed"
    if is_data_parallel_manifest(data):
        return "data-parallel"
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        return "compiled"
    found = data.get("schema") if isinstance(data, dict) else type(data).__name__
    raise CompileError(f"{path} is not a hetpart compiled model (schema {found!r}; expected one of "
                       f"{', '.join(map(repr, KINDS))}); {RECOMPILE}")


def load_compiled(directory, *, load_modules: bool = True) -> CompiledModel | BucketedModel | DataParallelModel:
    """The :class:`CompiledModel` saved in ``directory`` (a :class:`~.bucketed.BucketedModel`
    when it holds one artifact per shape bucket, a
    :class:`~.data_parallel.DataParallelModel` when it holds a data-parallel split's two
    sides; each artifact loaded with these same checks).  Any other directory is a
    CompileError (:func:`artifact_kind`).

    With ``load_modules=False`` the files are checked but no library is loaded
    (``module`` stays None), e.g. to inspect a CUDA artifact on a machine without a GPU.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise CompileError(f"load_compiled takes the directory a compiled model was saved to (compiled.save(DIR), "
                           f"`partition MODEL -o DIR --compile`), got {type(directory).__name__}")
    root = Path(directory)
    kind = artifact_kind(root)
    if kind == "bucketed":
        return load_bucketed(root, load_compiled, load_modules=load_modules)
    if kind == "data-parallel":
        return load_data_parallel(root, load_compiled, load_modules=load_modules)
    manifest = read_manifest(root)
    plan = _read_plan(root)
    try:
        parts = [PartitionArtifact.from_json(p) for p in manifest["partitions"]]
        model = CompiledModel(
            plan=plan,
            partitions=parts,
            inputs=[TensorSpec.from_json(t) for t in manifest["inputs"]],
            outputs=[TensorSpec.from_json(t) for t in manifest["outputs"]],
            directory=root,
            compile_seconds=float(manifest.get("compile_seconds", 0.0)),
            model=manifest.get("model", ""),
            targets=manifest.get("targets", {}),
            simulated=bool(manifest.get("simulated", False)),
            kernel_options=KernelOptions.from_json(manifest.get("kernel_options")),
            precision=Precision.from_json(manifest.get("precision")),
            output_names=[str(n) for n in manifest.get("output_names", [])],
            index_limits={str(k): IndexLimits.from_json(v) for k, v in manifest.get("index_limits", {}).items()},
            external_min_bytes=_optional_int(manifest.get("external_min_bytes")),
            conv_block=_optional_int(manifest.get("conv_block")),
        )
        if model.output_names and len(model.output_names) != len(model.outputs):
            raise ValueError(f"{len(model.output_names)} output names for {len(model.outputs)} outputs")
    except (KeyError, TypeError, ValueError, AttributeError, PrecisionError) as exc:
        raise CompileError(f"{root / MANIFEST} is malformed ({type(exc).__name__}: {exc}); {RECOMPILE}") from exc
    check_order(model, str(root / MANIFEST))
    for p in parts:
        if p.weights is not None:
            check_weights(model, p)
        if p.external is not None:
            check_weights(model, p, external=True)
        if load_modules:
            p.module = load_checked(root, p)
        else:
            _check_library(model.library_path(p), p)
    return model


def load_checked(root: Path, p: PartitionArtifact):
    """Partition ``p``'s library in ``root``, loaded right after checking it (inside
    ``root``, sha256 as the manifest says, ELF bounds); None for CUDA code on a
    machine without a GPU (see :func:`~.build.load_library`)."""
    path = confined(Path(root), p.library, f"library of partition '{p.name}'")
    _check_library(path, p)
    return load_library(path, p.device_type)


def check_weights(model: CompiledModel, p: PartitionArtifact, external: bool = False) -> Path:
    """The path of partition ``p``'s streamed-weights file (its external-weights file
    when ``external``), checked: inside the artifact directory, present, of the
    manifest's size and sha256."""
    path = model.weights_path(p, external)
    wf = p.external if external else p.weights
    if not path.is_file():
        raise CompileError(f"weights file {path} of partition '{p.name}' is missing; {RECOMPILE}")
    size = path.stat().st_size
    if size != wf.nbytes or sha256_of(path) != wf.sha256:
        raise CompileError(f"weights file {path} of partition '{p.name}' is corrupt or was modified "
                           f"({size} bytes, manifest says {wf.nbytes}; or its sha256 differs); {RECOMPILE}")
    return path


def _optional_int(value) -> int | None:
    return None if value is None else int(value)


def read_manifest(root: Path) -> dict:
    """The checked manifest of the artifact in ``root`` (schema, version, TVM version)."""
    path = root / MANIFEST
    data = _read_json(path, what="manifest")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise CompileError(f"{path} is not a hetpart compiled model (schema {found!r}, expected {SCHEMA!r})")
    if data.get("version") not in READS:
        raise CompileError(
            f"{path} has artifact format version {data.get('version')!r}; this hetpart reads versions "
            f"{', '.join(map(str, READS))} (writes {VERSION}); {RECOMPILE}"
        )
    _check_versions(path, data)
    return data


def _check_versions(path: Path, data: dict) -> None:
    import tvm

    from .. import __version__

    if data.get("tvm") != tvm.__version__:
        raise CompileError(
            f"{path} was compiled with TVM {data.get('tvm')}, but this is TVM {tvm.__version__}; "
            f"its libraries only run with the TVM that built them: {RECOMPILE}"
        )
    if data.get("hetpart") != __version__:
        # The format is fixed by "version" above; a different hetpart can still read it.
        log.warning("%s was compiled by hetpart %s; this is hetpart %s", path, data.get("hetpart"), __version__)


def _check_library(path: Path, p: PartitionArtifact) -> None:
    if not path.is_file():
        raise CompileError(f"library {path} of partition '{p.name}' is missing; {RECOMPILE}")
    digest = sha256_of(path)
    if digest != p.sha256:
        raise CompileError(
            f"library {path} of partition '{p.name}' is corrupt or was modified "
            f"(sha256 {digest[:12]}…, manifest says {str(p.sha256)[:12]}…); {RECOMPILE}"
        )
    check_bounds(path)


def _read_plan(root: Path) -> Plan:
    """The plan in ``plan.json``."""
    data = _read_json(root / PLAN, what="plan")
    try:
        return Plan.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CompileError(f"plan {root / PLAN} is malformed ({type(exc).__name__}: {exc}); {RECOMPILE}") from exc


def _missing_hint(path: Path) -> str:
    """Why ``path`` (a file of an artifact) is not there, where the directory says more:
    it does not exist, it is a file (an artifact's file named instead of its directory),
    or it holds only a plan (``partition MODEL -o DIR`` without ``--compile``)."""
    where = path.parent
    if where.is_file():
        return (f" ({where} is a file; load_compiled and Session take the directory a compiled model was saved to, "
                f"e.g. {where.parent})")
    if not where.is_dir():
        return f" (the directory {where} does not exist)"
    if path.name != PLAN and (where / PLAN).is_file():
        return f" (it holds a plan ({PLAN}) but no compiled artifact: it was written without --compile)"
    return ""


def _read_json(path: Path, *, what: str):
    if not path.is_file():
        hint = _missing_hint(path)
        raise CompileError(f"no compiled model at {path.parent}: its {what} {path.name} is missing{hint}; {RECOMPILE}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompileError(f"{what} {path} is unreadable or not JSON ({exc}); {RECOMPILE}") from exc
