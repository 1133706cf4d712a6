"""A model's GPU memory quota as one device arena allocated up front, its buffers carved from it.

Issue 20: several models share one GPU for hours of traffic; each gets its quota
once, when its session opens (one allocation, so other models' churn cannot fragment
it and it cannot be taken away), and every device buffer the session makes comes out
of that arena:

* :class:`Arena`: ``quota`` bytes on the device (one TVM ``cuda:0`` tensor; in
  simulation one page-aligned anonymous host mapping, whose untouched pages cost
  nothing) and a first-fit allocator over it:
  blocks 64-byte aligned, freed blocks coalesced with their free neighbours, so a
  buffer made and dropped run after run (a data-dependent shape) reuses its space.
  A request that does not fit raises :class:`~hetpart.errors.QuotaExceededError`
  naming the model, its quota, what is in use and what was asked.
* :class:`PooledMemory`: a :class:`~.memory.Memory` whose ``device`` and
  ``transient("cuda")`` buffers are views into the arena; pinned host memory and
  mapped views are host memory, outside the quota, and go to the wrapped memory.

What the arena holds: the session's own device buffers (handoff buffers, the weight
ring of streamed partitions, per-run buffers of data-dependent shape).  What it
does not: the resident weights of the CUDA partitions and the intermediates inside
one partition, which TVM's VM allocates itself; the arena is made ``quota -
reserved`` bytes, ``reserved`` being those (:func:`tvm_bytes`), so weights,
intermediates and the session's buffers together stay within the quota.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import mmap
import sys
import threading
import weakref

import numpy as np

from ..compiler.artifact import TensorSpec
from ..errors import QuotaExceededError, RuntimeFailure
from .dlpack import tensor_view
from .memory import ALIGNMENT, Buffer, Memory, _require_static, nbytes_of


# In simulation the arena is host memory mapped without reserving swap: a quota of the
# size of a real GPU's memory (tens of GiB) costs only the pages its buffers use.
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(
    mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)


def _round_up(n: int) -> int:
    return -(-max(n, 1) // ALIGNMENT) * ALIGNMENT


class Arena:
    """``nbytes`` of device memory (``simulated``: host memory) with a first-fit allocator.

    ``alloc(n) -> (offset, token)`` and ``free(offset, token)`` (a stale token -- a
    block freed already, its space handed out again -- frees nothing); ``ptr`` is the
    arena's base address.  :meth:`release` is what a dropped buffer's finaliser calls:
    it only queues the free, done under the lock by the next call, since a finaliser
    may run in the middle of an allocation on the same thread (the garbage collector).
    Invariant: live blocks never overlap and lie inside ``[0, capacity)``; ``in_use`` is
    the sum of their (aligned) sizes."""

    def __init__(self, model: str, nbytes: int, simulated: bool, quota: int | None = None):
        self.model = model
        self.quota = quota if quota is not None else nbytes
        self.capacity = nbytes - nbytes % ALIGNMENT
        self.simulated = simulated
        self._lock = threading.Lock()
        self._free: list[tuple[int, int]] = [(0, self.capacity)] if self.capacity else []  # (offset, size), sorted
        self._live: dict[int, tuple[int, int]] = {}  # offset -> (size, token)
        self._released: collections.deque = collections.deque()  # (offset, token) from finalisers
        self._tokens = itertools.count(1)
        self.high_water = 0
        self._storage, self.ptr = self._allocate(max(self.capacity, ALIGNMENT))

    def _allocate(self, nbytes: int):
        if self.simulated:  # page-aligned, zero, and only the pages carved out are ever touched
            arr = np.frombuffer(mmap.mmap(-1, nbytes, flags=_MAP_FLAGS), dtype=np.uint8)
            return arr, arr.__array_interface__["data"][0]
        import tvm

        from .memory import _oom_or_raise

        spec = TensorSpec(f"'{self.model}' memory quota", (nbytes,), "uint8")
        try:
            t = tvm.runtime.empty((nbytes,), "uint8", tvm.cuda(0))
        except Exception as e:  # noqa: BLE001 - TVM reports OOM as a generic error
            raise _oom_or_raise(e, f"allocating model '{self.model}''s memory quota up front", spec)
        return t, int(t.data_ptr())

    @property
    def in_use(self) -> int:
        with self._lock:
            self._drain()
            return self._in_use()

    def _in_use(self) -> int:
        return sum(size for size, _ in self._live.values())

    def size_of(self, offset: int, token: int) -> int:
        """The size of the live block ``(offset, token)`` (0 when it is free)."""
        with self._lock:
            self._drain()
            size, live = self._live.get(offset, (0, None))
            return size if live == token else 0

    def alloc(self, nbytes: int, what: str) -> tuple[int, int]:
        """``(offset, token)`` of a fresh block of ``nbytes`` (rounded up to 64);
        QuotaExceededError when no free block is that large."""
        size = _round_up(nbytes)
        with self._lock:
            self._drain()
            for i, (off, free) in enumerate(self._free):
                if free >= size:
                    self._free[i:i + 1] = [(off + size, free - size)] if free > size else []
                    token = next(self._tokens)
                    self._live[off] = (size, token)
                    self.high_water = max(self.high_water, self._in_use())
                    return off, token
            in_use = self._in_use()
        raise QuotaExceededError(
            f"model '{self.model}': {what} needs {nbytes} bytes of GPU memory, but its quota of {self.quota} bytes "
            f"({self.capacity} for its own buffers) has {in_use} in use and no free block that large; give the "
            "model a larger quota (partition_together(quotas=...)) or use fewer session slots",
            model=self.model, quota_bytes=self.quota, requested_bytes=nbytes, in_use_bytes=in_use)

    def free(self, offset: int, token: int) -> None:
        """Return the block ``(offset, token)`` and merge it with free neighbours."""
        with self._lock:
            self._drain()
            self._free_locked(offset, token)

    def release(self, offset: int, token: int) -> None:
        """Queue a free (safe from a finaliser, see the class docstring)."""
        self._released.append((offset, token))

    def _drain(self) -> None:
        while self._released:
            self._free_locked(*self._released.popleft())

    def _free_locked(self, offset: int, token: int) -> None:
        size, live = self._live.get(offset, (0, None))
        if live != token:
            return  # freed already (close(), then a late finaliser)
        del self._live[offset]
        i = bisect.bisect(self._free, (offset, 0))
        start, end = offset, offset + size
        if i < len(self._free) and self._free[i][0] == end:
            end += self._free.pop(i)[1]
        if i > 0 and sum(self._free[i - 1]) == start:
            start = self._free.pop(i - 1)[0]
            i -= 1
        self._free.insert(i, (start, end - start))

    def close(self) -> None:
        with self._lock:
            self._live.clear()
            self._released.clear()
            self._free = [(0, self.capacity)] if self.capacity else []
        self._storage = None


class _Block:
    """Owns one block of an arena while any view of it is alive; frees it when dropped."""

    def __init__(self, arena: Arena, offset: int, token: int):
        self.arena, self.offset, self.token = arena, offset, token
        weakref.finalize(self, arena.release, offset, token)


class PooledMemory(Memory):
    """See the module docstring; ``base`` provides the host-side memory."""

    def __init__(self, base: Memory, model: str, quota: int, reserved: int = 0):
        if reserved > quota:
            raise QuotaExceededError(
                f"model '{model}': its resident weights and partition intermediates need {reserved} bytes of GPU "
                f"memory, over its quota of "
                f"{quota} bytes; give it a larger quota or re-plan it under this one",
                model=model, quota_bytes=quota, requested_bytes=reserved, in_use_bytes=0)
        self.base = base
        self.simulated = base.simulated
        self.model = model
        self.quota = quota
        self.reserved = reserved
        self.arena = Arena(model, quota - reserved, base.simulated, quota)
        self._held: list[_Block] = []

    def _carve(self, spec: TensorSpec, keep: bool) -> Buffer:
        _require_static(spec, "carve a device buffer from the quota")
        nbytes = nbytes_of(spec.shape, spec.dtype)
        offset, token = self.arena.alloc(nbytes, f"tensor '{spec.name}' {list(spec.shape)} {spec.dtype}")
        block = _Block(self.arena, offset, token)
        if keep:
            self._held.append(block)
        ptr = self.arena.ptr + offset
        if self.simulated:
            raw = self.arena._storage[offset:offset + nbytes]
            arr = raw.view(spec.dtype).reshape(tuple(int(d) for d in spec.shape))
            arr.fill(0)
            holder = _View(arr, block)
            return Buffer(spec, "cuda", tensor_view(ptr, spec.shape, spec.dtype, owner=holder), ptr, arr)
        holder = _View(None, block)
        return Buffer(spec, "cuda", tensor_view(ptr, spec.shape, spec.dtype, device="cuda", owner=holder), ptr)

    def pinned(self, spec: TensorSpec) -> Buffer:
        return self.base.pinned(spec)

    def device(self, spec: TensorSpec) -> Buffer:
        return self._carve(spec, keep=True)

    def mapped(self, host: Buffer) -> Buffer:
        return self.base.mapped(host)

    def transient(self, spec: TensorSpec, side: str) -> Buffer:
        return self._carve(spec, keep=False) if side == "cuda" else self.base.transient(spec, side)

    def close(self) -> None:
        self._held.clear()
        self.arena.close()
        self.base.close()

    @property
    def live_bytes(self) -> int:
        return self.base.live_bytes + sum(self.arena.size_of(b.offset, b.token) for b in self._held)

    @property
    def in_use(self) -> int:
        """Bytes of the arena carved out now (session buffers and live per-run buffers)."""
        return self.arena.in_use


class _View:
    """What a carved view keeps alive: its block (and in simulation its numpy view)."""

    def __init__(self, array, block: _Block):
        self.array, self.block = array, block


def reserved_bytes(compiled) -> int:
    """What TVM allocates itself for ``compiled``'s CUDA partitions, not the session:
    :func:`tvm_bytes` of its plan."""
    return tvm_bytes(compiled.plan)


def tvm_bytes(plan) -> int:
    """The GPU memory TVM's VMs take for ``plan``'s CUDA partitions: their resident
    weights, and every tensor made and read only inside one of them (an upper bound:
    TVM's memory planning may reuse).  From the op graph when the plan carries it,
    else the plan's predicted parameters (0 when it predicts none)."""
    graph = getattr(plan, "graph", None)
    if graph is None:
        gpu = (getattr(plan, "predicted", None) or {}).get("gpu_memory") or {}
        return int(gpu.get("params", 0))
    cuda = [p for p in plan.partitions if p.device == "cuda"]
    weights = sum(graph.kernels[k].param_bytes for p in cuda if p.weights == "resident" for k in p.kernels)
    inside = 0
    for p in cuda:
        members, crossing = set(p.kernels), set(p.inputs) | set(p.outputs)
        inside += sum(graph.tensors[t].nbytes for k in p.kernels for t in graph.kernels[k].outputs
                      if t not in crossing and all(c in members for c in graph.tensors[t].consumers))
    return weights + inside


def check_quota(model: str, quota) -> int:
    """``quota`` as bytes, or RuntimeFailure naming the model."""
    if not isinstance(quota, (int, np.integer)) or isinstance(quota, bool) or quota < 0:
        raise RuntimeFailure(f"model '{model}': a memory quota is a number of bytes >= 0, got {quota!r}")
    return int(quota)
