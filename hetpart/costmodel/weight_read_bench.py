"""How fast a CPU kernel reads weights that are not in any cache (issue 19).

In: a CPU target and device.  Out: :class:`WeightReadSample` (bytes per second).

Every kernel timing in a profile is taken hot: the microbenchmark calls one kernel
over and over, so its weights stay in the last-level cache (the H200 host's 16.8 MB
GEMV timed at 229 GB/s, its 262 MB LM head at 159 GB/s, on a host whose memory reads
at ~90-100 GB/s).  In a model whose CPU weights exceed that cache -- every model bigger
than the GPU -- each weight comes from memory once per run, so the cost model prices
such kernels no faster than their weight bytes at a cold-read bandwidth
(:meth:`~.cost_model.CostModel.with_weight_bandwidth`).  Until this module that
bandwidth was a torch sum timed once at the start of the capped benchmark: another
library's code and thread pool, one snapshot, taken before a minutes-long import.  On
the H200 it read 66.4 GB/s in the run whose ORT-style plan then read its 2.34 GB of CPU
weights at >= 100 GB/s, so both memory rules were priced 10-14 ms too high
(bench/results/capped-pricing-nvidia-h200.md).

What is measured is what runs: :func:`gemv_module` is a ``[1, K] @ [K, N]`` float32
matmul built by :func:`hetpart.kernels.build` (the CPU matmul rule, its weight packed
as the compiled model packs it), called on :data:`COPIES` distinct weight tensors of
``K * N * 4`` bytes in turn -- a decode step's chain of GEMVs, each weight read once
per sweep, the sweep (:data:`SWEEP_BYTES`, 1 GiB) several times any last-level
cache.  ``bytes_per_s`` = the sweep's weight bytes / the median sweep time, after one
unrecorded sweep (pages touched, the pool awake).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..errors import CompileError

GEMV_K, GEMV_N = 2048, 8192
"""The GEMV's shape: 64 MiB of float32 weights, a LLaMA-1B MLP projection's size class."""
SWEEP_BYTES = 1 << 30
"""Weight bytes one sweep reads (the copies' total): several times the largest
last-level cache of the hosts measured (the H200 host holds a 262 MB weight partly)."""
SWEEPS = 5


@dataclass(frozen=True)
class WeightReadSample:
    """Seconds of each recorded sweep over ``copies`` weights of ``weight_bytes`` each."""

    sweeps: tuple[float, ...]
    copies: int
    weight_bytes: int

    @property
    def sweep_bytes(self) -> int:
        return self.copies * self.weight_bytes

    @property
    def bytes_per_s(self) -> float:
        """The sweep's weight bytes over its median time."""
        return self.sweep_bytes / float(np.median(self.sweeps))

    def describe(self) -> str:
        gbs = lambda s: self.sweep_bytes / s / 1e9  # noqa: E731
        return (f"{self.copies} weights x {self.weight_bytes / 2**20:.0f} MiB, {len(self.sweeps)} sweeps: median "
                f"{gbs(float(np.median(self.sweeps))):.1f} GB/s (best {gbs(min(self.sweeps)):.1f}, "
                f"worst {gbs(max(self.sweeps)):.1f})")


def gemv_module(k: int = GEMV_K, n: int = GEMV_N) -> tvm.IRModule:
    """``main(x[1, k], w[k, n]) = x @ w`` with ``w`` a weight (``num_input`` 1), so the
    CPU build packs it in ``main_transform_params`` as it packs a model's weights."""
    x = relax.Var("x", relax.TensorType([1, k], "float32"))
    w = relax.Var("w", relax.TensorType([k, n], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(out)
    from ..importer.fusion import fuse

    mod = fuse(bb.get())  # legalised and fused, as the importer hands kernels to the build
    mod["main"] = mod["main"].with_attr("num_input", 1)
    return mod


def build_gemv(target, k: int = GEMV_K, n: int = GEMV_N):
    """The executable of :func:`gemv_module` for ``target`` (the compiler's build)."""
    from .kernel_bench import build_module

    try:
        return build_module(gemv_module(k, n), target)
    except Exception as exc:  # noqa: BLE001 - TVM raises its own types; the caller needs ours
        raise CompileError(f"cannot build the weight-read GEMV for {target.kind.name}: {exc}") from exc


def gemv_operands(ex, dev, sweep_bytes: int, k: int = GEMV_K, n: int = GEMV_N):
    """``(f, x, weights)`` for sweeps of the GEMV ``ex`` on ``dev``: its ``main``, a seeded
    ``[1, k]`` input, and at least two distinct seeded ``[k, n]`` weights covering
    ``sweep_bytes``, each packed as the compiled model packs it (a list of arguments)."""
    from .kernel_bench import TRANSFORM_PARAMS, _has_function

    vm = relax.VirtualMachine(ex, dev)
    copies = max(2, -(-int(sweep_bytes) // (k * n * 4)))
    rng = np.random.default_rng(0)
    x = tvm.runtime.tensor(rng.uniform(0.1, 1.0, (1, k)).astype("float32"), dev)
    pack = vm[TRANSFORM_PARAMS] if _has_function(vm, TRANSFORM_PARAMS) else None
    weights = []
    for _ in range(copies):
        w = tvm.runtime.tensor(rng.uniform(0.1, 1.0, (k, n)).astype("float32"), dev)
        weights.append(list(pack([w])) if pack is not None else [w])
    return vm["main"], x, weights


def measure_weight_read(target, dev, sweep_bytes: int = SWEEP_BYTES, k: int = GEMV_K, n: int = GEMV_N,
                        sweeps: int = SWEEPS, executable=None) -> WeightReadSample:
    """Time sweeps of the GEMV over ``sweep_bytes`` of distinct weights (at least two
    copies) on ``dev`` (a CPU); see the module docstring."""
    ex = executable if executable is not None else build_gemv(target, k, n)
    f, x, weights = gemv_operands(ex, dev, sweep_bytes, k, n)
    copies, weight_bytes = len(weights), k * n * 4

    def sweep() -> float:
        t0 = time.perf_counter()
        for w in weights:
            f(x, *w)
        dev.sync()
        return time.perf_counter() - t0

    sweep()  # every page touched, the pool awake
    return WeightReadSample(tuple(sweep() for _ in range(max(1, sweeps))), copies, weight_bytes)
