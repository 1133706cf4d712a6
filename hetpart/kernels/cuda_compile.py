"""hetpart's compiler for the CUDA C that TVM generates: TVM's flags, IEEE math.

Why this exists: TVM 0.27 keeps a CUDA module as CUDA C and compiles it in a Python
callback looked up by name, ``tvm_callback_cuda_compile`` (registered by
``tvm.support.nvcc``), called with the source alone whenever a CUDA module is created
(at build time, where the CUDA runtime loads) or loaded (a library cross-compiled on a
machine without one keeps the source and is compiled when loaded).  Both of TVM's
paths, NVRTC and nvcc, pass ``--use_fast_math``, which compiles ``powf`` as
``__powf`` = exp2(y * log2(x)): NaN for every negative base, so GPT-2's ``x**3`` and
RMSNorm's ``x**2`` gave NaN on the GPU; it also flushes denormals to zero and
approximates division and square roots.

:func:`install` replaces that callback with :func:`compile_source`: the same flags
as TVM's, without fast math, and IEEE division, square roots and denormals stated
explicitly (:data:`IEEE_FLAGS`).  NVRTC (``cuda-bindings``, what TVM uses by default)
when it is importable, else ``nvcc`` from the CUDA toolkit.

Invariant: after :func:`install`, every CUDA module TVM creates or loads in this
process is compiled by :func:`compile_source`.  Importing :mod:`hetpart.kernels`
installs it, and every build and library load installs it again (a cheap check), so
a callback registered later by other code cannot silently take over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import tvm_ffi

CALLBACK = "tvm_callback_cuda_compile"
"""The global function name TVM's CUDA module looks up to compile CUDA C."""

FAST_MATH_FLAGS = frozenset({
    "--use_fast_math", "-use_fast_math", "--ftz=true", "-ftz=true",
    "--prec-div=false", "-prec-div=false", "--prec-sqrt=false", "-prec-sqrt=false",
})
"""Flags that relax IEEE semantics; none of them is ever passed."""

IEEE_FLAGS = ("--ftz=false", "--prec-div=true", "--prec-sqrt=true")
"""The compilers' defaults, stated so a default changed elsewhere cannot creep in."""

# TVM's other front-end flags (tvm.support.nvcc), kept: half/bfloat16 operators on.
_TYPE_FLAGS = (
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
)
# NVRTC only: vector_types.h's deprecation macros may be left undefined (TVM defines them empty too).
_NVRTC_DEFINES = (
    "-D__NV_SILENCE_DEPRECATION_BEGIN=", "-D__NV_SILENCE_DEPRECATION_END=",
    "-D__NV_SILENCE_HOST_DEPRECATION_BEGIN=", "-D__NV_SILENCE_HOST_DEPRECATION_END=",
)
# NVRTC has no host <math.h>; TVM's generated code may name INFINITY / NAN.
_NVRTC_PRELUDE = """#include <cuda/std/limits>
#ifndef INFINITY
#define INFINITY (::cuda::std::numeric_limits<float>::infinity())
#endif
#ifndef NAN
#define NAN (::cuda::std::numeric_limits<float>::quiet_NaN())
#endif
"""
# NVRTC: cuda.h (host-side; the generated code includes it only outside __CUDACC_RTC__) is not read,
# so a TMA kernel's ``const __grid_constant__ CUtensorMap`` parameter names an undefined type.  cuda.h's
# layout (64-byte aligned, 128 bytes), as TVM's own NVRTC path defines it (tvm.support.nvcc); the tag,
# not the alias, is defined, so CCCL's forward declaration ``struct CUtensorMap_st;`` still agrees.
_NVRTC_TENSOR_MAP = """struct alignas(64) CUtensorMap_st {
  unsigned long long opaque[16];
};
typedef struct CUtensorMap_st CUtensorMap;
"""

_registered = None  # the tvm_ffi.Function this module registered


# --- the option lists ---------------------------------------------------------------
def ptxas_flags() -> list[str]:
    """TVM's ptxas flags (register usage level, diagnostics), as TVM computes them."""
    from tvm.support import nvcc

    return list(nvcc._ptxas_option_flags())  # noqa: SLF001 - TVM's own source of these flags


def nvrtc_options(arch: str, include_dirs: list[str]) -> list[str]:
    """NVRTC options for ``arch`` (``"sm_90"``: cubin, ``"compute_90"``: PTX)."""
    return [
        f"--gpu-architecture={arch}", "-default-device", "--device-int128",
        *(f"-I{d}" for d in include_dirs),
        *_NVRTC_DEFINES, *_TYPE_FLAGS, *IEEE_FLAGS,
        *(f"--ptxas-options={f}" for f in ptxas_flags()),
    ]


def nvcc_command(arch: str, fmt: str, source: str, output: str) -> list[str]:
    """The nvcc command line compiling ``source`` into ``output`` (``fmt``: ``fatbin``,
    ``cubin`` or ``ptx``) for ``arch`` (``"90"`` or ``"90a"``)."""
    return [
        "nvcc", f"--{fmt}", "-O3", "-gencode", f"arch=compute_{arch},code=sm_{arch}",
        *_TYPE_FLAGS, "--expt-relaxed-constexpr", "--expt-extended-lambda", *IEEE_FLAGS,
        f"--ptxas-options={','.join(ptxas_flags())}", "-o", output, source,
    ]


# --- compiling ----------------------------------------------------------------------
def target_arch() -> str:
    """The architecture to compile for, ``"90"`` or ``"90a"``: the current TVM target's
    ``arch``, else this machine's GPU (TVM's rule, :func:`tvm.support.nvcc.get_target_compute_version`)."""
    from tvm.support import nvcc
    from tvm.target import Target

    return nvcc.get_target_compute_version(Target.current(allow_none=True)).replace(".", "")


def nvrtc_available() -> bool:
    try:
        from cuda.bindings import nvrtc  # noqa: F401
    except ImportError:
        return False
    return True


def compile_source(code: str, *, arch: str | None = None, fmt: str | None = None,
                   compiler: str | None = None) -> bytes:
    """``code`` (CUDA C) compiled for ``arch`` (default :func:`target_arch`).

    ``compiler``: ``"nvrtc"`` or ``"nvcc"``; default NVRTC when ``cuda-bindings`` is
    importable, else nvcc.  ``fmt`` defaults to ``cubin`` (NVRTC) / ``fatbin`` (nvcc),
    what TVM's callback returns; ``"ptx"`` gives PTX text.  Raises RuntimeError with
    the compiler's log (TVM turns it into the build's or the load's error).
    """
    arch = arch or target_arch()
    compiler = compiler or ("nvrtc" if nvrtc_available() else "nvcc")
    if compiler == "nvrtc":
        return _nvrtc(code, arch, fmt or "cubin")
    if compiler == "nvcc":
        return _nvcc(code, arch, fmt or "fatbin")
    raise ValueError(f"compiler must be 'nvrtc' or 'nvcc', got {compiler!r}")


def cuda_root() -> Path:
    """The CUDA toolkit directory (TVM's search; a wrapper script named nvcc on PATH
    can mislead it, so fall back to /usr/local/cuda when its guess has no headers)."""
    from tvm.support import nvcc

    try:
        root = Path(nvcc.find_cuda_path())
    except RuntimeError:
        root = Path("/usr/local/cuda")
    if not (root / "include" / "cuda_runtime.h").is_file() and Path("/usr/local/cuda/include").is_dir():
        root = Path("/usr/local/cuda")
    return root


def include_dirs(root: Path) -> list[str]:
    """Where NVRTC finds the CUDA headers (plain, per-target and CCCL's)."""
    found = []
    for d in (root / "include", root / "targets" / "x86_64-linux" / "include",
              root / "targets" / "sbsa-linux" / "include"):
        if d.is_dir():
            found.append(d)
            if (d / "cccl").is_dir():
                found.append(d / "cccl")
    return [str(d) for d in found]


def nvrtc_source(code: str) -> str:
    """What NVRTC compiles for TVM's CUDA C ``code``: the prelude (INFINITY / NAN), cuda.h's
    ``CUtensorMap`` where ``code`` names it (a TMA kernel's parameters: :mod:`.wgmma_ws`), then
    ``code``.  Code that names no tensor map gets exactly the prelude and itself, as before."""
    return _NVRTC_PRELUDE + (_NVRTC_TENSOR_MAP if "CUtensorMap" in code else "") + code


def _nvrtc(code: str, arch: str, fmt: str) -> bytes:
    from cuda.bindings import nvrtc

    prefix = "compute_" if fmt == "ptx" else "sm_"
    options = [o.encode() for o in nvrtc_options(prefix + arch, include_dirs(cuda_root()))]
    err, prog = nvrtc.nvrtcCreateProgram(nvrtc_source(code).encode(), b"hetpart_kernels.cu", 0, None, None)
    _nvrtc_check(nvrtc, err, "nvrtcCreateProgram")
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC could not compile TVM's CUDA code:\n{_nvrtc_log(nvrtc, prog)}")
        kind = "PTX" if fmt == "ptx" else "CUBIN"
        err, size = getattr(nvrtc, f"nvrtcGet{kind}Size")(prog)
        _nvrtc_check(nvrtc, err, f"nvrtcGet{kind}Size")
        out = bytearray(size)
        (err,) = getattr(nvrtc, f"nvrtcGet{kind}")(prog, out)
        _nvrtc_check(nvrtc, err, f"nvrtcGet{kind}")
        return bytes(out)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _nvrtc_check(nvrtc, err, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")


def _nvrtc_log(nvrtc, prog) -> str:
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS or size <= 1:
        return "(no log)"
    log = bytearray(size)
    nvrtc.nvrtcGetProgramLog(prog, log)
    return log.decode(errors="replace")


def _nvcc(code: str, arch: str, fmt: str) -> bytes:
    if shutil.which("nvcc") is None:
        raise RuntimeError("compiling CUDA code needs NVRTC (pip install cuda-bindings) or nvcc on PATH; "
                           "neither was found")
    with tempfile.TemporaryDirectory(prefix="hetpart-nvcc-") as tmp:
        src, out = os.path.join(tmp, "kernels.cu"), os.path.join(tmp, f"kernels.{fmt}")
        Path(src).write_text(code)
        proc = subprocess.run(nvcc_command(arch, fmt, src, out), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc could not compile TVM's CUDA code:\n{proc.stdout}{proc.stderr}")
        return Path(out).read_bytes()


# --- the callback -------------------------------------------------------------------
def _callback(code: str) -> bytes:
    return compile_source(str(code))


def install() -> None:
    """Make :func:`compile_source` TVM's CUDA compiler in this process (idempotent)."""
    global _registered
    if is_installed():
        return
    import tvm  # noqa: F401 - tvm.support.nvcc registers TVM's callback on import; ours must come after

    tvm_ffi.register_global_func(CALLBACK, _callback, override=True)
    _registered = tvm_ffi.get_global_func(CALLBACK)


def is_installed() -> bool:
    """Whether TVM's CUDA compile callback is, right now, the one :func:`install` registered."""
    if _registered is None:
        return False
    current = tvm_ffi.get_global_func(CALLBACK, allow_missing=True)
    return current is not None and current.same_as(_registered)


__all__ = ["CALLBACK", "FAST_MATH_FLAGS", "IEEE_FLAGS", "compile_source", "install", "is_installed",
           "nvcc_command", "nvrtc_options"]
