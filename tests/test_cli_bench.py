"""``partition bench`` on a machine without a GPU says so first, in one line."""

from __future__ import annotations

import pytest

from hetpart.cli.main import main


@pytest.fixture
def no_gpu(monkeypatch):
    import hetpart.targets

    monkeypatch.setattr(hetpart.targets, "cuda_available", lambda: False)


@pytest.mark.parametrize("extra", [[], ["--cuda-arch", "sm_90"]])
def test_bench_without_a_gpu_says_so_before_any_work(no_gpu, capsys, monkeypatch, extra):
    monkeypatch.setattr("hetpart.importer.load", lambda *a, **k: pytest.fail("model loaded before the check"))
    rc = main(["bench", "zoo:mlp:small", "--quick", "--no-peers", *extra])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.startswith("partition: error:") and err.count("\n") == 1, err
    assert "no CUDA GPU" in err and "--simulate" in err and "simulate=True" not in err


@pytest.mark.parametrize("model, words", [("{tmp}/nope.onnx", ["nope.onnx", "no such file"]),
                                          ("{tmp}", ["is a directory"]),
                                          ("zoo:nope", ["unknown zoo model 'nope'"])])
def test_a_model_that_is_not_there_is_a_one_line_error_before_any_work(capsys, monkeypatch, tmp_path, model,
                                                                        words):
    monkeypatch.setattr("hetpart.bench.run", lambda *a, **k: pytest.fail("bench ran before the check"))
    rc = main(["bench", "zoo:mlp:small", model.replace("{tmp}", str(tmp_path)), "--simulate", "--quick",
               "--no-peers"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "", out  # not a report whose only trace of it is a note
    assert err.startswith("partition: error:") and err.count("\n") == 1, err
    assert all(w in err for w in words), err
