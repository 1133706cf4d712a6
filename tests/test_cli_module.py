"""``python -m hetpart`` runs the ``partition`` command (a checkout used without installing)."""

import subprocess
import sys
from pathlib import Path

import hetpart

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_hetpart_is_the_partition_command():
    done = subprocess.run([sys.executable, "-m", "hetpart", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hetpart {hetpart.__version__}"


def test_python_m_hetpart_passes_on_the_exit_status():
    done = subprocess.run([sys.executable, "-m", "hetpart", "no-such-file.onnx"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "no-such-file.onnx" in done.stderr + done.stdout
