"""docs/SWITCHES.md lists every module switch, and nothing that is gone.

A switch (SWITCHES.md's rule): a module-level assignment, in a module under ``hetpart/``,
of a bool literal to an UPPER_CASE name, annotated or not.  Found here in the AST, as
``module.NAME`` (the module's path under ``hetpart``), without importing anything.  The
doc's rows are the table lines that start with a backquoted ``module.NAME``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "SWITCHES.md"
UPPER = re.compile(r"[A-Z][A-Z0-9_]*")
ROW = re.compile(r"^\| `([\w.]+)\.([A-Z][A-Z0-9_]*)` \| `([^`]*)` \|", re.M)


def module_constants(path: Path) -> dict[str, ast.expr]:
    """UPPER_CASE name -> the value expression of each module-level assignment in ``path``."""
    out: dict[str, ast.expr] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and UPPER.fullmatch(target.id):
            out[target.id] = value
    return out


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT / "hetpart").with_suffix("").parts)


def switches() -> dict[str, bool]:
    """``module.NAME`` -> default of every switch under hetpart/ (the rule above)."""
    found = {}
    for path in sorted((ROOT / "hetpart").rglob("*.py")):
        for name, value in module_constants(path).items():
            if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                found[f"{module_name(path)}.{name}"] = value.value
    return found


def documented() -> dict[str, str]:
    """``module.NAME`` -> the default column, for every row of SWITCHES.md."""
    return {f"{m}.{n}": default for m, n, default in ROW.findall(DOC.read_text())}


def test_the_rule_finds_the_switches_the_tools_set():
    found = switches()
    assert len(found) > 100
    for known in ("kernels.flash_substitute.FLASH_ATTENTION", "kernels.rules.gpu_layout_copy.LAYOUT_COPY",
                  "kernels.rules.cpu_blocked_conv.BATCH_IMAGE_PAIRS", "runtime.small_copy.SMALL_H2D_BY_KERNEL"):
        assert known in found


def test_every_switch_is_documented_with_its_default():
    docs = documented()
    missing = sorted(set(switches()) - set(docs))
    assert not missing, f"docs/SWITCHES.md lacks a row for {', '.join(missing)}"
    wrong = sorted(f"{k} (source {v}, doc {docs[k]})" for k, v in switches().items() if docs[k] != str(v))
    assert not wrong, f"docs/SWITCHES.md's default differs from the source: {', '.join(wrong)}"


def test_every_documented_switch_exists():
    """Each row names a module-level UPPER_CASE constant of a module that exists (bools and
    the hand-kept numeric switches alike)."""
    gone = []
    for key in documented():
        module, _, name = key.rpartition(".")
        path = ROOT / "hetpart" / Path(*module.split(".")).with_suffix(".py")
        if not path.is_file() or name not in module_constants(path):
            gone.append(key)
    assert not gone, f"docs/SWITCHES.md documents switches that no longer exist: {', '.join(gone)}"


def test_each_switch_has_one_row():
    rows = [f"{m}.{n}" for m, n, _ in ROW.findall(DOC.read_text())]
    assert len(rows) == len(set(rows)), sorted({r for r in rows if rows.count(r) > 1})
