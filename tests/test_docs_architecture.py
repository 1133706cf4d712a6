"""docs/ARCHITECTURE.md stays a true map of the package (no imports of hetpart: text only).

* every module ``hetpart/<pkg>/[<sub>/]<module>.py`` is named, in backticks (alone, or as the
  tail of its dotted or slashed path: `weight_stream`, `runtime.weight_stream`,
  `rules/cpu_matmul`), inside a section whose heading names `hetpart.<pkg>`; every top-level
  module ``hetpart/<module>.py`` (but ``__init__``/``__main__``) as `hetpart.<module>`;
* every `hetpart.<name>[.<name>...]` the doc writes resolves: to a package or module, and past
  the last module to a name that module defines or imports.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hetpart"
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def spans(text: str) -> list[str]:
    """The backticked spans of ``text`` (fenced code blocks left out)."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))


def sections(text: str) -> list[tuple[str, str]]:
    """``(heading, body)`` per heading of any level; text before the first has heading ""."""
    out, heading, body = [], "", []
    for line in text.splitlines():
        if line.startswith("#"):
            out.append((heading, "\n".join(body)))
            heading, body = line, []
        else:
            body.append(line)
    out.append((heading, "\n".join(body)))
    return out


def packages_of(heading: str) -> set[str]:
    """The top-level packages a heading names as `hetpart.<pkg>...`."""
    return {m.group(1) for s in spans(heading) for m in [re.match(r"hetpart\.(\w+)", s)] if m}


def names_module(span: str, parts: tuple[str, ...]) -> bool:
    """Whether ``span`` names the module with path ``parts`` (under hetpart, no suffix):
    the module name alone, or a dotted/slashed tail of its path, ``.py`` optional, a call's
    or an attribute's parentheses left out."""
    span = re.sub(r"\(.*$", "", span.strip())
    span = span[:-3] if span.endswith(".py") else span
    words = tuple(re.split(r"[./]", span))
    full = ("hetpart", *parts)
    return any(words == full[i:] for i in range(len(full)))


def modules_by_package() -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("").parts
        if len(rel) > 1 and rel[-1] != "__init__":
            out.setdefault(rel[0], []).append(rel)
    return out


def unnamed_modules(text: str) -> list[str]:
    """``hetpart/...py`` paths the doc does not name where it should (see the module docstring)."""
    by_pkg: dict[str, list[str]] = {}
    for heading, body in sections(text):
        for pkg in packages_of(heading):
            by_pkg.setdefault(pkg, []).extend(spans(heading + "\n" + body))
    missing = []
    for pkg, modules in modules_by_package().items():
        where = by_pkg.get(pkg, [])
        for parts in modules:
            if not any(names_module(s, parts) for s in where):
                missing.append("hetpart/" + "/".join(parts) + ".py")
    everywhere = spans(text)
    for path in sorted(PKG.glob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue
        if not any(names_module(s, (path.stem,)) and s.startswith("hetpart.") for s in everywhere):
            missing.append(f"hetpart/{path.name}")
    return missing


@lru_cache(maxsize=None)
def defined_names(path: Path) -> frozenset[str]:
    """Names a module binds at any depth: defs, classes, assignments, imports, ``_PUBLIC`` keys."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)  # lazily exported names (hetpart.__init__'s _PUBLIC, _ERRORS)
    return frozenset(names)


def unresolved_names(text: str) -> list[str]:
    """Every `hetpart.a.b...` of the doc that names no package, module or defined name."""
    bad = []
    for span in spans(text):
        for ref in re.findall(r"""(?<![\w."'])hetpart(?:\.\w+)+""", span):
            if not resolves(ref.split(".")[1:]):
                bad.append(ref)
    return sorted(set(bad))


def resolves(parts: list[str]) -> bool:
    here = PKG
    for i, part in enumerate(parts):
        if (here / part).is_dir() and (here / part / "__init__.py").exists():
            here = here / part
            continue
        if (here / f"{part}.py").exists():
            module = here / f"{part}.py"
            # past a module: an attribute it defines (attributes of attributes not checked)
            return i + 1 == len(parts) or parts[i + 1] in defined_names(module)
        init = here / "__init__.py"
        return init.exists() and part in defined_names(init)
    return True


def test_every_module_is_on_the_map():
    missing = unnamed_modules(DOC.read_text())
    assert not missing, (f"docs/ARCHITECTURE.md does not name {missing}: add a bullet in its package's "
                         "section (the module name in backticks)")


def test_every_hetpart_name_exists():
    bad = unresolved_names(DOC.read_text())
    assert not bad, f"docs/ARCHITECTURE.md names {bad}, which hetpart does not have"


@pytest.mark.parametrize("path", ["runtime/weight_stream.py", "kernels/rules/cpu_matmul.py", "cli/commands/plan.py"])
def test_a_removed_mention_is_caught(path):
    """The check fails once every backticked mention of a module is gone."""
    text = DOC.read_text()
    name = Path(path).stem
    stripped = re.sub(rf"`(?:[\w./]*[./])?{name}(?:\.py)?(?:\([^`]*\))?`", "it", text)
    assert stripped != text
    assert f"hetpart/{path}" in unnamed_modules(stripped)


def test_a_missing_package_is_caught():
    text = DOC.read_text() + "\nSee `hetpart.no_such_stage` and `hetpart.importer.no_such_pass`.\n"
    assert unresolved_names(text) == ["hetpart.importer.no_such_pass", "hetpart.no_such_stage"]
