"""Compile stage: a plan -> one TVM library per partition -> an artifact directory.

Modules in pipeline order:

    extract   cut the fused Relax module into one standalone IRModule per partition
              (``main`` and, where possible, destination-passing ``main_dps``)
    build     build each partition for its device with :func:`hetpart.kernels.build`,
              in parallel, into a staging directory
    artifact  the :class:`CompiledModel` and its manifest; ``save(dir)``
    loader    ``load_compiled(dir)``: read back, checking versions and hashes

Usage::

    compiled = hetpart.compile(plan, simulate=True)     # or cuda_arch="sm_90"
    compiled.save("out/")
    compiled = hetpart.load_compiled("out/")
"""

from .artifact import DPS_FUNCTION, MAIN_FUNCTION, CompiledModel, PartitionArtifact, TensorSpec
from .bucketed import Bucket, BucketedModel
from .build import LibraryCache, compile
from .extract import PartitionProgram, extract, extract_partitions
from .loader import load_compiled

__all__ = [
    "Bucket",
    "BucketedModel",
    "DPS_FUNCTION",
    "LibraryCache",
    "MAIN_FUNCTION",
    "CompiledModel",
    "PartitionArtifact",
    "PartitionProgram",
    "TensorSpec",
    "compile",
    "extract",
    "extract_partitions",
    "load_compiled",
]
