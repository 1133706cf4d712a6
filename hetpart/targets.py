"""The devices hetpart places work on, and the TVM targets that compile for them.

A plan speaks of *device names* (``"cpu"``, ``"cuda"``).  This module turns a device
name into a :class:`TargetSpec`: the TVM target to compile for and the TVM device to
run on.  It is the one registry of targets: to add one, write a factory and decorate
it with :func:`register_target`.

Simulation mode (``simulate=True``) keeps the device *name* ``"cuda"`` but compiles
and runs it on the CPU.  It changes nothing but the target, so CI (no GPU) exercises
the whole partition / compile / runtime orchestration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import tvm
from tvm.target import Target

from .cpu_cores import pool_size
from .errors import NoGPUError, TargetError, option

DEVICES = ("cpu", "cuda")
"""Device names a plan can assign a kernel to, in a fixed order."""


@dataclass(frozen=True)
class TargetSpec:
    """One device as the compiler and runtime see it.

    ``name`` is the plan's device name; ``device_type`` is where the code really runs
    (``"cpu"`` for a simulated CUDA device).
    """

    name: str
    tvm_target: Target
    device_type: str
    simulated: bool = False

    @property
    def is_gpu(self) -> bool:
        return self.device_type == "cuda"

    def device(self):
        """The TVM device this target's code runs on (``tvm.cpu(0)`` or ``tvm.cuda(0)``)."""
        return tvm.cuda(0) if self.is_gpu else tvm.cpu(0)

    def describe(self) -> str:
        sim = " (simulated on the CPU)" if self.simulated else ""
        return f"{self.name}: {self.tvm_target.export().get('kind')} {target_arch(self.tvm_target)}{sim}"


_FACTORIES: dict[str, Callable[..., TargetSpec]] = {}


def register_target(name: str):
    """Register ``factory(**options) -> TargetSpec`` under the device name ``name``."""

    def deco(factory):
        _FACTORIES[name] = factory
        return factory

    return deco


def resolve(name: str, *, simulate: bool = False, cuda_arch: str | None = None) -> TargetSpec:
    """The :class:`TargetSpec` for device ``name``.

    ``simulate`` builds GPU devices for the host CPU instead; ``cuda_arch`` (e.g.
    ``"sm_90"``) cross-compiles for a GPU that is not on this machine.
    Raises :class:`TargetError` for an unknown name and :class:`NoGPUError` when a GPU
    is needed, absent, and no arch was given.
    """
    if name not in _FACTORIES:
        raise TargetError(f"unknown target '{name}'; known targets: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](simulate=simulate, cuda_arch=cuda_arch)


def cuda_available() -> bool:
    """True when TVM's CUDA runtime loads and sees a GPU."""
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001 - a missing driver surfaces as many exception types
        return False


def num_cores() -> int:
    """Cores the CPU kernels run on: the thread-pool size (:func:`hetpart.cpu_cores.pool_size`:
    TVM_NUM_THREADS, else the physical cores of the affinity mask)."""
    return pool_size()


@lru_cache(maxsize=None)
def host_cpu_name() -> str:
    """The host CPU's LLVM name (e.g. ``"sapphirerapids"``).

    TVM 0.27 rejects ``-mcpu=native`` (it silently falls back to ``generic``, losing
    AVX), so ask LLVM for the host's name and check it is one LLVM accepts.
    """
    from tvm.target import codegen

    cpu = str(codegen.llvm_get_system_cpu())
    triple = host_triple()
    try:
        if not codegen.llvm_is_valid_cpu(cpu, triple):
            return "generic"
    except Exception:  # noqa: BLE001 - older builds lack the check; the name is still right
        pass
    return cpu


@lru_cache(maxsize=None)
def host_triple() -> str:
    return str(Target.from_device(tvm.cpu()).attrs.get("mtriple", "x86_64-linux-gnu"))


_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


@lru_cache(maxsize=None)
def amx_tile_permission() -> bool:
    """Linux lets a process use the AMX tile data only after ``arch_prctl(ARCH_REQ_XCOMP_PERM,
    XFEATURE_XTILEDATA)`` (process-wide, once); an AMX instruction without it dies of
    SIGILL.  True when the request succeeded (False elsewhere: not Linux x86-64, refused)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


@lru_cache(maxsize=None)
def host_amx_mattr() -> tuple[str, ...]:
    """``("+amx-tile", "+amx-int8")`` where /proc/cpuinfo lists ``amx_tile`` and ``amx_int8``
    but LLVM's name for the host CPU lacks them (a VM whose CPUID model LLVM reads as
    ``rocketlake``: the AVX-512 VNNI features right, AMX missing); else ``()``.  Only the
    int8 matmul rule's AMX schedule (:mod:`hetpart.kernels.rules.cpu_int8_matmul`) emits
    AMX instructions; LLVM never does on its own."""
    from tvm.target import codegen

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    if not {"amx_tile", "amx_int8"} <= set(flags):
        return ()
    with Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": host_cpu_name()}):
        if codegen.target_has_features("amx-int8") and codegen.target_has_features("amx-tile"):
            return ()
    return ("+amx-tile", "+amx-int8")


def cpu_tvm_target(cores: int | None = None) -> Target:
    """An LLVM target for this machine's CPU with its real ``mcpu`` (and AMX features
    LLVM's CPU name lacks: :func:`host_amx_mattr`) and all its cores."""
    config = {
        "kind": "llvm",
        "mtriple": host_triple(),
        "mcpu": host_cpu_name(),
        "num-cores": int(cores or num_cores()),
    }
    if host_amx_mattr():
        config["mattr"] = list(host_amx_mattr())
    return Target(config)


def cuda_tvm_target(arch: str | None = None) -> Target:
    """A CUDA target for ``arch`` or, when None, for the local GPU."""
    if arch is None:
        if not cuda_available():
            raise NoGPUError(
                f"no CUDA GPU is usable on this machine; pass {option('cuda_arch', 'sm_90')} to "
                f"cross-compile for a GPU elsewhere, or {option('simulate', True)} to run the CUDA "
                "partitions on the CPU"
            )
        arch = "sm_" + str(tvm.cuda(0).compute_version).replace(".", "")
    if not arch.startswith("sm_"):
        raise TargetError(f"CUDA arch must look like 'sm_90', got '{arch}'")
    return Target({"kind": "cuda", "arch": arch, "host": cpu_tvm_target().export()})


def target_arch(t: Target) -> str:
    """``mcpu`` of an LLVM target or ``arch`` of a CUDA one, for messages and manifests."""
    attrs = t.attrs
    return str(attrs.get("arch") or attrs.get("mcpu") or "")


@register_target("cpu")
def _cpu(*, simulate: bool = False, cuda_arch: str | None = None) -> TargetSpec:
    return TargetSpec("cpu", cpu_tvm_target(), "cpu")


@register_target("cuda")
def _cuda(*, simulate: bool = False, cuda_arch: str | None = None) -> TargetSpec:
    if simulate:
        return TargetSpec("cuda", cpu_tvm_target(), "cpu", simulated=True)
    return TargetSpec("cuda", cuda_tvm_target(cuda_arch), "cuda")
