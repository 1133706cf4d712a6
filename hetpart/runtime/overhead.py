"""What the session itself costs per partition, measured through real Sessions.

The cost model's kernel timings and VM-call overheads come from TVM alone; a run
through :class:`~.session.Session` also pays for the orchestration around each
partition: validating feeds, handing tensors across (events, host waits, a worker's
wake-up), collecting outputs.  On the GPU machine that is tens to hundreds of
microseconds per partition -- more than a small kernel -- so a plan that splits a
model into more partitions can be slower than predicted (found by the end-to-end
benchmark: DLRM split three ways ran 63% slower than all-CUDA, predicted 12% faster).

In: nothing but the machine.  Out: ``{"cpu": seconds, "cuda": seconds}`` per
partition, fitted by least squares to the median latency of tiny synthetic chains
(``[cpu]``, ``[cuda]``, ``[cpu, cuda, cpu]``, ``[cuda, cpu, cuda]``) with the model
``latency = n_cpu * P_cpu + n_cuda * P_cuda``.  Each P includes its partition's one
tiny kernel (microseconds), so it is an upper bound on the orchestration alone.
"""

from __future__ import annotations

import time

import numpy as np

from .session import Session
from .synthetic import chain

CHAINS = (("cpu",), ("cuda",), ("cpu", "cuda", "cpu"), ("cuda", "cpu", "cuda"))
DEVICES = ("cpu", "cuda")


def median_run_seconds(devices: tuple[str, ...], simulate: bool, repeats: int = 200) -> float:
    """Median wall time of ``Session.run`` on a chain of one tiny partition per device."""
    shape = (1, 16)
    model = chain(list(devices), shape, simulate=simulate)
    feeds = {"x": np.ones(shape, dtype="float32")}
    with Session(model) as s:
        times = run_seconds(s, feeds, repeats)
    return float(np.median(times))


def run_seconds(session: Session, feeds: dict, repeats: int, warmup: int = 10) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``session.run(feeds)``, after ``warmup`` untimed
    ones (the first calls load VMs and capture graphs)."""
    for _ in range(warmup):
        session.run(feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(feeds)
        times.append(time.perf_counter() - t0)
    return times


def session_overheads(simulate: bool = False, repeats: int = 200) -> dict[str, float]:
    """Seconds per partition a Session adds on each device (see the module docstring)."""
    counts = np.array([[c.count(d) for d in DEVICES] for c in CHAINS], dtype=float)
    seconds = np.array([median_run_seconds(c, simulate, repeats) for c in CHAINS])
    per_partition, *_ = np.linalg.lstsq(counts, seconds, rcond=None)
    return {d: max(float(p), 0.0) for d, p in zip(DEVICES, per_partition)}
