"""Calling one compiled partition: its library, its Relax VM, DPS or fallback.

A :class:`PartitionRunner` loads the partition's library once and makes one
``VirtualMachine`` for it.  A VM entered from two threads *at the same time* corrupts
itself (TVM_NOTES 4), so :meth:`PartitionRunner.call` holds the runner's lock while
it is inside the VM: the VM is used by one thread at a time, whichever thread that is
(the partition's worker, the simulated stream, or a caller running a run
synchronously, see :mod:`.session`).  One VM, not one per calling thread, also keeps
its workspace (CUDA-graph buffers, pooled allocations) from being made again for
every thread.  A streamed partition built for graphs (``artifact.slot_graphs``) gets one
VM per ring slot instead: a VM's CUDA graphs replay the weight pointers of its first
call, so each VM is only ever called with the views of one slot (checked on every call:
InternalError otherwise).  A partition built with every parameter fixed
(``artifact.static_io``, :func:`hetpart.compiler.extract.static_io_signature`) gets one VM
per distinct set of argument addresses (its input and output buffers, its ring slot's
weights): its graphs replay the pointers of the VM's first call, so a VM is only ever
called with those.  The session meets every set it will use in its capture runs, then
:meth:`PartitionRunner.seal` s the runner; a set met after that raises InternalError
(capturing then would meet other threads' CUDA calls), never a replay of stale pointers.
:meth:`PartitionRunner.call` writes the partition's outputs into the buffers it is given:

* with destination passing (``main_dps(*inputs, *outputs)``) the kernels write them
  in place: zero copies;
* otherwise ``main(*inputs)`` returns new tensors that are copied into the buffers
  (one *staging* copy per output, counted in the run's stats).

A partition with external weights (``artifact.external``) gets them bound once, when
its runner opens (:mod:`.external_weights`: on the CPU the file read once into a buffer
every session of the model shares, one copy into the GPU for a CUDA partition), and passed after every other argument:
``main(*inputs, *weights)``, ``main_dps(*inputs, *outputs, *weights)``.  (A streamed
partition's weights come from the session's ring instead, ``streamed``: after the inputs,
and in ``main_dps`` before the outputs, or after them where ``slot_graphs``.)

An output of data-dependent shape has no buffer (``None`` in ``outputs``): its size
is known only once the partition has run, so the partition always runs through
``main`` (whatever ``artifact.dps`` says) and the tensor the VM allocated *is* the
output, wrapped without a copy.  :meth:`PartitionRunner.call` returns the Buffers
that hold the outputs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..compiler.artifact import DPS_FUNCTION, PartitionArtifact
from ..compiler.loader import load_checked
from ..errors import CompileError, InternalError
from ..targets import amx_tile_permission
from . import cuda_api, external_weights
from .memory import Buffer, is_static, wrap_result
from .stats import RunStats


def load_module(artifact: PartitionArtifact, directory: Path | None):
    """The partition's runtime module: ``artifact.module``, else its library on disk."""
    import tvm

    module = artifact.module
    if module is None:
        if directory is None:
            raise CompileError(f"partition '{artifact.name}' has no loaded module and the model has no directory")
        module = load_checked(Path(directory), artifact)  # the file may have changed since load_compiled
        if module is None:
            raise CompileError(f"partition '{artifact.name}' is CUDA code and no CUDA GPU is usable here")
    if isinstance(module, tvm.runtime.Executable):
        module = module.jit()
    return module


class PartitionRunner:
    """One partition's library and its per-thread VMs."""

    def __init__(self, artifact: PartitionArtifact, directory: Path | None = None):
        import tvm

        self.artifact = artifact
        self._module = load_module(artifact, directory)
        if artifact.device_type != "cuda":  # its int8 matmuls may be AMX code (rules.cpu_int8_matmul)
            amx_tile_permission()
        self._device = tvm.cuda(0) if artifact.device_type == "cuda" else tvm.cpu(0)
        self._vms: dict[int, object] = {}  # ring slot (0 unless slot_graphs) -> its VM
        self._functions: dict[tuple[int, str], object] = {}
        self.slot_graphs = bool(artifact.slot_graphs)
        self._slot_weights: dict[int, int] = {}  # ring slot -> the first weight's address its VM saw
        self.static_io = artifact.static_io
        self._io_vms: dict[tuple, int] = {}  # static_io: argument addresses -> the VM (index) called with them
        self.sealed = False  # static_io: no new set of addresses (no new VM) accepted
        self._lock = threading.Lock()  # held while a thread is inside the VM
        # The compiler says whether the library has main_dps; an output of data-dependent
        # shape cannot be passed in, so such a partition runs through main.
        self.dynamic_outputs = [not is_static(t.shape) for t in artifact.outputs]
        self.dps = bool(artifact.dps) and not any(self.dynamic_outputs)
        self._weights = external_weights.bind(artifact, directory)

    def _vm(self, slot: int = 0):
        """The VM of ring slot ``slot`` (made on first use); call with ``self._lock`` held."""
        vm = self._vms.get(slot)
        if vm is None:
            from tvm import relax

            vm = self._vms[slot] = relax.VirtualMachine(self._module, self._device)
        return vm

    def _function(self, name: str, slot: int = 0):
        """``vm[name]``, looked up once (a lookup per call costs microseconds); lock held."""
        fn = self._functions.get((slot, name))
        if fn is None:
            fn = self._functions[(slot, name)] = self._vm(slot)[name]
        return fn

    def _check_slot(self, slot: int, streamed: list) -> None:
        """A slot's VM replays the weight pointers it captured: InternalError if ``streamed``
        is not where that VM's first call found it (lock held)."""
        if not streamed:
            return
        ptr = int(streamed[0].data_ptr())
        seen = self._slot_weights.setdefault(slot, ptr)
        if seen != ptr:
            raise InternalError(f"partition '{self.artifact.name}': ring slot {slot}'s weights at {ptr:#x}, "
                                f"its CUDA graphs captured {seen:#x}")

    def seal(self) -> None:
        """No new VM from now on (static_io): every set of addresses has met its VM."""
        self.sealed = True

    @property
    def address_sets(self) -> int:
        """How many distinct sets of argument addresses (VMs) a static_io runner has met."""
        return len(self._io_vms)

    def _io_vm(self, slot: int, inputs: list, outputs: list, streamed: list) -> int:
        """The VM index for these arguments (static_io; lock held): one per distinct set of
        addresses, made on first use until :meth:`seal`, InternalError after it."""
        key = (slot, *(int(t.data_ptr()) for t in inputs),
               *((b.ptr for b in outputs) if self.dps else ()),
               int(streamed[0].data_ptr()) if streamed else 0)
        index = self._io_vms.get(key)
        if index is None:
            if self.sealed:
                raise InternalError(
                    f"partition '{self.artifact.name}' (CUDA graphs over its inputs and outputs) called with "
                    f"buffer addresses its session's capture runs never met ({len(self._io_vms)} sets met): "
                    "a graph would replay other buffers")
            index = self._io_vms[key] = len(self._io_vms)
        return index

    def call(self, inputs: list, outputs: list[Buffer | None], stats: RunStats,
             stream_handle: int = 0, streamed: list = (), slot: int = 0) -> list[Buffer]:
        """Run the partition on ``inputs`` (TVM tensors) and, for a streamed partition, its
        weights ``streamed`` (views of ring slot ``slot``), leaving its results in ``outputs``;
        a None output (data-dependent shape) is the tensor the VM returns.  Returns the
        Buffers holding the outputs, in order."""
        slot = slot if self.slot_graphs else 0
        with self._lock:  # one thread at a time inside the VM (and its results)
            if self.static_io:  # the VM of exactly these addresses
                slot = self._io_vm(slot, inputs, outputs, streamed)
            elif self.slot_graphs:
                self._check_slot(slot, streamed)
            if self.dps:
                outs = [b.tensor for b in outputs]
                args = [*inputs, *outs, *streamed] if self.slot_graphs else [*inputs, *streamed, *outs]
                self._function(DPS_FUNCTION, slot)(*args, *self._weights)
                return list(outputs)
            result = self._function(self.artifact.function, slot)(*inputs, *streamed, *self._weights)
            results = [result] if len(outputs) == 1 else list(result)
            held = []
            for spec, buf, value in zip(self.artifact.outputs, outputs, results):
                if buf is None:
                    held.append(wrap_result(value, spec, self.artifact.device))
                    continue
                self._stage(buf, value, stream_handle)
                stats.count("staging")
                held.append(buf)
            return held

    def _stage(self, buf: Buffer, value, stream_handle: int) -> None:
        if buf.side == "cuda" and self.artifact.device_type == "cuda":
            cuda_api.memcpy_async(buf.ptr, int(value.data_ptr()), buf.nbytes, cuda_api.ANY, stream_handle)
        else:
            np.copyto(buf.array, np.from_dlpack(value))

    def close(self) -> None:
        with self._lock:
            self._vms = {}
            self._io_vms = {}
            self._functions = {}
            self._weights = []
        self._module = None
