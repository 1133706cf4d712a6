"""The PyTorch twin of the zoo's LLaMA decode step (torch and accelerate run it in the
capped benchmark) computes what the ONNX model does, per ``onnx.reference``.  Needs
torch: skipped without it (CI), runs on the GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from hetpart import models

torch = pytest.importorskip("torch", reason="PyTorch not installed")


def test_decode_twin_matches_the_onnx_step():
    from hetpart.bench.decode_twin import decode_twin

    model = models.build("llama_decode", small=True)
    feeds = models.example_inputs(model, seed=3)
    feeds["position"] = np.array([5], np.int64)
    module, names = decode_twin(model)
    with torch.inference_mode():
        got = module(*[torch.from_numpy(feeds[n]) for n in names])
    want = ReferenceEvaluator(model).run(None, feeds)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-5)
