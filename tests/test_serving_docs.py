"""docs/SERVING.md's HTTP example runs as written: a real stdlib HTTP server on a free
port in front of a Server and a compiled zoo:mlp:small, answering a good request with
the model's logits (checked against onnxruntime) and a bad one with 400.  It runs in
this process (a subprocess would pay for importing TVM again)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hetpart import models

ROOT = Path(__file__).resolve().parents[1]


def example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "SERVING.md").read_text(), flags=re.S | re.M)
    (block,) = [b for b in blocks if "ThreadingHTTPServer" in b]  # the HTTP example
    return block


@pytest.mark.slow
def test_the_http_example_runs_as_written(capsys):
    exec(compile(example(), "docs/SERVING.md", "exec"), {"__name__": "__main__"})  # noqa: S102 - our own doc
    good, bad = [ast.literal_eval(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert good[0] == 200
    reference = ort.InferenceSession(models.build("mlp", small=True, batch=1).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    want = reference.run(None, {"input": np.ones((1, 32), np.float32)})[0]
    np.testing.assert_allclose(np.array(good[1]["outputs"]["logits"]), want, rtol=1e-5, atol=1e-5)
    assert bad[0] == 400 and bad[1]["error"] == "BadRequestError" and "'input'" in bad[1]["message"]
