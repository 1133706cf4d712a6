"""Before a device call: does everything a device step runs import in this (staged) tree?

    python tools/device_preflight.py 135 136          # steps of tools/device_round.sh
    python tools/device_preflight.py 134 --script tools/device_steps_run.sh

A device call carries the working tree as ``.hold/out_min.sh`` leaves it (most tools, tests and
bench scripts moved away to fit the 64 MiB carry).  Session 50 lost two calls of step 134 to a
``ModuleNotFoundError`` on a tool that a staged tool imports, and one part to the shipped
profile left out of the carry.  This reads each step's text in ``--script``, finds the files it
runs (``tools/*.py``, ``bench/*.py``, ``tests/test_*.py``) and the archives it expects
(``.hold/*.tgz``), and checks here, without a GPU: each file exists, each Python file imports
(tools with ``tools/`` and the repository root on the path, as the device runs them; tests
with ``tests/``; the modules a file imports inside its functions found), and a cost-model profile is there (the shipped one, or the capped one
``tools/device_lib.sh`` falls back to).  Prints one line per problem; exit status 1 if any.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = re.compile(r"\b((?:tools|bench)/[\w.]+\.py|tests/test_\w+\.py)\b")
ARCHIVES = re.compile(r"(\.hold/[\w.-]+\.tgz)")
PROFILES = ("hetpart/costmodel/recorded/h200.json", "bench/results/profile-capped-nvidia-h200.json")
DEVICE_ONLY = frozenset({"torch", "torchvision", "transformers", "timm", "accelerate", "cuda"})
"""Modules the GPU machine's python has and this one may lack (the brief's list)."""


def step_text(script: Path, step: str) -> str:
    """The ``STEP)`` case of ``script`` up to its ``;;`` (comments included); ValueError if absent."""
    match = re.search(rf"^{re.escape(step)}\)(.*?);;", script.read_text(), flags=re.S | re.M)
    if match is None:
        raise ValueError(f"{script}: no step {step}")
    return match.group(1)


def _code(text: str) -> str:
    """``text`` without its comment lines (a comment may name a file the step does not run)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _nested_imports(path: Path) -> list[str]:
    """The modules ``path`` imports inside functions (run only when called, so importing the
    file does not check them), by their full dotted names (``hetpart.bench.cpu_layers``: a
    package's module staged away while the package stays, which the top-level name alone
    missed in session 52), less those of the packages in :data:`DEVICE_ONLY`."""
    names = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in DEVICE_ONLY)


def _is_under(file, root: Path) -> bool:
    """``file`` (a module spec's origin: a path, "frozen", "built-in" or None) is a file of ``root``."""
    return file is not None and Path(file).is_absolute() and Path(file).resolve().is_relative_to(root.resolve())


def _late_import_problems(rel: str, path: Path, root: Path) -> list[str]:
    """The modules ``path`` imports inside functions, followed through this tree's own modules
    (a helper a tool imports late may itself import a third that was staged away, which cost
    session 51 a call): one sentence per module missing or failing to import."""
    out, seen, todo = [], set(), [path]
    while todo:
        for name in _nested_imports(todo.pop()):
            if name in seen:
                continue
            seen.add(name)
            try:
                spec = importlib.util.find_spec(name)  # a dotted name imports its parent packages
            except ModuleNotFoundError:
                spec = None
            if spec is None:
                out.append(f"{rel}: imports {name} (inside a function), which is not here")
                continue
            if not _is_under(spec.origin, root):
                continue
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any import failure is what this reports
                out.append(f"{rel}: imports {name} (inside a function), which does not import: "
                           f"{type(exc).__name__}: {exc}")
                continue
            todo.append(Path(spec.origin))
    return out


def problems(text: str, root: Path = ROOT) -> list[str]:
    """What a step's (non-comment) ``text`` runs or reads that is missing or does not import
    under ``root``: one sentence each, empty when all is there."""
    code, out = _code(text), []
    for rel in sorted(set(RUNS.findall(code))):
        path = root / rel
        if not path.exists():
            out.append(f"{rel}: not in the tree (staged away?)")
            continue
        folder = path.parent
        sys.path[:0] = [str(root), str(folder)]
        try:
            importlib.import_module(path.stem)
            out += _late_import_problems(rel, path, root)
        except Exception as exc:  # noqa: BLE001 - any import failure is what this reports
            out.append(f"{rel}: does not import: {type(exc).__name__}: {exc}")
        finally:
            del sys.path[:2]
            sys.modules.pop(path.stem, None)
    for rel in sorted(set(ARCHIVES.findall(code))):
        if not (root / rel).exists():
            out.append(f"{rel}: not here (a carry the step expects)")
    if not any((root / p).exists() for p in PROFILES):
        out.append(f"no cost-model profile: neither {' nor '.join(PROFILES)} (plans need one)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("steps", nargs="+", help="step numbers")
    ap.add_argument("--script", default="tools/device_round.sh", help="the device script (default %(default)s)")
    args = ap.parse_args(argv)
    script = Path(args.script)
    script = script if script.is_absolute() else ROOT / script
    bad = 0
    for step in args.steps:
        found = problems(step_text(script, step))
        print(f"step {step}: " + ("ready" if not found else f"{len(found)} problem(s)"))
        for line in found:
            print(f"  {line}")
        bad += len(found)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
