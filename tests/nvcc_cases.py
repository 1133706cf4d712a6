"""nvcc runs that the CUDA kernel tests share (``from nvcc_cases import cubin_and_ptx``).

* ``cubin_and_ptx(cu, arch, ptxas_verbose=True)`` compiles the CUDA C file ``cu`` to a cubin with
  :func:`hetpart.kernels.cuda_compile.nvcc_command` (plus ``-Xptxas -v``) in ONE nvcc run and
  returns ``(ptxas report, PTX text)``: the report is nvcc's stderr (ptxas's register / spill
  lines), the PTX the intermediate file nvcc kept (``-keep``) on the way to that cubin.

  Invariant: the PTX is byte-for-byte what ``nvcc_command(arch, "ptx", ...)`` writes for the
  same file (same front end, same flags; ptxas's options do not reach the PTX), so a test reads
  both from one front-end pass instead of running nvcc twice (~1.5 s each on CI's 2 cores).
  Raises :class:`subprocess.CalledProcessError` where nvcc fails, as ``check=True`` did.
* ``assert_no_spills(src, arch, tmp_path, max_registers=None)``: nvcc compiles the CUDA C ``src``
  for ``arch`` with no spill stores (and, given ``max_registers``, no kernel above it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def cubin_and_ptx(cu: Path, arch: str, ptxas_verbose: bool = True) -> tuple[str, str]:
    from hetpart.kernels import cuda_compile

    cu = Path(cu)
    keep = cu.parent / f"{cu.stem}-nvcc-keep"
    keep.mkdir(exist_ok=True)
    cmd = cuda_compile.nvcc_command(arch, "cubin", str(cu), str(cu.with_suffix(".cubin")))
    extra = ["-Xptxas", "-v"] if ptxas_verbose else []
    done = subprocess.run([*cmd, *extra, "-keep", "-keep-dir", str(keep)], capture_output=True, text=True,
                          check=True)
    return done.stderr, (keep / f"{cu.stem}.ptx").read_text()


def assert_no_spills(src: str, arch: str, tmp_path: Path, max_registers: int | None = None) -> None:
    from hetpart.kernels import cuda_compile

    cu = Path(tmp_path) / "k.cu"
    cu.write_text(src)
    cmd = cuda_compile.nvcc_command(arch, "cubin", str(cu), str(cu.with_suffix(".cubin")))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    if max_registers is not None:
        regs = [int(r) for r in re.findall(r"Used (\d+) registers", done.stderr)]
        assert regs and max(regs) <= max_registers, done.stderr
