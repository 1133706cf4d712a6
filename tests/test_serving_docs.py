"""docs/SERVING.md's HTTP example runs as written: a real stdlib HTTP server on a free
port in front of a Server and a compiled zoo:mlp:small, answering a good request with
the model's logits (checked against onnxruntime) and a bad one with 400."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hetpart import models

ROOT = Path(__file__).resolve().parents[1]


def example() -> str:
    (block,) = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "SERVING.md").read_text(), flags=re.S | re.M)
    return block


@pytest.mark.slow
def test_the_http_example_runs_as_written(tmp_path):
    script = tmp_path / "serve_http.py"
    script.write_text(example())
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    good, bad = [ast.literal_eval(line) for line in done.stdout.strip().splitlines()[-2:]]
    assert good[0] == 200
    reference = ort.InferenceSession(models.build("mlp", small=True, batch=1).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    want = reference.run(None, {"input": np.ones((1, 32), np.float32)})[0]
    np.testing.assert_allclose(np.array(good[1]["outputs"]["logits"]), want, rtol=1e-5, atol=1e-5)
    assert bad[0] == 400 and bad[1]["error"] == "BadRequestError" and "'input'" in bad[1]["message"]
