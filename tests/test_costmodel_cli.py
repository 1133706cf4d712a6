"""`partition profile` and `partition costmodel` as a user runs them (CPU only)."""

from __future__ import annotations

import pytest

from hetpart.cli.main import main
from hetpart.costmodel import Profile


@pytest.fixture(scope="module")
def measured_path(tmp_path_factory, seeded_profile):
    """mlp and dlrm measured by `partition profile` into a file that has the CPU overheads already."""
    path = seeded_profile(tmp_path_factory.mktemp("cli") / "prof.json")
    assert main(["profile", "zoo:mlp:small", "zoo:dlrm:small", "--profile", str(path), "--quick",
                 "--device", "cpu", "--jobs", "1"]) == 0
    return path


@pytest.mark.slow
def test_profile_measures_into_the_given_file_and_reports(measured_path, capsys):
    prof = Profile.load(measured_path)
    assert prof.kernels["cpu"] and all(r.ok for r in prof.kernels["cpu"].values())
    assert main(["profile", "zoo:mlp:small", "--profile", str(measured_path), "--device", "cpu", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "mlp_small on cpu: measured 0 kernels" in out and "reused 3" in out
    assert str(measured_path) in out


def test_costmodel_says_which_profile_and_whether_measured_here(measured_path, capsys):
    assert main(["costmodel", "--profile", str(measured_path)]) == 0
    out = capsys.readouterr().out
    assert f"profile: {measured_path} (measured on this machine)" in out
    assert "cpu overheads" in out and "transfers: not measured" in out


def test_costmodel_eval_prints_held_out_errors(measured_path, capsys):
    assert main(["costmodel", "--eval", "--profile", str(measured_path)]) == 0
    out = capsys.readouterr().out
    assert "median err" in out and "p90 err" in out
    assert any(line.split()[:2] == ["cpu", "all"] for line in out.splitlines())
    assert main(["costmodel", "--eval", "--held-out", "model", "--profile", str(measured_path)]) == 0
    out = capsys.readouterr().out
    assert "held out: one model at a time" in out and "median err" in out


def test_costmodel_model_marks_predicted_costs(measured_path, capsys):
    assert main(["costmodel", "zoo:bert:small", "--profile", str(measured_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("node_")]
    assert rows and any(line.rstrip().endswith("p") for line in rows)  # bert's kernels were not measured


def test_corrupt_profile_is_a_one_line_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["costmodel", "--profile", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "corrupt" in err and "Traceback" not in err
    assert main(["profile", "zoo:mlp:small", "--profile", str(bad), "--device", "cpu"]) == 1
    assert bad.read_text() == "{not json"


def test_profile_without_model_or_transfer_is_a_usage_error(capsys):
    assert main(["profile"]) == 1
    assert "--transfer" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [(["--held-out", "model"], ["--held-out", "add --eval"]),
                                         (["--eval", "zoo:mlp:small"], ["--eval", "MODEL", "zoo:mlp:small"])])
def test_costmodel_options_that_would_be_ignored_are_usage_errors(capsys, argv, words):
    assert main(["costmodel", *argv]) == 1  # checked before the profile is even read
    out, err = capsys.readouterr()
    assert err.startswith("partition: error:") and err.count("\n") == 1 and not out, (out, err)
    assert all(w in err for w in words), err
