"""How many threads hetpart's CPU kernels run on: one per physical core it may use.

TVM sizes each thread pool from ``TVM_NUM_THREADS``, else from half the logical
CPUs on x86 (it assumes every core has two hyper-threads).  On a machine whose
logical CPUs are all separate cores (most cloud VMs) that leaves half the cores
idle: the recorded H200 profile's CPU kernels ran on 8 threads of 16 cores.  So, on
``import hetpart``, :func:`set_default_pool_size` sets ``TVM_NUM_THREADS`` to the
number of *physical* cores in the process's CPU mask, unless the user set it.

This module imports nothing heavy (no TVM), so ``import hetpart`` stays cheap; the
value takes effect for every TVM pool created afterwards (pools are created lazily,
per calling thread, at the first parallel kernel).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "TVM_NUM_THREADS"
_SYS_CPU = Path("/sys/devices/system/cpu")


def allowed_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None, sys_cpu: Path = _SYS_CPU) -> int:
    """Distinct physical cores among ``cpus`` (default: :func:`allowed_cpus`): SMT
    siblings count once.  Where the topology is not readable (not Linux, a sandbox),
    every logical CPU counts as a core.  At least 1."""
    cpus = allowed_cpus() if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topo = sys_cpu / f"cpu{cpu}" / "topology"
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(len(cpus), 1)
    return max(len(cores), 1)


def pool_size() -> int:
    """The CPU thread-pool size in force: ``TVM_NUM_THREADS`` if it is a positive
    integer, else :func:`physical_cores`."""
    value = os.environ.get(ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return physical_cores()


def set_default_pool_size() -> int:
    """Set ``TVM_NUM_THREADS`` to :func:`physical_cores` unless the user set it; returns
    the size in force.  Call before TVM runs its first parallel kernel."""
    value = os.environ.get(ENV, "")
    if not (value.isdigit() and int(value) > 0):
        os.environ[ENV] = str(physical_cores())
    return pool_size()
