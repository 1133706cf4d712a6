"""A partition's external weights (:mod:`hetpart.compiler.external`), bound once when its runner opens.

In: a :class:`~hetpart.compiler.artifact.PartitionArtifact` whose ``external`` names a
weights file of the artifact directory, and where the partition runs.  Out: one TVM
tensor per weight, in parameter order, which :class:`~.partition_runner.PartitionRunner`
passes after every other argument on each call.

* CPU partitions (and simulated CUDA ones): the file is memory-mapped copy-on-write
  and each tensor is a view of the mapping at its offset -- no byte is copied or read
  before a kernel touches it; the pages are the page cache's, shared by every session
  of the model (and every process) that maps the same file.
* CUDA partitions: one device buffer of the file's size, filled by one host-to-device
  copy straight from the mapping, then views at the offsets; the mapping is dropped,
  so no host copy stays (an embedded executable keeps its constants on the host for
  as long as the library is loaded).  Allocated by TVM outside the session's quota
  arena, where the VM put the constants it uploaded: :func:`hetpart.runtime.pool.reserved_bytes`
  counts them the same way.

Invariant: the views keep their owner (the mapping, or the device buffer) alive for as
long as TVM holds them; the offsets are multiples of 64 bytes (what TVM's kernels assume).
The file's size and sha256 were checked when the artifact was loaded
(:func:`hetpart.compiler.loader.check_weights`); its size is checked again here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compiler.artifact import PartitionArtifact, confined
from ..errors import CompileError
from .dlpack import tensor_view


def bind(artifact: PartitionArtifact, directory: Path | None) -> list:
    """The partition's external weights as tensors where it runs ([] when it has none)."""
    wf = artifact.external
    if wf is None:
        return []
    if directory is None:
        raise CompileError(f"partition '{artifact.name}' has external weights but the model has no directory")
    path = confined(Path(directory), wf.file, f"external weights of partition '{artifact.name}'")
    host = _mapped(path, wf.nbytes, artifact.name)
    if artifact.device_type != "cuda":
        base = host.ctypes.data
        return [tensor_view(base + t.offset, t.shape, t.dtype, device="cpu", owner=host) for t in wf.tensors]
    import tvm

    device = tvm.runtime.empty((max(wf.nbytes, 1),), "uint8", tvm.cuda(0))
    if wf.nbytes:
        device.copyfrom(host)  # one copy, from the mapping (pageable) into the device buffer
    del host
    base = int(device.data_ptr())
    return [tensor_view(base + t.offset, t.shape, t.dtype, device="cuda", owner=device) for t in wf.tensors]


def _mapped(path: Path, nbytes: int, partition: str) -> np.ndarray:
    """``path`` mapped copy-on-write as ``nbytes`` uint8 (checked: the file has exactly that size)."""
    try:
        size = path.stat().st_size
        if size != nbytes:
            raise CompileError(f"weights file {path} of partition '{partition}' has {size} bytes, the manifest "
                               f"says {nbytes}; recompile the model")
        return np.memmap(path, dtype=np.uint8, mode="c") if nbytes else np.zeros(0, np.uint8)
    except OSError as exc:
        raise CompileError(f"cannot map the weights file {path} of partition '{partition}': {exc}") from exc


__all__ = ["bind"]
