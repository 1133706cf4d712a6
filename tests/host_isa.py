"""The host CPU's ISA, read from the kernel's ``/proc/cpuinfo`` flags -- independently of
hetpart and LLVM, so tests can check what hetpart decides for the host against it.

The suite runs on AVX-512 (+VNNI) hosts and on AVX2-only ones (CI may be either):

* :func:`host_f32_lanes` -- float32 lanes of the host's widest vector (16 with AVX-512,
  8 with AVX/AVX2, else 4): what hetpart's host target must vectorise with;
* :data:`requires_avx512` / :data:`requires_vnni` -- skip marks for tests that *run* code
  built for those ISAs (elsewhere it dies of SIGILL, taking the xdist worker with it);
  building and inspecting that code needs no such mark;
* :func:`ort_integer_exact` -- whether ONNX Runtime's CPU integer GEMM is exact for the
  operand types on this host: MLAS multiplies uint8 by int8 with ``vpmaddubsw`` on x86
  without VNNI, whose int16 sum of two products saturates (255 * 127 * 2 > 32767), so
  there ORT is no exact reference for u8 x s8 (ORT's documented limitation; its
  quantization tool recommends ``reduce_range`` for such hosts).
"""

from __future__ import annotations

import platform
from functools import lru_cache

import numpy as np
import pytest


@lru_cache(maxsize=None)
def host_flags() -> frozenset[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def host_has(flag: str) -> bool:
    """Whether the host CPU has ``flag`` (cpuinfo's spelling: ``avx512f``, ``avx512_vnni``)."""
    return flag in host_flags()


def host_has_vnni() -> bool:
    """AVX-512 VNNI or AVX-VNNI (the 256-bit form, Alder Lake and later)."""
    return host_has("avx512_vnni") or host_has("avx_vnni")


def host_f32_lanes() -> int:
    """float32 elements in the host's widest SIMD register."""
    if not is_x86():
        return 4
    if host_has("avx512f"):
        return 16
    return 8 if host_has("avx2") or host_has("avx") else 4


def ort_integer_exact(atype, btype) -> bool:
    """Whether ORT's CPU MatMulInteger/ConvInteger/QLinear* are exact for ``atype`` x
    ``btype`` operands on this host (see the module doc: u8 x s8 saturates on x86
    without VNNI; u8 x u8 and s8 x s8 take other MLAS kernels)."""
    if not is_x86() or host_has_vnni():
        return True
    return not (np.dtype(atype) == np.uint8 and np.dtype(btype) == np.int8)


requires_avx512 = pytest.mark.skipif(
    not host_has("avx512f"), reason="the host CPU has no AVX-512 (avx512f): code built for it would die of SIGILL here")
requires_vnni = pytest.mark.skipif(
    not host_has("avx512_vnni"),
    reason="the host CPU has no AVX-512 VNNI (avx512_vnni): code built for it would die of SIGILL here")


# Fixed CPUs of both x86 vector widths, and the host: a schedule test that reads vector
# widths builds for each, so both widths' decisions are asserted on every host (building
# and inspecting code for a CPU the host lacks is safe; only running it is not).
FIXED_CPU_LANES = {"haswell": 8, "skylake-avx512": 16}


def width_target(name: str, cores: int = 4):
    """``(LLVM target, float32 lanes)`` for ``name``: a key of :data:`FIXED_CPU_LANES`
    (lanes as that CPU has them), or ``"host"`` (hetpart's host target, lanes from
    ``/proc/cpuinfo``: :func:`host_f32_lanes`)."""
    import tvm

    from hetpart.targets import cpu_tvm_target, host_triple

    if name == "host":
        return cpu_tvm_target(cores), host_f32_lanes()
    return (tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": name, "num-cores": cores}),
            FIXED_CPU_LANES[name])


WIDTH_TARGETS = ["host", *FIXED_CPU_LANES]
"""Parameters for :func:`width_target`."""
