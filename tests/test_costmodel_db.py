"""Profile database: round trips, atomic writes, corrupt files, fingerprints, resolution order."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.costmodel import Profile, default_profile_path, locate, resolve_profile
from hetpart.costmodel.fingerprint import Fingerprint, this_machine
from hetpart.costmodel.profile_db import KernelFeatures, KernelRecord, Overheads, Timing
from hetpart.costmodel.profiler import open_profile
from hetpart.costmodel.transfer_model import TransferModel, TransferPoint
from hetpart.errors import ProfileError

OTHER = Fingerprint("Some Other CPU", 16, "NVIDIA H100 80GB HBM3", 132, 12080, "0.27.0")

pos = st.floats(min_value=1e-9, max_value=10.0, allow_nan=False)
records = st.builds(
    lambda sig, cls, flops, br, bw, med, spread, n, rule, access: KernelRecord(
        sig, KernelFeatures(cls, ("matmul", "add"), f"fused_{cls}", flops, br, bw, br // 2),
        "ok", Timing(med, med / spread, med * spread, n, 3), rule=rule, access=access),
    st.text("0123456789abcdef", min_size=16, max_size=16), st.sampled_from(["matmul", "conv2d", "injective"]),
    st.integers(0, 10**12), st.integers(1, 10**10), st.integers(1, 10**10), pos,
    st.floats(1.0, 2.0), st.integers(1, 50), st.sampled_from(["", "CpuMatmul", "GpuSplitKGemm", "tuned"]),
    st.sampled_from(["", "contiguous", "strided"]))


def make_profile(path: Path | None = None, fingerprint: Fingerprint | None = None) -> Profile:
    prof = Profile(fingerprint or this_machine(), path=path)
    prof.overheads["cpu"] = Overheads(2e-6, 5e-7, 2.5e-6, 1e-6)
    prof.add_kernel("cpu", KernelRecord("00aa", KernelFeatures("matmul", ("matmul",), "mm", 10**6, 8000, 4000, 4000),
                                        "ok", Timing(1e-4, 9e-5, 2e-4, 7, 10)))
    return prof


@settings(max_examples=25, deadline=None)
@given(st.lists(records, max_size=8), st.lists(pos, min_size=2, max_size=4))
def test_save_load_round_trip_keeps_every_field(tmp_path_factory, recs, times):
    path = tmp_path_factory.mktemp("rt") / "p.json"
    prof = make_profile()
    for r in recs:
        prof.add_kernel("cuda", r)
    pts = [TransferPoint("h2d", "pinned", 4096 * 4**i, t, t, t, 3) for i, t in enumerate(times)]
    prof.transfers = TransferModel.from_points(pts)
    prof.save(path)
    back = Profile.load(path)
    assert back == prof
    data = json.loads(path.read_text())
    assert data["schema"] == "hetpart-profile" and data["version"] == 1


@pytest.mark.parametrize("keys", [("rule", "access"), ("access",)], ids=["no-rule", "no-access"])
def test_a_profile_written_before_records_had_a_rule_or_access_still_loads(tmp_path, keys):
    """Version-1 files from before the ``rule`` and ``access`` keys: records load with ""."""
    path = tmp_path / "old.json"
    make_profile().save(path)
    data = json.loads(path.read_text())
    for recs in data["kernels"].values():
        for rec in recs.values():
            for key in keys:
                del rec[key]
    path.write_text(json.dumps(data))
    back = Profile.load(path)
    rec = back.record("cpu", "00aa")
    assert rec.access == "" and rec.timing.median_s == 1e-4
    assert back.kernels == make_profile().kernels


def test_corrupt_file_names_the_file_and_is_never_overwritten(tmp_path):
    path = tmp_path / "prof.json"
    path.write_text('{"schema": "hetpart-profile", "version": 1, "kernels": {')
    before = path.read_bytes()
    with pytest.raises(ProfileError, match=str(path).replace(".", r"\.") + ".*corrupt"):
        Profile.load(path)
    with pytest.raises(ProfileError, match="corrupt"):
        open_profile(path)  # what `partition profile` does first
    with pytest.raises(ProfileError, match="corrupt"):
        make_profile().save(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content, message", [
    ({"schema": "hetpart-plan", "version": 1}, "not a hetpart profile"),
    ({"schema": "hetpart-profile", "version": 99}, "version 99"),
    ({"schema": "hetpart-profile", "version": 1, "kernels": {}}, "malformed"),
    ([1, 2, 3], "not a hetpart profile"),
])
def test_wrong_schema_version_or_shape_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ProfileError, match=message) as info:
        Profile.load(path)
    assert str(path) in str(info.value)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ProfileError, match="partition profile"):
        Profile.load(tmp_path / "nope.json")


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from hetpart.costmodel.profile_db import Profile, KernelRecord, KernelFeatures, Timing
    prof = Profile.load(sys.argv[1])
    for i in range(2000):  # make the new file much bigger than the old one
        prof.add_kernel("cpu", KernelRecord(f"{i:016x}", KernelFeatures("injective", ("add",), "add", 1, 8, 8, 0),
                                            "ok", Timing(1e-6, 1e-6, 1e-6, 1)))
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die with the new text half on disk
    prof.save()
""")


@pytest.mark.slow
def test_kill_mid_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "p.json"
    make_profile().save(path)
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(path)], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == before
    assert Profile.load(path).record("cpu", "00aa") is not None


def test_interrupt_during_save_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    make_profile().save(path)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_profile(path).save()
    # only the profile and its save lock (.p.json.lock, kept: see profile_db._file_lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.json.lock", "p.json"]


def test_fingerprint_key_is_stable_and_sensitive():
    fp = this_machine()
    assert fp.key() == Fingerprint.from_json(json.loads(json.dumps(fp.to_json()))).key()
    other = dataclasses.replace(fp, cpu_cores=fp.cpu_cores + 1)
    assert other.key() != fp.key()
    assert other.differences(fp) == [f"cpu_cores: {fp.cpu_cores + 1!r} != {fp.cpu_cores!r}"]
    assert default_profile_path().name == f"{fp.key()}.json"


def test_default_path_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_profile_path().is_relative_to(tmp_path / "hetpart" / "profiles")


def test_another_machines_profile_is_not_measured_into_nor_overwritten(tmp_path):
    path = tmp_path / "theirs.json"
    make_profile(fingerprint=OTHER).save(path)
    with pytest.raises(ProfileError, match="another machine"):
        open_profile(path)
    with pytest.raises(ProfileError, match="another machine"):
        make_profile().save(path)
    assert Profile.load(path).fingerprint == OTHER


def test_origin_says_whether_measured_here(tmp_path):
    make_profile().save(tmp_path / "mine.json")
    make_profile(fingerprint=OTHER).save(tmp_path / "theirs.json")
    assert "measured on this machine" in Profile.load(tmp_path / "mine.json").origin
    theirs = Profile.load(tmp_path / "theirs.json").origin
    assert "NOT measured here" in theirs and "NVIDIA H100" in theirs and str(tmp_path / "theirs.json") in theirs


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env profile, an empty cache dir and an empty recorded dir."""
    monkeypatch.delenv(locate.ENV_PROFILE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rec = tmp_path / "recorded"
    rec.mkdir()
    monkeypatch.setattr(locate, "RECORDED_DIR", rec)
    return tmp_path


def test_resolve_order_explicit_then_env_then_recorded(isolated, monkeypatch):
    with pytest.raises(ProfileError, match="no cost-model profile"):
        resolve_profile()
    older = dataclasses.replace(OTHER, gpu_name="NVIDIA A100")
    p_old = make_profile(fingerprint=older)
    p_old.created = "2025-01-01T00:00:00+00:00"
    p_old.save(isolated / "recorded" / "a100.json")
    p_new = make_profile(fingerprint=OTHER)
    p_new.created = "2026-01-01T00:00:00+00:00"
    p_new.save(isolated / "recorded" / "h100.json")
    assert resolve_profile().fingerprint == OTHER  # newest when none matches this machine
    make_profile().save(isolated / "recorded" / "zz_this_machine.json")
    assert resolve_profile().fingerprint == this_machine()  # the matching one wins
    env = isolated / "env.json"
    make_profile(fingerprint=older).save(env)
    monkeypatch.setenv(locate.ENV_PROFILE, str(env))
    assert resolve_profile().path == env
    explicit = isolated / "explicit.json"
    make_profile(fingerprint=OTHER).save(explicit)
    assert resolve_profile(explicit).path == explicit
    prof = Profile.load(explicit)
    assert resolve_profile(prof) is prof


def test_local_profile_is_used_only_where_a_gpu_can_be_measured(isolated, monkeypatch):
    make_profile(fingerprint=OTHER).save(isolated / "recorded" / "h100.json")
    make_profile().save(default_profile_path())
    chosen = resolve_profile()
    if this_machine().has_gpu:
        assert chosen.path == default_profile_path()
    else:  # a CPU-only profile cannot price the GPU: the recorded machine is used for both
        assert chosen.fingerprint == OTHER and "NOT measured here" in chosen.origin


# --- session overheads ------------------------------------------------------------------------------
def test_session_overheads_are_stored_beyond_the_vm_call_and_survive_a_round_trip(tmp_path):
    prof = make_profile()
    prof.set_session_overheads({"cpu": 50e-6})
    oh = prof.overheads["cpu"]
    assert oh.session_s == pytest.approx(50e-6 - oh.call_s - oh.switch_s)
    prof.set_session_overheads({"cpu": 1e-7})  # less than the VM call already counted: clipped
    assert prof.overheads["cpu"].session_s == 0.0
    prof.set_session_overheads({"cpu": 80e-6})
    prof.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json").overheads["cpu"].session_s == pytest.approx(oh.session_s + 30e-6)
    with pytest.raises(ProfileError, match="no overheads for cuda"):
        prof.set_session_overheads({"cuda": 1e-4})


def test_a_profile_written_before_session_overheads_loads_with_zero(tmp_path):
    path = make_profile().save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    del data["overheads"]["cpu"]["session_s"]
    path.write_text(json.dumps(data))
    assert Profile.load(path).overheads["cpu"].session_s == 0.0
