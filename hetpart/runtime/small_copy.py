"""Small CPU->GPU handoffs copied by a GPU kernel, not the copy engine (issue 19).

A CUDA partition entered from a CPU one gets its inputs (8 KB activations on
llama_decode) by one ``cudaMemcpyAsync`` each on the compute stream
(:func:`.executor._to_gpu`).  The GPU's host-to-device copy engine serves submitted
copies in submission order across streams (device step 120, H100): such a copy waits
until a 40-90 MB weight refill submitted before it on the copy stream has landed, ~1.6 ms
a token on llama_decode at 1/2 (bench/results/capped-decode-gap-s47.md, section 2).

With :data:`SMALL_H2D_BY_KERNEL` on, a CPU->GPU crossing of at most
:data:`SMALL_H2D_KERNEL_BYTES` is copied instead by one small kernel on the compute
stream: its threads load the pinned host buffer through its mapped device pointer (the
handoff's pinned buffers are allocated mapped, :meth:`.memory.CudaMemory.pinned`) and
store the device buffer.  SM loads over PCIe do not queue behind the copy engine.  The
kernel reads each byte once (unlike the ``"mapped"`` handoff mode, where every thread
block of the consuming kernels read the input over the bus: 292 us against 61 for a copy,
bench/results/capped-copy-to-gpu-nvidia-h100.md), and writes the same device buffer a
copy would, so the consumers are unchanged.

The kernel is a TVM prim_func (``dst[i] = src[i]`` over a symbolic length, 256 threads a
block), built once per process per word type: ``uint32`` words when the size and both
addresses are multiples of 4, else bytes.  In simulation (no GPU) the same copy is built
for the CPU (a plain loop) and runs on the simulated stream's thread, so its bytes are
checked in CI.

Invariant: the device buffer holds exactly the host buffer's bytes after the kernel, as
after one copy (a copy of the same bytes; the tests compare bit for bit).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import InternalError
from .dlpack import tensor_view
from .memory import Buffer

SMALL_H2D_BY_KERNEL = False
"""Copy a static CPU->GPU crossing of at most :data:`SMALL_H2D_KERNEL_BYTES` with a copy
kernel reading mapped host memory (read when a session allocates its handoff slots,
:meth:`.handoff.Slot.allocate`).  Off: device step 123 (session 48, H100,
bench/results/copy-queue-nvidia-h100.md) found the kernel's small copies no longer wait
for the refill (0 of 20, the refill's time unchanged; a copy waited 20 of 20) but
llama_decode 1/2 measured 1.016x *without* it (21.49 vs 21.15 ms): in today's runs the
input copies no longer queue behind a refill (17-39 us each in the traces), so there
is nothing left for it to win.  Costs one kernel launch (~3-5 us host)
where the copy cost one ``cudaMemcpyAsync``, and the kernel's PCIe read latency (~1-2 us
for 8 KB, one wave of loads) on the device."""

SMALL_H2D_KERNEL_BYTES = 64 << 10
"""The largest crossing copied by the kernel: 8 KB inputs are what step 119's trace saw
waiting; at 64 KiB one wave of 256-thread blocks (64 of them, one word a thread) still
fits an H100's SMs, while a copy engine transfer of that size takes ~3 us anyway."""

THREADS = 256  # a block's threads: one word each


def uses_kernel(nbytes: int | None, home: str, mode: str | None, dynamic: bool) -> bool:
    """Whether a crossing is copied by the kernel: the switch on, produced on the CPU,
    copied (mode ``"copy"``; a mapped one has no copy), of static shape (a preallocated
    pinned buffer, which is mapped) and at most :data:`SMALL_H2D_KERNEL_BYTES`."""
    return (SMALL_H2D_BY_KERNEL and home == "cpu" and mode == "copy" and not dynamic
            and nbytes is not None and 0 < nbytes <= SMALL_H2D_KERNEL_BYTES)


def word_dtype(nbytes: int, *ptrs: int) -> str:
    """``"uint32"`` when ``nbytes`` and every pointer are multiples of 4, else ``"uint8"``."""
    return "uint32" if nbytes % 4 == 0 and all(p % 4 == 0 for p in ptrs) else "uint8"


def copy_func(dtype: str, gpu: bool):
    """The prim_func ``copy(src, dst)``: ``dst[i] = src[i]`` for ``i < n`` (``n`` symbolic),
    ``dtype`` elements; ``gpu``: blocks of :data:`THREADS` threads, one element each."""
    import tvm
    from tvm import te

    n = te.var("n", "int64")
    src = te.placeholder((n,), dtype, name="src")
    dst = te.compute((n,), lambda i: src[i], name="dst")
    func = te.create_prim_func([src, dst]).with_attr("global_symbol", "copy")
    if not gpu:
        return func
    sch = tvm.s_tir.Schedule(func)
    (i,) = sch.get_loops(sch.get_sblock("dst"))
    block, thread = sch.split(i, [None, THREADS])
    sch.bind(block, "blockIdx.x")
    sch.bind(thread, "threadIdx.x")
    return sch.mod["main"]


_BUILT: dict[tuple[str, str], Any] = {}
_BUILD_LOCK = threading.Lock()


def copy_kernel(dtype: str, device: str):
    """The built ``copy`` function for ``device`` (``"cuda"``: the local GPU; ``"cpu"``:
    simulation), once per process per (dtype, device)."""
    key = (dtype, device)
    fn = _BUILT.get(key)
    if fn is None:
        with _BUILD_LOCK:
            fn = _BUILT.get(key)
            if fn is None:
                import tvm

                if device == "cuda":
                    from ..targets import cuda_tvm_target

                    target = cuda_tvm_target()
                elif device == "cpu":
                    target = tvm.target.Target({"kind": "llvm"})
                else:
                    raise InternalError(f"a copy kernel for device '{device}'")
                lib = tvm.compile(tvm.IRModule({"copy": copy_func(dtype, device == "cuda")}), target=target)
                fn = _BUILT[key] = lib["copy"]
    return fn


@dataclass
class KernelCopy:
    """One crossing's copy kernel, ready to launch: flat views of the mapped host buffer
    and of the device buffer, and the built function.  Calling it launches the kernel
    on the calling thread's current stream (:meth:`.streams.CudaStream.launch` makes it
    the session's; a simulated stream runs it on its thread)."""

    nbytes: int
    dtype: str
    _fn: Any = field(repr=False)
    _src: Any = field(repr=False)
    _dst: Any = field(repr=False)

    def __call__(self) -> None:
        self._fn(self._src, self._dst)

    def release(self) -> None:
        """Drop the views (the session's leak check counts them)."""
        self._src = self._dst = None


def prepare(dst: Buffer, mapped_src: Buffer, device: str) -> KernelCopy:
    """The kernel copy of ``mapped_src`` (a pinned host buffer's device-side view,
    :meth:`.memory.Memory.mapped`) into ``dst`` (a device buffer of at least as many
    bytes); ``device`` ``"cuda"`` or ``"cpu"`` (simulation: both are host memory)."""
    nbytes = mapped_src.nbytes
    if dst.nbytes < nbytes:
        raise InternalError(f"a kernel copy of {nbytes} bytes into a buffer of {dst.nbytes}")
    dtype = word_dtype(nbytes, dst.ptr, mapped_src.ptr)
    count = nbytes // (4 if dtype == "uint32" else 1)
    src = tensor_view(mapped_src.ptr, (count,), dtype, device=device, owner=mapped_src)
    out = tensor_view(dst.ptr, (count,), dtype, device=device, owner=dst)
    return KernelCopy(nbytes, dtype, copy_kernel(dtype, device), src, out)
