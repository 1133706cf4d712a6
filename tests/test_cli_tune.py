"""`partition tune`: arguments and help, the missing-dependency error, where the tuning
database lives (default_database / default_database_dir), that the compiler and the
cost model pass it to kernels.build, and (slow) a real tune whose database the builds
then pick up."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from hetpart.cli.main import main
from hetpart.cli.registry import COMMANDS, make_parser
from hetpart.kernels import tuning
from hetpart.targets import cpu_tvm_target, cuda_available, cuda_tvm_target


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No HETPART_TUNING_DB, and a cache dir of our own (never the user's)."""
    monkeypatch.delenv(tuning.ENV_TUNING_DB, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _fake_db(path) -> str:
    os.makedirs(path, exist_ok=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            f.write("[]\n")
    return str(path)


# --- arguments and help ----------------------------------------------------------------
def test_tune_is_registered_and_listed(capsys):
    assert "tune" in COMMANDS
    assert main(["--help"]) == 0
    assert "tune" in capsys.readouterr().out


def test_help_says_where_the_db_is_and_how_to_use_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("--target", "--trials", "--db", "HETPART_TUNING_DB", "XDG_CACHE_HOME", "Ctrl-C",
                 'pip install -e ".[tune]"', "--compile"):
        assert text in out, text


def test_parses_arguments():
    args = make_parser(COMMANDS["tune"]).parse_args(
        ["zoo:mlp:small", "--target", "cuda", "--trials", "8", "--db", "d", "--shape", "x=1,4"])
    assert (args.model, args.target, args.trials, args.db, args.shape) == ("zoo:mlp:small", "cuda", 8, "d", ["x=1,4"])
    args = make_parser(COMMANDS["tune"]).parse_args(["m.onnx", "--target", "cpu", "--trials", "1"])
    assert args.db is None and args.cuda_arch is None


@pytest.mark.parametrize("argv", [
    ["zoo:mlp:small", "--trials", "4"],                      # no --target
    ["zoo:mlp:small", "--target", "cpu"],                    # no --trials
    ["zoo:mlp:small", "--target", "gpu", "--trials", "4"],   # unknown target
    ["zoo:mlp:small", "--target", "cpu", "--trials", "0"],
    ["zoo:mlp:small", "--target", "cpu", "--trials", "many"],
    ["--target", "cpu", "--trials", "4"],                    # no MODEL
])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", *argv])
    assert exc.value.code == 2
    assert "usage: partition tune" in capsys.readouterr().err


# --- missing dependencies ---------------------------------------------------------------
def test_missing_dependency_says_what_to_install(monkeypatch, capsys, clean_env):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` now fails
    monkeypatch.setattr("hetpart.importer.load", lambda *a, **k: pytest.fail("model loaded before the check"))
    assert "xgboost" in tuning.missing_tune_deps()
    rc = main(["tune", "zoo:mlp:small", "--target", "cpu", "--trials", "4"])
    err = capsys.readouterr().err
    assert rc == 1
    assert 'pip install -e ".[tune]"' in err and "xgboost" in err
    assert "Traceback" not in err
    assert not os.path.exists(clean_env / "cache")  # nothing written


def test_tune_function_raises_dependency_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tuning, "missing_tune_deps", lambda: ["psutil", "cloudpickle"])
    with pytest.raises(tuning.TuningDependencyError, match=r'pip install -e "\.\[tune\]"'):
        tuning.tune(None, cpu_tvm_target(), 2, str(tmp_path), progress=False)


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("extra", [[], ["--cuda-arch", "sm_90"]])
def test_cuda_without_gpu_is_a_no_gpu_error(extra, monkeypatch, capsys, clean_env):
    monkeypatch.setattr(tuning, "missing_tune_deps", lambda: [])
    rc = main(["tune", "zoo:mlp:small", "--target", "cuda", "--trials", "4", *extra])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no CUDA GPU" in err and "Traceback" not in err


# --- where the database lives -----------------------------------------------------------
def test_default_dir_under_xdg_cache(clean_env):
    cpu = cpu_tvm_target()
    want = clean_env / "cache" / "hetpart" / "tuning" / f"llvm-{cpu.attrs['mcpu']}"
    assert tuning.default_database_dir(cpu) == str(want)
    assert tuning.default_database_dir(cuda_tvm_target("sm_90")) == str(
        clean_env / "cache" / "hetpart" / "tuning" / "cuda-sm_90")


def test_default_dir_without_xdg_is_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(tuning.ENV_TUNING_DB, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    got = tuning.default_database_dir(cuda_tvm_target("sm_80"))
    assert got == str(tmp_path / ".cache" / "hetpart" / "tuning" / "cuda-sm_80")


def test_env_var_overrides_default_dir(monkeypatch, clean_env):
    monkeypatch.setenv(tuning.ENV_TUNING_DB, str(clean_env / "mine"))
    assert tuning.default_database_dir(cpu_tvm_target()) == str(clean_env / "mine")
    assert tuning.default_database_dir(cuda_tvm_target("sm_90")) == str(clean_env / "mine")


def test_default_database_only_when_it_holds_records(monkeypatch, clean_env):
    cpu = cpu_tvm_target()
    assert tuning.default_database(cpu) is None  # no directory
    path = tuning.default_database_dir(cpu)
    os.makedirs(path)
    assert tuning.default_database(cpu) is None  # empty directory
    _fake_db(path)
    assert tuning.default_database(cpu) == path
    assert tuning.default_database(cuda_tvm_target("sm_90")) is None  # another target's
    monkeypatch.setenv(tuning.ENV_TUNING_DB, str(clean_env / "nothing"))
    assert tuning.default_database(cpu) is None  # the env var wins, even when empty
    monkeypatch.setenv(tuning.ENV_TUNING_DB, _fake_db(clean_env / "env-db"))
    assert tuning.default_database(cpu) == str(clean_env / "env-db")


# --- the compiler and the cost model pass it on ----------------------------------------
class _Stop(Exception):
    pass


def _recording_build(calls):
    def fake_build(mod, target, **kwargs):
        calls.append(kwargs)
        raise _Stop

    return fake_build


def test_cost_model_build_uses_default_database(monkeypatch, clean_env):
    from hetpart import kernels
    from hetpart.costmodel import kernel_bench

    calls = []
    monkeypatch.setattr(kernels, "build", _recording_build(calls))
    cpu = cpu_tvm_target()
    with pytest.raises(_Stop):
        kernel_bench.build_module(None, cpu)
    db = _fake_db(tuning.default_database_dir(cpu))
    with pytest.raises(_Stop):
        kernel_bench.build_module(None, cpu)
    assert [c.get("tuning_db", "absent") for c in calls] == [None, db]


def test_compiler_build_uses_default_database(monkeypatch, clean_env):
    from hetpart import kernels
    from hetpart.compiler import build as compiler_build
    from hetpart.errors import CompileError
    from hetpart.kernels.options import DEFAULT
    from hetpart.targets import resolve

    calls = []
    monkeypatch.setattr(kernels, "build", _recording_build(calls))
    spec = resolve("cpu")
    db = _fake_db(tuning.default_database_dir(spec.tvm_target))
    program = SimpleNamespace(module=None, name="p0", device="cpu", weights=(), slot_graphs=False,
                              static_io=False, mapped=False)  # not streamed, not mapped
    with pytest.raises(CompileError):
        compiler_build.build_partition(program, spec, clean_env)
    assert len(calls) == 1
    lift = calls[0].pop("lift")  # the external-weights lifter (hetpart.compiler.external), not the point here
    assert lift is not None and calls == [{"cuda_graph": False, "tuning_db": db, "options": DEFAULT}]


# --- a real (tiny) tune ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(bool(tuning.missing_tune_deps()), reason="tune extra not installed")
def test_tune_writes_db_that_builds_then_use(clean_env, capsys):
    import tvm
    from tvm import relax

    from hetpart import importer, kernels

    rc = main(["tune", "zoo:mlp:small", "--target", "cpu", "--trials", "4"])
    out = capsys.readouterr().out
    cpu = cpu_tvm_target()
    db = tuning.default_database(cpu)
    assert rc == 0, out
    assert db == tuning.default_database_dir(cpu)
    assert db.startswith(str(clean_env / "cache" / "hetpart" / "tuning"))
    assert f"tuning database: {db}" in out and "automatically" in out
    graph = importer.load("zoo:mlp:small")
    applied = tuning.apply_database(graph.module, cpu, db)
    assert "tuned" in kernels.rules_applied(applied).values()

    # the tuned build computes what the untuned one does
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(graph.tensors[n].shape).astype(graph.tensors[n].dtype) for n in graph.inputs]

    def run(ex):
        vm = relax.VirtualMachine(ex, tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(a) for a in feeds])
        return (out[0] if isinstance(out, tvm.ir.Array) else out).numpy()

    np.testing.assert_allclose(run(kernels.build(graph.module, cpu, tuning_db=db)),
                               run(kernels.build(graph.module, cpu)), rtol=1e-4, atol=1e-4)


# --- Ctrl-C ------------------------------------------------------------------------------
def _fake_search(monkeypatch, search):
    """Replace MetaSchedule's search (and builder) with ``search(**kwargs)``."""
    from tvm.s_tir import meta_schedule as ms

    monkeypatch.setattr(tuning, "missing_tune_deps", lambda: [])
    monkeypatch.setattr(ms.relax_integration, "tune_relax", lambda *a, **k: search(**k))
    monkeypatch.setattr(ms.builder, "LocalBuilder", lambda **k: None)


def _ctrl_c():
    import signal

    signal.raise_signal(signal.SIGINT)


def _ctrl_c_seen_through_ffi():
    """What TVM does: the KeyboardInterrupt comes back as a bare RuntimeError."""
    try:
        _ctrl_c()
    except KeyboardInterrupt:
        raise RuntimeError() from None


@pytest.mark.parametrize("interrupt", [_ctrl_c, _ctrl_c_seen_through_ffi])
def test_interrupt_keeps_records(interrupt, monkeypatch, tmp_path, capsys, zoo_graph):
    def search(work_dir, **_):
        with open(os.path.join(work_dir, "database_workload.json"), "w") as f:
            f.write("w\n")
        with open(os.path.join(work_dir, "database_tuning_record.json"), "w") as f:
            f.write("r1\nr2\n")
        interrupt()

    _fake_search(monkeypatch, search)
    assert tuning.tune(zoo_graph("mlp").module, cpu_tvm_target(), 8, str(tmp_path)) == 2
    assert "interrupted; keeping the records" in capsys.readouterr().err


def test_other_errors_are_not_taken_for_interrupts(monkeypatch, tmp_path, zoo_graph):
    def search(**_):
        raise RuntimeError("a real failure")

    _fake_search(monkeypatch, search)
    with pytest.raises(RuntimeError, match="a real failure"):
        tuning.tune(zoo_graph("mlp").module, cpu_tvm_target(), 8, str(tmp_path), progress=False)


def test_trials_are_spread_over_the_kernels(monkeypatch, tmp_path, zoo_graph):
    seen = {}
    _fake_search(monkeypatch, lambda **k: seen.update(k))
    tuning.tune(zoo_graph("mlp").module, cpu_tvm_target(), 10, str(tmp_path), progress=False)
    assert seen["max_trials_global"] == 10
    assert seen["max_trials_per_task"] == 4  # 3 kernels: ceil(10 / 3)
    assert seen["num_trials_per_iter"] == 4


def test_cli_interrupted_before_any_record(monkeypatch, capsys, clean_env):
    _fake_search(monkeypatch, lambda **k: _ctrl_c_seen_through_ffi())
    rc = main(["tune", "zoo:mlp:small", "--target", "cpu", "--trials", "8"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "interrupted" in cap.err and "Traceback" not in cap.err
    assert "no schedule was recorded" in cap.out
    assert tuning.default_database(cpu_tvm_target()) is None
