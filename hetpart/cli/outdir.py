"""``-o OUT``: checked before any work, filled in a staging directory, swapped in whole.

A run that writes OUT never leaves it half old, half new: everything goes into a
staging directory next to OUT (same file system), which then replaces OUT by two
renames.  An OUT of an earlier run (only files hetpart writes there) is replaced;
an OUT holding anything else is refused, so a mistyped ``-o`` cannot delete a
user's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import HetpartError

OWN_FILES = {"plan.json", "plan.svg", "plan.trace.json", "run.trace.json", "manifest.json"}
"""Files ``partition MODEL -o OUT`` writes (plus the partitions' ``*.so`` libraries)."""


def _ours(entry: Path) -> bool:
    """A file hetpart writes, or a shape bucket's directory (``batch=8``) holding only such files."""
    if entry.is_dir() and not entry.is_symlink():
        return "=" in entry.name and all(e.is_file() and _ours(e) for e in entry.iterdir())
    return entry.is_file() and (entry.name in OWN_FILES or entry.suffix == ".so")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class OutputDir:
    """``-o OUT``.  ``OutputDir(path)`` checks it (HetpartError naming the problem);
    ``with out.staging() as tmp:`` yields the directory to write into and, when the
    block succeeds, makes it OUT (the old OUT is removed); when it fails, OUT is as
    it was."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self._check()

    def _check(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise HetpartError(f"-o {p}: is a file, not a directory; name a new or empty directory")
        if p.is_dir():
            foreign = sorted(e.name for e in p.iterdir() if not _ours(e))
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise HetpartError(f"-o {p}: holds files hetpart did not write ({shown}); hetpart replaces OUT "
                                   "whole, so name a new or empty directory, or one an earlier run wrote")
        ancestor = p.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise HetpartError(f"-o {p}: {ancestor} is a file, not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise HetpartError(f"-o {p}: cannot create it: {ancestor} is not writable")

    def staging(self) -> "_Staging":
        return _Staging(self.path)


class _Staging:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=self.path.parent))
            self.tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; OUT gets the usual mode
        except OSError as exc:
            raise HetpartError(f"-o {self.path}: cannot create it: {exc.strerror or exc}") from None
        return self.tmp

    def __exit__(self, kind, value, tb) -> bool:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        self._swap()
        return False

    def _swap(self) -> None:
        old = None
        try:
            if self.path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
                self.path.rename(old / "out")
            self.tmp.rename(self.path)
        except OSError as exc:
            if old is not None and (old / "out").exists() and not self.path.exists():
                (old / "out").rename(self.path)  # put the old OUT back
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise HetpartError(f"-o {self.path}: cannot replace it: {exc.strerror or exc}") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
