"""Run a snippet of Python in a child process, so a crash (SIGSEGV, SIGBUS) or a hang
fails the test that provoked it instead of killing or stalling pytest.

``run_isolated(code, timeout)`` returns the :class:`subprocess.CompletedProcess`;
a hang past ``timeout`` seconds fails the calling test with what the child printed.
The child imports this checkout's ``hetpart`` (the parent's ``sys.path`` is passed on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest


def run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child hung for more than {timeout} s; it printed:\n{e.stdout}\n{e.stderr}")
    if proc.returncode < 0:
        pytest.fail(f"the child died of {signal.Signals(-proc.returncode).name}; it printed:\n"
                    f"{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def assert_clean(proc: subprocess.CompletedProcess) -> str:
    """The child's stdout, after checking it exited 0."""
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout
