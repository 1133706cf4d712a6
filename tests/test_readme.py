"""The README's examples run as written, on this machine (GPU or not), in a fresh directory.

Every ```python block of README.md runs as a script; every ```bash block's commands
run in a shell, except the ones CI itself is (``pip install ...``, ``pytest ...``): for
those the test checks that ``.ci/run`` runs exactly them, so the README's "one
command sets up and runs" stays what CI does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks of ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def commands() -> list[str]:
    """Every ``&&``-joined command of the README's bash blocks."""
    return [c.strip() for b in blocks("bash") for line in b.splitlines() if line.strip()
            for c in line.split("&&")]


def is_ci_step(command: str) -> bool:
    """The install, and any run of this test suite (``pytest ...``: running it inside
    itself would recurse; CI runs it)."""
    return command.startswith("pip install") or command.split()[0] == "pytest"


def environment() -> dict[str, str]:
    """This interpreter's scripts first on PATH, this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def test_the_readme_has_the_examples_this_file_runs():
    assert blocks("python") and commands()
    assert any(not is_ci_step(c) for c in commands())


def extras(command: str) -> set[str]:
    """The extras a ``pip install -e ".[a,b]"`` installs (none for ``-e .``)."""
    m = re.search(r'-e\s+"?\.(?:\[([\w,]+)\])?"?', command)
    assert m, f"`{command}` does not install this checkout"
    return set(filter(None, (m.group(1) or "").split(",")))


def test_ci_runs_the_readmes_install_and_test_commands():
    ci = CI.read_text()
    installed = set().union(*(extras(line) for line in ci.splitlines() if line.strip().startswith("pip install -")))
    assert re.search(r"^pytest\b", ci, flags=re.M), "CI does not run the README's pytest"
    for command in filter(is_ci_step, commands()):
        if command.startswith("pip install"):
            assert extras(command) <= installed, f"CI does not install what `{command}` does"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs_as_written(index, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(blocks("python")[index])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README python example {index} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in commands() if not is_ci_step(c)])
def test_bash_example_runs_as_written(command, tmp_path):
    done = subprocess.run(command, shell=True, cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"`{command}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
