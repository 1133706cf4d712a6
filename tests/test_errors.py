"""The error hierarchy as a caller meets it: importable from ``hetpart``, advice in the
caller's own language (API arguments from Python, flags from the CLI)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import hetpart
from hetpart import errors
from hetpart.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_error_class_is_importable_from_hetpart():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, (errors.HetpartError, errors.InternalError)) and c.__module__ == errors.__name__]
    assert len(classes) >= 10
    for cls in classes:
        assert getattr(hetpart, cls.__name__) is cls, cls.__name__
        assert cls.__name__ in hetpart.__all__


def test_the_errors_the_readme_lists_are_importable_from_hetpart():
    text = README.read_text()
    listed = re.findall(r"`(?:hetpart\.)?(\w+(?:Error|Failure))`", text)
    assert "ModelLoadError" in listed and "RuntimeFailure" in listed
    for name in listed:
        assert issubclass(getattr(hetpart, name), Exception), name


def test_option_is_spelled_as_the_caller_spells_it():
    exc = errors.NoGPUError(f"pass {errors.option('cuda_arch', 'sm_90')} or {errors.option('simulate', True)}; "
                            f"raise {errors.option('gpu_memory')}, fix {errors.option('shape')}")
    assert str(exc) == "pass cuda_arch='sm_90' or simulate=True; raise gpu_memory, fix shapes"
    assert exc.cli_message() == "pass --cuda-arch sm_90 or --simulate; raise --gpu-memory, fix --shape"


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine, as if it had no CUDA GPU (also on the GPU machine)."""
    import hetpart.targets

    monkeypatch.setattr(hetpart.targets, "cuda_available", lambda: False)


def test_compile_without_a_gpu_advises_api_arguments(no_gpu, zoo_graph):
    graph = zoo_graph("mlp")
    plan = hetpart.partition(graph, pins=["node_1=cuda"])
    with pytest.raises(hetpart.NoGPUError) as info:
        hetpart.compile(plan, graph, progress=False)
    message = str(info.value)
    assert "simulate=True" in message and "cuda_arch='sm_90'" in message
    assert "--" not in message


def test_cli_compile_without_a_gpu_advises_flags(no_gpu, tmp_path, capsys):
    rc = main(["zoo:mlp:small", "--pin", "node_1=cuda", "-o", str(tmp_path / "out"), "--compile"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "--simulate" in err and "--cuda-arch sm_90" in err
    assert "simulate=True" not in err


def test_plan_save_creates_missing_parent_directories(tmp_path, zoo_graph):
    plan = hetpart.partition(zoo_graph("mlp"))
    path = plan.save(tmp_path / "new" / "dir" / "plan.json")
    assert hetpart.Plan.load(path, zoo_graph("mlp")).assignment == plan.assignment
