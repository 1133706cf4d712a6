"""docs/SERVING.md's data-parallel example runs as written: a split of zoo:mlp:small at
batch 8 saved, opened with ``hetpart.Session(dir)`` and served; every request's logits
are ONNX Runtime's for its own row.  It runs in this process (a subprocess would pay for
importing TVM again)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hetpart import models

ROOT = Path(__file__).resolve().parents[1]


def example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "SERVING.md").read_text(), flags=re.S | re.M)
    (block,) = [b for b in blocks if "plan_data_parallel" in b]
    return block


def test_the_data_parallel_example_runs_as_written(capsys):
    ort = pytest.importorskip("onnxruntime")
    scope = {"__name__": "__main__"}
    exec(compile(example(), "docs/SERVING.md", "exec"), scope)  # noqa: S102 - our own doc
    first, shape = capsys.readouterr().out.strip().splitlines()[-2:]
    assert first.startswith("DataParallelSession") and first.endswith(" 8") and shape == "(1, 4)"
    assert scope["dp"].b_gpu > 0 and scope["dp"].b_cpu > 0
    reference = ort.InferenceSession(models.build("mlp", small=True, batch=1).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    for i, future in enumerate(scope["futures"]):
        want = reference.run(None, {"input": np.full((1, 32), i / 20, np.float32)})[0]
        np.testing.assert_allclose(future.result()["logits"], want, rtol=1e-5, atol=1e-5)
