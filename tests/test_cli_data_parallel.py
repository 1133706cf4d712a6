"""``partition MODEL --data-parallel [BATCH]``: both predictions printed, the winner written with -o,
one-line errors for models without a batch dim and for flags it does not take."""

from __future__ import annotations

import json

import onnx
import pytest

from hetpart.cli.main import main
from data_parallel_cases import split_model


def cli(capsys, *argv):
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "dp.onnx"
    onnx.save(split_model(), path)
    return str(path)


def test_prints_the_split_beside_the_per_kernel_plan_and_writes_the_winner(capsys, model_file, tmp_path):
    rc, out, err = cli(capsys, model_file, "--data-parallel", "16", "-o", str(tmp_path / "out"))
    assert rc == 0, err
    assert "data-parallel split of batch 16" in out and "best per-kernel plan" in out
    assert "splits priced" in out
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written in (["data_parallel.json"], ["plan.json"])
    data = json.loads((tmp_path / "out" / written[0]).read_text())
    if written == ["plan.json"]:  # no gain on these costs: the per-kernel plan, both predictions in it
        assert data["schema"] == "hetpart-plan" and data["predicted"]["data_parallel"]["batch"] == 16
    else:
        assert data["schema"] == "hetpart-data-parallel-plan" and data["b_gpu"] + data["b_cpu"] == 16


def test_a_model_without_a_batch_dim_is_a_one_line_error(capsys, tmp_path):
    path = tmp_path / "fixed.onnx"
    onnx.save(split_model(batch=16), path)
    rc, out, err = cli(capsys, str(path), "--data-parallel", "16")
    assert rc == 1 and out == "" and "no batch dim" in err and "Traceback" not in err


def test_flags_it_does_not_take_are_refused_before_any_work(capsys, model_file, tmp_path):
    rc, out, err = cli(capsys, model_file, "--data-parallel", "16", "--run", "-o", str(tmp_path / "o"))
    assert rc == 1 and "--data-parallel" in err and "--run" in err
