"""Profile files under attack (issue 21, items 8, 9, 19): binary or unwritable files,
records with nonsense numbers, two writers at once, a CPU-only profile on a machine
without a GPU.  Every failure must be a ProfileError naming the file (and record)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hetpart.costmodel import Profile, resolve_profile
from hetpart.costmodel.fingerprint import this_machine
from hetpart.costmodel.profile_db import KernelFeatures, KernelRecord, Overheads, Timing
from hetpart.errors import ProfileError

ROOT = Path(__file__).resolve().parents[1]


def make_profile(path=None) -> Profile:
    prof = Profile(this_machine(), path=path)
    prof.overheads["cpu"] = Overheads(2e-6, 5e-7, 2.5e-6, 1e-6)
    prof.add_kernel("cpu", KernelRecord("00aa", KernelFeatures("matmul", ("matmul",), "mm", 10**6, 8000, 4000, 4000),
                                        "ok", Timing(1e-4, 9e-5, 2e-4, 7, 10)))
    return prof


def child_env(**extra) -> dict:
    """This process's environment with the checkout first on PYTHONPATH (keeping the
    rest: on the GPU machine TVM itself comes from PYTHONPATH)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def cli_process(*argv, env=None, cwd=None) -> subprocess.CompletedProcess:
    e = child_env(**(env or {}))
    return subprocess.run([sys.executable, "-m", "hetpart.cli.main", *argv], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=300)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """``partition ARGV`` in this process: (exit status, stdout, stderr).  ``main``
    returns the status the process would exit with and prints what it would print (a
    process per call cost ~3 s of TVM import; the process entry point has its own
    tests in test_cli_module and test_importer)."""
    from hetpart.cli.main import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --- item 8: files that are not profiles, paths that cannot be written -------------------
def test_a_binary_file_is_a_profile_error_naming_it(tmp_path):
    path = tmp_path / "prof.json"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ProfileError, match=str(path)):
        Profile.load(path)


@pytest.mark.parametrize("how", ["--profile", "HETPART_PROFILE"])
def test_cli_with_a_binary_profile_exits_1_naming_it(tmp_path, how, capsys, monkeypatch):
    path = tmp_path / "prof.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 50)
    argv = ["zoo:mlp:small"] + (["--profile", str(path)] if how == "--profile" else [])
    if how != "--profile":
        monkeypatch.setenv("HETPART_PROFILE", str(path))
    rc, _, err = cli(capsys, *argv)
    assert rc == 1, err[-2000:]
    assert str(path) in err and "internal error" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_profile_path_is_a_profile_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ProfileError, match=r"cannot write profile .*ro/p\.json"):
            make_profile().save(ro / "p.json")
    finally:
        ro.chmod(0o755)


def test_a_profile_path_under_a_file_is_a_profile_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProfileError, match=r"cannot write profile .*file/p\.json"):
        make_profile().save(tmp_path / "file" / "p.json")


@pytest.mark.parametrize("edit, named", [
    (lambda d: d["kernels"]["cpu"]["00aa"]["timing"].update(median_s="fast"), r'kernels\["cpu"\]\["00aa"\]\.timing\.median_s'),
    (lambda d: d["kernels"]["cpu"]["00aa"]["timing"].update(median_s=math.nan), r"median_s is nan"),
    (lambda d: d["kernels"]["cpu"]["00aa"]["timing"].update(max_s=math.inf), r"max_s is inf"),
    (lambda d: d["kernels"]["cpu"]["00aa"]["timing"].update(count=0), r"timing\.count"),
    (lambda d: d["kernels"]["cpu"]["00aa"].update(flops=-5), r"\.flops"),
    (lambda d: d["kernels"]["cpu"]["00aa"].update(status="great"), r"\.status"),
    (lambda d: d["kernels"]["cpu"]["00aa"].update(timing=None), r"no timing"),
    (lambda d: d["overheads"]["cpu"].update(launch_s=-math.inf), r'overheads\["cpu"\]\.launch_s'),
], ids=["string", "nan", "inf", "count0", "negative-flops", "status", "ok-without-timing", "overhead-inf"])
def test_a_record_with_unusable_numbers_is_refused_naming_the_record(tmp_path, edit, named):
    path = tmp_path / "p.json"
    make_profile().save(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))  # json writes NaN / Infinity, as Python's json reads them
    with pytest.raises(ProfileError, match=named) as info:
        Profile.load(path)
    assert str(path) in str(info.value)


def test_non_finite_values_are_never_written(tmp_path):
    path = tmp_path / "p.json"
    prof = make_profile()
    prof.add_kernel("cpu", KernelRecord("00bb", prof.record("cpu", "00aa").features, "ok",
                                        Timing(math.nan, 1e-5, 1e-4, 3, 1)))
    with pytest.raises(ProfileError, match=r'kernels\["cpu"\]\["00bb"\]\.timing\.median_s is nan'):
        prof.save(path)
    assert not path.exists()
    assert "NaN" not in json.dumps(make_profile().to_json(), allow_nan=False)


def test_the_recorded_profiles_pass_the_check():
    from hetpart.costmodel import recorded_profiles

    for p in recorded_profiles():
        Profile.load(p)  # raises when a record is unusable


# --- item 9: two writers at once ----------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hetpart.costmodel.profiler import open_profile
    from hetpart.costmodel.profile_db import KernelFeatures, KernelRecord, Overheads, Timing
    path, tag, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    prof = open_profile(path)            # both read the file before either writes, as two
    Path(go.parent / ("ready-" + tag)).write_text("")   # `partition profile` runs do
    while not go.exists():
        time.sleep(0.01)
    prof.overheads.setdefault("cpu", Overheads(1e-6, 1e-7, 1e-6, 1e-7))
    for i in range(40):
        sig = f"{tag}{i:04d}"
        prof.add_kernel("cpu", KernelRecord(sig, KernelFeatures("injective", ("add",), "f", 1, 4, 4, 0),
                                            "ok", Timing(1e-5, 1e-5, 1e-5, 3, 1)))
        prof.save()
    prof.models["model_" + tag] = [f"{tag}{i:04d}" for i in range(40)]
    prof.save()
""")


@pytest.mark.slow
def test_two_processes_profiling_into_one_file_lose_nothing(tmp_path):
    path = tmp_path / "shared.json"
    make_profile().save(path)
    go = tmp_path / "go"
    env = child_env()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(go)], env=env) for tag in "ab"]
    for _ in range(6000):
        if all((tmp_path / f"ready-{t}").exists() for t in "ab") or any(p.poll() is not None for p in procs):
            break
        import time

        time.sleep(0.01)
    go.write_text("")
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    back = Profile.load(path)
    sigs = set(back.kernels["cpu"])
    assert {f"{t}{i:04d}" for t in "ab" for i in range(40)} <= sigs
    assert "00aa" in sigs
    assert {"model_a", "model_b"} <= set(back.models)


# --- item 19: a GPU-less machine's own profile, and --transfer on a fresh GPU machine ------
def cpu_only_profile(path: Path) -> Profile:
    """This machine's kind of profile where there is no GPU: CPU records only (taken
    from the recorded machine's CPU, timings x3 so they are told apart)."""
    from dataclasses import replace

    from hetpart.costmodel import recorded_profiles
    from hetpart.costmodel.fingerprint import Fingerprint

    rec = Profile.load(recorded_profiles()[0])
    prof = Profile(Fingerprint("A GPU-less CPU", 2, None, None, None, rec.fingerprint.tvm_version), path=path)
    prof.overheads["cpu"] = rec.overheads["cpu"]
    prof.targets["cpu"] = rec.targets["cpu"]
    for sig, r in rec.kernels["cpu"].items():
        t = r.timing
        prof.add_kernel("cpu", replace(r, timing=replace(t, median_s=3 * t.median_s, min_s=3 * t.min_s,
                                                          max_s=3 * t.max_s) if t else None))
    prof.save(path)
    return prof


def test_a_cpu_only_profile_plans_with_the_recorded_gpu_and_says_so(tmp_path, zoo_graph):
    import hetpart
    from hetpart.costmodel import recorded_profiles

    from hetpart.costmodel.locate import with_recorded_gpu

    path = tmp_path / "cpu.json"
    mine = cpu_only_profile(path)
    assert resolve_profile(path) == mine  # the file as it is (`partition costmodel` shows it)
    both = with_recorded_gpu(resolve_profile(path))
    recorded = Profile.load(recorded_profiles()[0])
    assert both.kernels["cpu"] == mine.kernels["cpu"] and both.kernels["cuda"] == recorded.kernels["cuda"]
    assert both.overheads["cpu"] == mine.overheads["cpu"] and both.transfers == recorded.transfers
    assert "two machines" in both.origin and both.path is None  # cannot be saved over either file
    plan = hetpart.partition(zoo_graph("mlp"), profile=path, progress=False)
    assert "two machines" in plan.profile_origin


def test_cli_plans_with_a_cpu_only_profile(tmp_path, capsys):
    path = tmp_path / "cpu.json"
    cpu_only_profile(path)
    rc, out, err = cli(capsys, "zoo:mlp:small", "--profile", str(path))
    assert rc == 0, err[-2000:]
    assert "two machines" in out


@pytest.mark.cuda
def test_transfer_alone_on_a_fresh_gpu_machine_measures_everything_it_needs(tmp_path):
    path = tmp_path / "fresh.json"
    res = cli_process("profile", "--transfer", "--quick", "--profile", str(path))
    assert res.returncode == 0, res.stderr[-3000:]
    prof = Profile.load(path)
    assert set(prof.overheads) == {"cpu", "cuda"} and prof.transfers is not None
    assert prof.gpu_memory_bytes and prof.gpu_memory_bytes > 2**30


# --- item 11 (planner part): the GPU's memory is the default cap --------------------------
def test_the_gpus_memory_is_the_default_cap(zoo_onnx):
    """An input dim of 2**40 needs TiBs of activations: no plan may put them on the GPU."""
    import onnx

    import hetpart
    from hetpart.costmodel import recorded_profiles

    model = onnx.ModelProto()
    model.CopyFrom(zoo_onnx("mlp"))
    for vi in (*model.graph.input, *model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 2**40
    graph = hetpart.load(model)
    prof = Profile.load(recorded_profiles()[0])
    assert prof.gpu_memory_bytes and prof.gpu_memory_bytes > 2**30
    plan = hetpart.partition(graph, profile=prof, progress=False)
    assert plan.gpu_memory_cap == prof.gpu_memory_bytes
    assert set(plan.assignment.values()) == {"cpu"}


def test_transfer_without_a_gpu_says_it_needs_one_before_measuring_anything(tmp_path, capsys):
    from hetpart.targets import cuda_available

    if cuda_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "p.json"
    rc, _, err = cli(capsys, "profile", "--transfer", "--quick", "--profile", str(path))
    assert rc == 1 and "run `partition profile --transfer` on the machine with the GPU" in err
    assert not path.exists()


def test_a_failing_write_is_a_profile_error(tmp_path, monkeypatch):
    """Where permissions cannot be tested (root ignores them), the disk refusing."""
    from hetpart.costmodel import profile_db

    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(profile_db, "atomic_write_text", refuse)
    with pytest.raises(ProfileError, match=r"cannot write profile .*p\.json: Permission denied"):
        make_profile().save(tmp_path / "p.json")


def test_a_profile_object_with_nan_timings_cannot_make_a_plan(zoo_graph):
    """Built in code, not loaded: a NaN must not become a plan of 'nan us'."""
    import dataclasses

    import hetpart
    from hetpart.costmodel import recorded_profiles

    prof = Profile.load(recorded_profiles()[0])
    sig, rec = next((s, r) for s, r in prof.kernels["cuda"].items() if r.ok)
    prof.kernels["cuda"][sig] = dataclasses.replace(rec, timing=dataclasses.replace(rec.timing, median_s=math.nan))
    with pytest.raises(ProfileError, match=rf'kernels\["cuda"\]\["{sig}"\]\.timing\.median_s is nan'):
        hetpart.partition(zoo_graph("mlp"), profile=prof, progress=False)
