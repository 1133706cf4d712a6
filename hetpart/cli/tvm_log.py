"""TVM's own log, kept out of the ``partition`` report.

TVM's C++ side writes its warnings straight to file descriptor 2 ("Fast mode
segfaults when there are out-of-bounds indices" once per embedding gather, "Unknown
pragma pragma_scope"), and its Python side logs through ``logging`` ("Target cuda
missing 'max_shared_memory_per_block'", hundreds of times while profiling).  None of
it is addressed to a user of hetpart, and mixed into the report it reads like a
fault.  :class:`TvmLog` sends it to a file instead (``--verbose`` leaves it on
stderr): descriptor 2 is pointed at the file, and hetpart's own stderr (errors,
progress bars) keeps writing to the terminal through a copy of the old descriptor.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

MAX_BYTES = 8 << 20
"""The log is started afresh once it grows past this."""


class TvmLog:
    """``with TvmLog(path, header):`` -- what TVM's C++ and Python log during the
    block is appended to ``path`` at its end, after a ``header`` line (nothing is
    written when TVM said nothing)."""

    def __init__(self, path: Path, header: str) -> None:
        self.path = Path(path)
        self.header = header
        self._file = None
        self._saved_fd: int | None = None
        self._stderr = None
        self._handler: logging.Handler | None = None
        self._showwarning = None
        self.wrote = False  # True once this run's lines are in the file

    def __enter__(self) -> "TvmLog":
        try:
            self._saved_fd = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to keep clean
            self._saved_fd = None
            return self
        self._file = _append_only_temp()
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(self._file.fileno(), 2)
        if sys.stderr is not None and sys.stderr is sys.__stderr__:  # the process's stderr: keep hetpart's own writes on the terminal
            self._stderr = sys.stderr
            sys.stderr = io.TextIOWrapper(io.FileIO(self._saved_fd, "w", closefd=False),
                                          encoding=sys.__stderr__.encoding, errors="backslashreplace",
                                          line_buffering=True)
        self._route_python_log()
        return self

    def __exit__(self, *exc) -> bool:
        if self._saved_fd is None:
            return False
        logging.getLogger("tvm").removeHandler(self._handler)
        logging.getLogger("tvm").propagate = True
        warnings.showwarning = self._showwarning
        if self._stderr is not None:
            sys.stderr.flush()
            sys.stderr = self._stderr
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._keep()
        return False

    def _keep(self) -> None:
        """Append what TVM said (if anything) to the log file; a run where it said
        nothing writes nothing.  An unwritable log loses the lines, not the run."""
        self._file.flush()
        self._file.seek(0)
        text = self._file.read()
        self._file.close()
        if not text:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > MAX_BYTES:
                self.path.unlink()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {self.header}\n{text}")
            self.wrote = True
        except OSError:
            pass

    def _route_python_log(self) -> None:
        """TVM's ``logging`` records and TVM's Python warnings into the file."""
        self._handler = logging.StreamHandler(self._file)
        self._handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        tvm_logger = logging.getLogger("tvm")
        tvm_logger.addHandler(self._handler)
        tvm_logger.propagate = False
        self._showwarning = warnings.showwarning
        tvm_dir = os.path.dirname(_tvm_file())

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if tvm_dir and str(filename).startswith(tvm_dir):
                self._file.write(warnings.formatwarning(message, category, filename, lineno, line))
            else:
                self._showwarning(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning


def _append_only_temp():
    """An anonymous file every writer appends to (O_APPEND): TVM's C++ writes through
    descriptor 2 and the Python handler through its own buffer never overwrite each other."""
    fd, path = tempfile.mkstemp(prefix="hetpart-tvm-", suffix=".log")
    try:
        os.close(fd)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    finally:
        os.unlink(path)
    return open(fd, "a+", encoding="utf-8", errors="backslashreplace")


def _tvm_file() -> str:
    """Where the tvm package lives, without importing it (``partition zoo`` needs no TVM)."""
    import importlib.util

    spec = importlib.util.find_spec("tvm")
    return (spec.origin or "") if spec else ""


def default_path() -> Path:
    """``$XDG_CACHE_HOME/hetpart/tvm.log`` (``~/.cache/hetpart/tvm.log``), next to the profiles."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hetpart" / "tvm.log"
