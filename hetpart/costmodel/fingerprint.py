"""Which machine a profile was measured on.

A profile is only true for the machine it was measured on, so every profile carries
a :class:`Fingerprint`: CPU model and core count, GPU name and SM count, CUDA
driver, TVM version.  Two profiles are interchangeable exactly when their
fingerprints are equal; :meth:`Fingerprint.key` names this machine's profile file.

The timings also depend on the code-generation choices the kernels were built with
(:class:`~hetpart.kernels.options.KernelOptions`: TF32, split-K, SM count); a profile
records them in its settings (:func:`recorded_options`) and is measured and priced
with those only (:func:`check_options`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

from ..errors import ProfileError
from ..kernels.options import KernelOptions

OPTIONS_KEY = "kernel_options"
"""Key of a profile's ``settings`` holding the :class:`KernelOptions` its kernels were built with."""


@dataclass(frozen=True)
class Fingerprint:
    """The facts about a machine that change kernel timings.

    GPU fields are None on a machine without a usable CUDA GPU.
    """

    cpu_model: str
    cpu_cores: int
    gpu_name: str | None
    gpu_sm_count: int | None
    gpu_driver: int | None
    tvm_version: str

    def key(self) -> str:
        """A short stable hash of all fields: the file name of this machine's profile."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def has_gpu(self) -> bool:
        return self.gpu_name is not None

    def describe(self) -> str:
        """One line for humans, e.g. ``NVIDIA H100 (132 SMs) / Intel Xeon ... (16 cores)``."""
        cpu = f"{self.cpu_model} ({self.cpu_cores} cores)"
        if not self.has_gpu:
            return f"no GPU / {cpu}"
        return f"{self.gpu_name} ({self.gpu_sm_count} SMs) / {cpu}"

    def differences(self, other: "Fingerprint") -> list[str]:
        """``"field: mine != theirs"`` for every field that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Fingerprint":
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_cores() -> int:
    # The machine's logical CPUs, not the affinity mask: TVM's thread pool pins the
    # calling thread to one core once a parallel kernel has run, so the mask would
    # change the fingerprint mid-process.  Nor TVM_NUM_THREADS: the fingerprint names
    # the machine, not how many threads one run chose to use.
    return os.cpu_count() or 1


@lru_cache(maxsize=1)
def _driver_version(dev) -> int | None:
    """The CUDA driver version (e.g. 13000); TVM's attribute is None on some builds."""
    if dev.driver_version is not None:
        return int(dev.driver_version)
    try:
        from cuda.bindings import runtime as cudart

        err, version = cudart.cudaDriverGetVersion()
        return int(version) if int(err) == 0 else None
    except ImportError:
        return None


def this_machine() -> Fingerprint:
    """The fingerprint of the machine this process runs on (cached)."""
    import tvm

    from ..targets import cuda_available

    gpu_name = sm = driver = None
    if cuda_available():
        dev = tvm.cuda(0)
        gpu_name = str(dev.device_name)
        sm = int(dev.multi_processor_count)
        driver = _driver_version(dev)
    return Fingerprint(
        cpu_model=_cpu_model(),
        cpu_cores=_cpu_cores(),
        gpu_name=gpu_name,
        gpu_sm_count=sm,
        gpu_driver=driver,
        tvm_version=str(tvm.__version__),
    )


def recorded_options(settings: dict) -> KernelOptions:
    """The kernel options a profile's ``settings`` record; the defaults where none are
    recorded (profiles from before the options existed were built with them)."""
    return KernelOptions.from_json(settings.get(OPTIONS_KEY))


def check_options(settings: dict, options: KernelOptions, where: str) -> None:
    """Raise :class:`ProfileError` when the profile ``where`` (its ``settings``) was
    measured with other kernel options than ``options``: its timings do not price
    kernels built with these."""
    have = recorded_options(settings)
    if have != options:
        raise ProfileError(
            f"{where} was measured with kernel options ({have.describe()}) other than these "
            f"({options.describe()}); measure into another file (--profile PATH) or use the same options")
