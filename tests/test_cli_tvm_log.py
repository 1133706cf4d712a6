"""TvmLog: TVM's C++ lines (descriptor 2) and its Python log land in the file, in order;
hetpart's own stderr does not, and a quiet run writes no file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import logging, os, sys
from pathlib import Path
from hetpart.cli.tvm_log import TvmLog
with TvmLog(Path(sys.argv[1]), "the header"):
    os.write(2, b"c++ line 1\\n")
    logging.getLogger("tvm.some.pass").warning("python line")
    os.write(2, b"c++ line 2\\n")
    print("hetpart's own line", file=sys.stderr)
with TvmLog(Path(sys.argv[1]), "a quiet run"):
    pass
"""


def test_tvm_lines_go_to_the_file_in_order_and_ours_to_stderr(tmp_path):
    log = tmp_path / "cache" / "tvm.log"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "hetpart's own line\n"
    lines = log.read_text().splitlines()
    assert lines[0].endswith("the header")
    assert lines[1:] == ["c++ line 1", "tvm.some.pass WARNING: python line", "c++ line 2"]
    assert logging.getLogger("tvm").propagate
