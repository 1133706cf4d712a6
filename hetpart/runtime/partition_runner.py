"""Calling one compiled partition: its library, its Relax VM, DPS or fallback.

A :class:`PartitionRunner` loads the partition's library once and makes one
``VirtualMachine`` for it.  A VM entered from two threads *at the same time* corrupts
itself (TVM_NOTES 4), so :meth:`PartitionRunner.call` holds the runner's lock while
it is inside the VM: the VM is used by one thread at a time, whichever thread that is
(the partition's worker, the simulated stream, or a caller running a run
synchronously, see :mod:`.session`).  One VM, not one per calling thread, also keeps
its workspace (CUDA-graph buffers, pooled allocations) from being made again for
every thread.  :meth:`PartitionRunner.call` writes the partition's outputs into the
buffers it is given:

* with destination passing (``main_dps(*inputs, *outputs)``) the kernels write them
  in place: zero copies;
* otherwise ``main(*inputs)`` returns new tensors that are copied into the buffers
  (one *staging* copy per output, counted in the run's stats).

A partition with external weights (``artifact.external``) gets them bound once, when
its runner opens (:mod:`.external_weights`: on the CPU the file read once into a buffer
every session of the model shares, one copy into the GPU for a CUDA partition), and passed after every other argument:
``main(*inputs, *weights)``, ``main_dps(*inputs, *outputs, *weights)``.  (A streamed
partition's weights come from the session's ring instead, as part of ``inputs``.)

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
from ..errors import CompileError
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
        self._vm_instance = None
        self._functions: dict[str, object] = {}
        self._lock = threading.Lock()  # held while a thread is inside the VM
        # The compiler says whether the library has main_dps; an output of data-dependent
        # shape cannot be passed in, so such a partition runs through main.
        self.dynamic_outputs = [not is_static(t.shape) for t in artifact.outputs]
        self.dps = bool(artifact.dps) and not any(self.dynamic_outputs)
        self._weights = external_weights.bind(artifact, directory)

    def _vm(self):
        """The partition's VM (made on first use); call with ``self._lock`` held."""
        vm = self._vm_instance
        if vm is None:
            from tvm import relax

            vm = self._vm_instance = relax.VirtualMachine(self._module, self._device)
            self._functions = {}
        return vm

    def _function(self, name: str):
        """``vm[name]``, looked up once (a lookup per call costs microseconds); lock held."""
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = self._vm()[name]
        return fn

    def call(self, inputs: list, outputs: list[Buffer | None], stats: RunStats,
             stream_handle: int = 0) -> list[Buffer]:
        """Run the partition on ``inputs`` (TVM tensors), leaving its results in ``outputs``;
        a None output (data-dependent shape) is the tensor the VM returns.  Returns the
        Buffers holding the outputs, in order."""
        with self._lock:  # one thread at a time inside the VM (and its results)
            self._vm()
            if self.dps:
                self._function(DPS_FUNCTION)(*inputs, *(b.tensor for b in outputs), *self._weights)
                return list(outputs)
            result = self._function(self.artifact.function)(*inputs, *self._weights)
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
            self._vm_instance = None
            self._functions = {}
            self._weights = []
        self._module = None
