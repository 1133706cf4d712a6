"""A saved data-parallel artifact opened the way every other artifact is:
``hetpart.load_compiled(dir)`` gives the DataParallelModel, ``hetpart.Session(dir)`` (or
of the loaded model) a DataParallelSession whose outputs are ONNX Runtime's; a
directory of any other kind is a typed error naming what was expected.

The split is made on stub costs (tests/data_parallel_cases.py); the GPU side
runs in simulation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import hetpart
from hetpart.compiler.data_parallel import DataParallelModel
from hetpart.compiler.loader import artifact_kind
from hetpart.data_parallel import plan_data_parallel
from hetpart.runtime.data_parallel_session import DataParallelSession
from data_parallel_cases import EVEN, TOL, feeds, onnxruntime_by_name, split_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    dp = plan_data_parallel(split_model(), 16, cost_model=EVEN)
    assert dp.split
    root = tmp_path_factory.mktemp("dp") / "model"
    hetpart.compile_data_parallel(dp, simulate=True).save(root)
    return root


def test_load_compiled_recognises_a_data_parallel_directory(saved):
    assert artifact_kind(saved) == "data-parallel" and artifact_kind(saved / "cpu") == "compiled"
    model = hetpart.load_compiled(saved)
    assert isinstance(model, DataParallelModel) and (model.plan.b_gpu, model.plan.b_cpu) == (8, 8)
    unloaded = hetpart.load_compiled(saved, load_modules=False)
    assert all(p.module is None for _, _, c in unloaded.sides() for p in c.partitions)
    assert isinstance(hetpart.load_compiled(saved / "cuda"), hetpart.CompiledModel)  # a side alone


@pytest.mark.parametrize("how", ["path", "str", "loaded"])
def test_session_of_a_data_parallel_artifact_is_a_data_parallel_session(saved, how):
    arg = {"path": saved, "str": str(saved), "loaded": hetpart.load_compiled(saved)}[how]
    feed = feeds(16, 7)
    with hetpart.Session(arg) as s:
        assert isinstance(s, DataParallelSession) and s.split == [("cuda", 8), ("cpu", 8)]
        got = s.run(feed)
    want = onnxruntime_by_name(split_model(), feed)
    for name in ("y", "yt"):
        np.testing.assert_allclose(got[name], want[name], **TOL)


def test_session_of_a_plain_artifact_directory_is_a_session(saved):
    feed = {"x": feeds(16, 8)["x"][8:], "scale": feeds(16, 8)["scale"]}
    with hetpart.Session(saved / "cpu") as s:
        assert type(s) is hetpart.Session
        got = s.run(feed)
    np.testing.assert_allclose(got["y"], onnxruntime_by_name(split_model(), feed)["y"], **TOL)


def test_a_directory_of_another_kind_is_a_typed_error(saved, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"schema": "hetpart-profile", "version": 1}))
    for opener in (hetpart.load_compiled, hetpart.Session, artifact_kind):
        with pytest.raises(hetpart.CompileError, match="'hetpart-profile'.*'hetpart-data-parallel'"):
            opener(other)
    with pytest.raises(hetpart.CompileError, match="no compiled model"):
        hetpart.Session(tmp_path / "missing")


def test_a_session_of_something_else_is_a_typed_error():
    with pytest.raises(hetpart.RuntimeFailure, match="got int"):
        hetpart.Session(42)
