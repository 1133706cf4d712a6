"""A partition's external weights (:mod:`hetpart.compiler.external`), bound once when its runner opens.

In: a :class:`~hetpart.compiler.artifact.PartitionArtifact` whose ``external`` names a
weights file of the artifact directory, and where the partition runs.  Out: one TVM
tensor per weight, in parameter order, which :class:`~.partition_runner.PartitionRunner`
passes after every other argument on each call.

* CPU partitions (and simulated CUDA ones): the file is read once into one anonymous
  buffer, 2 MiB aligned and advised for transparent huge pages, and each tensor is a
  view of it at its offset.  The buffer is kept on the artifact
  (``PartitionArtifact.host_weights``), so every session of the loaded model shares
  it, as VMs shared an embedded executable's constants: one copy in memory, where
  loading an embedded library made four (its blob mapped, copied into a string, into
  ``Bytes``, into each constant; ``tools/external_weights_ab.py``).  Not a file
  mapping: page-cache pages are 4 KiB, and a GEMV streaming 1 GiB of weights ran
  8-20 % slower from one (min 66 vs 61 ms, and 96 vs 77 ms under more load; 8
  interleaved rounds each, 2-core EPYC) -- the TLB misses of 4 KiB pages, where the
  private anonymous buffer gets 2 MiB ones (``AnonHugePages`` 1 GiB).
* CUDA partitions: the file is mapped, one device buffer of its size is filled by one
  host-to-device copy straight from the mapping, and the tensors are views of it; the
  mapping is dropped, so no host copy stays (an embedded executable kept its
  constants on the host for as long as the library was loaded).  Allocated by TVM
  outside the session's quota arena, where the VM put the constants it uploaded:
  :func:`hetpart.runtime.pool.reserved_bytes` counts them the same way.  One device
  copy per runner (session), as each VM uploaded its own constants.
* mapped CUDA partitions (``artifact.mapped``; a plan's ``weights="mapped"``): the file is
  read once into page-locked host memory allocated mapped (``cudaHostAlloc``), and the
  tensors are ``cuda`` views at its mapped device pointer: the kernels read the weights in
  place over PCIe on every call, nothing is copied to the GPU or held there.  One pinned
  buffer per runner, freed when the last view goes (:class:`_PinnedHost`).  Simulated, a
  mapped partition runs on the CPU and binds as any CPU partition (a mapped view there is
  the host memory itself, as :class:`hetpart.runtime.memory.SimulatedMemory` has it).

Invariant: the views keep their owner (the host buffer, or the device buffer) alive for
as long as TVM holds them; the offsets are multiples of 64 bytes (what TVM's kernels
assume).  The file's size and sha256 were checked when the artifact was loaded
(:func:`hetpart.compiler.loader.check_weights`); its size is checked again here.
"""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

import numpy as np

from ..compiler.artifact import PartitionArtifact, confined
from ..errors import CompileError
from .dlpack import tensor_view

HUGE_PAGE = 2 << 20
_CHUNK = 256 << 20  # bytes per read() (Linux returns at most ~2 GiB per call)
_LOCK = threading.Lock()  # two sessions opening on one model read the file once


def bind(artifact: PartitionArtifact, directory: Path | None) -> list:
    """The partition's external weights as tensors where it runs ([] when it has none)."""
    wf = artifact.external
    if wf is None:
        return []
    if directory is None:
        raise CompileError(f"partition '{artifact.name}' has external weights but the model has no directory")
    path = confined(Path(directory), wf.file, f"external weights of partition '{artifact.name}'")
    if artifact.device_type != "cuda":
        with _LOCK:
            if artifact.host_weights is None:
                artifact.host_weights = _read(path, wf.nbytes, artifact.name)
            host = artifact.host_weights
        base = host.ctypes.data
        return [tensor_view(base + t.offset, t.shape, t.dtype, device="cpu", owner=host) for t in wf.tensors]
    if artifact.mapped:
        host = _PinnedHost(path, wf.nbytes, artifact.name)
        return [tensor_view(host.device_ptr + t.offset, t.shape, t.dtype, device="cuda", owner=host)
                for t in wf.tensors]
    import tvm

    mapped = _mapped(path, wf.nbytes, artifact.name)
    device = tvm.runtime.empty((max(wf.nbytes, 1),), "uint8", tvm.cuda(0))
    if wf.nbytes:
        device.copyfrom(mapped)  # one copy, from the mapping (pageable) into the device buffer
    del mapped
    base = int(device.data_ptr())
    return [tensor_view(base + t.offset, t.shape, t.dtype, device="cuda", owner=device) for t in wf.tensors]


class _PinnedHost:
    """A weights file read into mapped page-locked host memory (``device_ptr``: the address
    the GPU reads it at); the memory is freed when this object goes (its views own it)."""

    def __init__(self, path: Path, nbytes: int, partition: str):
        import ctypes

        from . import cuda_api

        self._free = cuda_api.host_free
        self.ptr = cuda_api.host_alloc(max(nbytes, 1), mapped=True)
        try:
            view = memoryview((ctypes.c_uint8 * max(nbytes, 1)).from_address(self.ptr)).cast("B")[:nbytes]
            read_exactly(path, view, partition)
            self.device_ptr = cuda_api.host_device_pointer(self.ptr)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._free(ptr)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the CUDA runtime may be gone
            pass


def _read(path: Path, nbytes: int, partition: str) -> np.ndarray:
    """``path``'s ``nbytes`` bytes in a fresh anonymous buffer, 2 MiB aligned, huge pages advised."""
    # private: a shared anonymous mapping is shmem, whose huge pages are off by default
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(region, np.uint8)
    start = (-whole.ctypes.data) % HUGE_PAGE
    host = whole[start:start + nbytes]
    read_exactly(path, memoryview(host), partition)
    return host


def read_exactly(path: Path, view: memoryview, partition: str) -> None:
    """Fill ``view`` (bytes) with the weights file ``path`` of ``partition``, which must
    hold exactly ``len(view)`` bytes (CompileError naming both else, or when it cannot be
    read).  Read in pieces of at most ``_CHUNK``: one read returns at most ~2 GiB on
    Linux, and any read may return fewer bytes than asked.  Also what a streamed
    partition's pinned weights are read with (:mod:`.weight_stream`)."""
    nbytes = len(view)
    try:
        with open(path, "rb", buffering=0) as f:
            _check_size(path, f, nbytes, partition)
            done = 0
            while done < nbytes:
                got = f.readinto(view[done:done + _CHUNK])
                if not got:
                    raise CompileError(f"weights file {path} of partition '{partition}' ended after {done} of "
                                       f"{nbytes} bytes; recompile the model")
                done += got
    except OSError as exc:
        raise CompileError(f"cannot read the weights file {path} of partition '{partition}': {exc}") from exc


def _mapped(path: Path, nbytes: int, partition: str) -> np.ndarray:
    """``path`` mapped read-only as ``nbytes`` uint8 (checked: the file has exactly that size)."""
    try:
        with open(path, "rb") as f:
            _check_size(path, f, nbytes, partition)
        return np.memmap(path, dtype=np.uint8, mode="r") if nbytes else np.zeros(0, np.uint8)
    except OSError as exc:
        raise CompileError(f"cannot map the weights file {path} of partition '{partition}': {exc}") from exc


def _check_size(path: Path, f, nbytes: int, partition: str) -> None:
    import os

    size = os.fstat(f.fileno()).st_size
    if size != nbytes:
        raise CompileError(f"weights file {path} of partition '{partition}' has {size} bytes, the manifest says "
                           f"{nbytes}; recompile the model")


__all__ = ["bind", "read_exactly"]
