"""The JSON files hetpart writes: a ``"schema"``/``"version"`` header, atomic replacement.

Atomic: the text goes to a temporary file in the same directory, is flushed to disk,
and is renamed over the target (``os.replace`` is atomic on POSIX and Windows).  A
reader sees the old file or the new one, never half; a crash or Ctrl-C at any point
leaves the previous file intact; at worst a stray ``.<name>.*.tmp`` file stays behind.

Header: every document starts with ``"schema": <name>, "version": <int>``
(:func:`write_json`); :func:`read_json` checks both before the caller reads on, and
raises the caller's error type naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import HetpartError


def write_json(path: str | os.PathLike, schema: str, version: int, body: dict) -> Path:
    """Write ``{"schema", "version", **body}`` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps({"schema": schema, "version": version, **body}, indent=1) + "\n")
    return path


def read_json(path: str | os.PathLike, schema: str, version: int, error: type[HetpartError] = HetpartError) -> dict:
    """The document in ``path``, checked to be ``schema`` at ``version``; ``error`` (a
    :class:`HetpartError` subclass) names the file when it is missing, not JSON, or
    another schema or version."""
    path = Path(path)
    data = load_json(path, error)
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise error(f"{path} is not a {schema} file (schema {found!r})")
    if data.get("version") != version:
        raise error(f"{path} is {schema} version {data.get('version')!r}; this hetpart reads version {version}")
    return data


def load_json(path: str | os.PathLike, error: type[HetpartError] = HetpartError):
    """The JSON value in ``path``, header unchecked (a document without one, e.g. a trace
    in Chrome's list form); ``error`` names the file when it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: the old file is untouched, drop the partial one.
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
