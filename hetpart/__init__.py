"""hetpart: run an ONNX model on one machine's CPU and CUDA GPU together.

The package is laid out in pipeline order, one subpackage per stage:

    importer     ONNX file -> op graph of fused TVM kernels        (hetpart.load)
    costmodel    per-kernel microbenchmarks, transfer model, predictor
    partitioner  op graph + costs -> Plan (a device per kernel)   (hetpart.partition)
    compiler     Plan -> one TVM module per partition, on disk     (hetpart.compile)
    runtime      runs the partitions on CPU and CUDA streams       (hetpart.Session)

``kernels`` (schedule rules, per-target build), ``targets`` (device registry),
``models`` (the built-in zoo), ``cpu_cores`` (CPU thread-pool size) and ``errors``
serve every stage.  Public names are
imported lazily so ``import hetpart`` stays cheap and a stage's import cost is paid
only when it is used.
"""

from __future__ import annotations

import importlib

from .cpu_cores import set_default_pool_size
from .errors import (
    BadRequestError,
    BatchError,
    CompileError,
    HetpartError,
    InternalError,
    ModelLoadError,
    NoBatchDimError,
    NoGPUError,
    PlanError,
    PrecisionError,
    ProfileError,
    QuotaExceededError,
    RuntimeFailure,
    ServerClosedError,
    ServingError,
    ShapeError,
    StateError,
    SymbolicDimsError,
    TargetError,
    TraceError,
    UnknownModelError,
    UnsupportedOpsError,
)

# Every CPU kernel uses one thread per physical core (TVM alone would use half the
# logical CPUs); TVM_NUM_THREADS set by the user wins.  See hetpart.cpu_cores.
set_default_pool_size()

__version__ = "0.1.0"

_PUBLIC = {
    "load": "hetpart.importer",
    "OpGraph": "hetpart.importer",
    "partition": "hetpart.partitioner",
    "Plan": "hetpart.partitioner",
    "compile": "hetpart.compiler",
    "compile_buckets": "hetpart.buckets",
    "bucket_batches": "hetpart.buckets",
    "nms_batch_columns": "hetpart.buckets",
    "partition_data_parallel": "hetpart.data_parallel",
    "compile_data_parallel": "hetpart.data_parallel",
    "DataParallelSession": "hetpart.runtime.data_parallel_session",
    "BucketedModel": "hetpart.compiler",
    "BucketedSession": "hetpart.runtime",
    "load_compiled": "hetpart.compiler",
    "CompiledModel": "hetpart.compiler",
    "Session": "hetpart.runtime",
    "MultiSession": "hetpart.runtime",
    "cuda_available": "hetpart.targets",
    "Precision": "hetpart.contracts.precision",
    "Server": "hetpart.serving",
    "serve": "hetpart.serving",
    **dict.fromkeys(("partition_together", "compile_together", "JointPlan", "JointModel"), "hetpart.together"),
}

_ERRORS = ["HetpartError", "ModelLoadError", "ShapeError", "SymbolicDimsError", "NoBatchDimError", "UnsupportedOpsError",
           "UnknownModelError", "TargetError", "NoGPUError", "PrecisionError", "ProfileError", "PlanError", "CompileError",
           "TraceError", "RuntimeFailure", "QuotaExceededError", "StateError", "ServingError", "BadRequestError",
           "ServerClosedError", "BatchError", "InternalError"]
"""Every exception class of :mod:`hetpart.errors`, importable as ``hetpart.<Name>``."""

__all__ = [*_ERRORS, "__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hetpart' has no attribute '{name}'")
