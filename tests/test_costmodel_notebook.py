"""notebooks/costmodel_tuning.ipynb runs top to bottom without a GPU, and shows its figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat, nbclient)")
NotebookClient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient").NotebookClient

from hetpart.costmodel import Profile, profile, recorded_profiles
from hetpart.costmodel.fingerprint import Fingerprint
from hetpart.costmodel.kernel_bench import MeasureSettings
from hetpart.costmodel.profile_db import KernelFeatures, KernelRecord, Overheads, Timing
from hetpart.costmodel.transfer_model import TransferModel, TransferPoint

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "costmodel_tuning.ipynb"


def run_notebook(tmp_path, monkeypatch, profile_path, model="zoo:mlp:small") -> tuple[str, int]:
    """Execute the notebook as Jupyter does: (its printed text, how many figures it showed)."""
    monkeypatch.setenv("HETPART_PROFILE", str(profile_path))
    monkeypatch.setenv("HETPART_WHATIF_MODEL", model)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend, as a user gets
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    figures = sum(1 for o in outputs if o.get("output_type") == "display_data" and "image/png" in o.get("data", {}))
    return "\n".join(o.get("text", "") for o in outputs), figures


def synthetic_gpu_profile(graph, path) -> Profile:
    """Two devices priced by a roofline (GPU 20x the CPU's rates) and a 25 GB/s link.

    A fixture for running the what-if cells before a recorded GPU profile exists; its
    fingerprint says it is synthetic, so the notebook reports it as not measured here.
    """
    prof = Profile(Fingerprint("synthetic CPU", 16, "synthetic GPU", 100, 1, "0"))
    rates = {"cpu": (2e-6, 5e10, 2e10), "cuda": (8e-6, 1e12, 4e11)}
    rng = np.random.default_rng(0)
    for device, (c, fps, bps) in rates.items():
        prof.overheads[device] = Overheads(1e-6, 1e-6, 2e-6, 5e-6)
        for k in graph.nodes:
            t = (c + k.flops / fps + (k.bytes_read + k.bytes_written) / bps) * rng.uniform(0.9, 1.1)
            prof.add_kernel(device, KernelRecord(k.signature, KernelFeatures.of(k), "ok", Timing(t, t, t, 3)))
    prof.transfers = TransferModel.from_points(
        [TransferPoint(d, "pinned", n, 1e-5 + n / 2.5e10, 1e-5 + n / 2.5e10, 1e-5 + n / 2.5e10, 3)
         for d in ("h2d", "d2h") for n in (4096, 1 << 20, 64 << 20)])
    prof.models[graph.name] = sorted({k.signature for k in graph.nodes})
    prof.save(path)
    return prof


@pytest.mark.slow
def test_notebook_on_a_cpu_only_profile_measured_here(tmp_path, monkeypatch, zoo_graph, seeded_profile):
    path = seeded_profile(tmp_path / "cpu.json")
    profile(zoo_graph("dlrm"), ("cpu",), path, settings=MeasureSettings(3, 1), progress=False, jobs=1)
    out, figures = run_notebook(tmp_path, monkeypatch, path)
    assert "measured on this machine" in out and "has no CUDA measurements" in out
    assert "no transfer model" in out
    assert figures == 2  # measured vs predicted, residuals (no transfer model, no what-if)


@pytest.mark.skipif(bool(recorded_profiles()), reason="a recorded profile exists: "
                    "test_notebook_on_the_recorded_profile runs the same what-if cells on it")
@pytest.mark.slow
def test_notebook_what_if_on_a_two_device_profile(tmp_path, monkeypatch, zoo_graph):
    """Before a GPU profile is recorded: the what-if cells on a synthetic two-device one."""
    path = tmp_path / "synthetic.json"
    synthetic_gpu_profile(zoo_graph("bert"), path)
    out, figures = run_notebook(tmp_path, monkeypatch, path, model="zoo:bert:small")
    assert "NOT measured here" in out
    assert "gpu  64x slower" in out and "link  64x slower" in out
    assert figures == 4  # measured vs predicted, residuals, transfer model, what-if


def thinned(path, out, keep_every: int = 6):
    """The recorded profile with every ``keep_every``-th kernel of each op class per
    device (signature order; the first of each class always kept): the same machine,
    transfer model and op classes, but held-out fits that cost a small share (each
    held-out kernel refits on the rest: n² fits, and the notebook fits twice; the whole
    H200 profile takes minutes of CI's 2 cores).  Of h200.json's 177 kernels per device
    it keeps 33, every one of its 9 op classes among them."""
    import json

    data = json.loads(path.read_text())
    kept = {}
    for device, records in data["kernels"].items():
        by_class: dict[str, list] = {}
        for sig, record in sorted(records.items()):
            by_class.setdefault(record["op_class"], []).append((sig, record))
        kept[device] = dict(sorted(pair for members in by_class.values() for pair in members[::keep_every]))
    data["kernels"] = kept
    out.write_text(json.dumps(data))
    return out


def test_thinning_keeps_every_op_class(tmp_path):
    """What the recorded-profile notebook test relies on: a thinned profile still holds
    every op class of each device."""
    import json

    for path in recorded_profiles():
        full = json.loads(path.read_text())["kernels"]
        thin = json.loads(thinned(path, tmp_path / path.name).read_text())["kernels"]
        for device, records in full.items():
            assert {r["op_class"] for r in thin[device].values()} == {r["op_class"] for r in records.values()}
            assert set(thin[device]) <= set(records) and len(thin[device]) < len(records) / 4


@pytest.mark.skipif(not recorded_profiles(), reason="no recorded profile in hetpart/costmodel/recorded/ yet "
                                                   "(the lead records it on the GPU machine)")
@pytest.mark.parametrize("path", recorded_profiles(), ids=[p.name for p in recorded_profiles()])
@pytest.mark.slow
def test_notebook_on_the_recorded_profile(tmp_path, monkeypatch, path):
    """The two-device cells (transfer model, what-if) on a GPU profile recorded elsewhere,
    which the notebook says it is (on the machine that recorded it: measured here).  It
    replaces the synthetic-profile run while a recorded profile exists (the same cells)."""
    thin = thinned(path, tmp_path / path.name)
    out, figures = run_notebook(tmp_path, monkeypatch, thin, model="zoo:bert:small")
    here = Profile.load(thin).measured_here()
    assert ("measured on this machine" if here else "NOT measured here") in out
    assert "gpu  64x slower" in out and "link  64x slower" in out
    assert figures == 4  # measured vs predicted, residuals, transfer model, what-if
