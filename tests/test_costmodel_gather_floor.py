"""The cold-weight floor of a gather of weights (issue 19, zoo moe): the rows it reads
plus the copy it writes (``cost_model.GATHER_FLOOR_COUNTS_COPY``), every other kernel's
floor as before.  bench/results/capped-moe-pricing.md has the measurements."""

from __future__ import annotations

import pytest

from hetpart.costmodel import CostModel, Profile
from hetpart.costmodel import cost_model as cm
from hetpart.costmodel.fingerprint import this_machine
from hetpart.costmodel.kernel_shape import weight_bytes_read
from hetpart.costmodel.profile_db import KernelFeatures, Overheads

CPU = Overheads(1e-6, 3e-7, 1e-6, 8e-7, wake_s=1e-4)
BW = 95.5e9


@pytest.fixture(scope="module")
def moe():
    from hetpart import importer

    return importer.load("zoo:moe:small")


def _costs(tmp_path) -> CostModel:
    prof = Profile(this_machine(), path=tmp_path / "p.json")
    prof.overheads["cpu"] = Overheads(**{**CPU.__dict__, "weight_read_Bps": BW})
    prof.overheads["cuda"] = Overheads(1e-6, 4e-6, 6e-6, 5e-6, wake_s=0.0)
    return CostModel(prof, cache_bytes={"cpu": 0})  # a cold cache: every weight from memory


def _expert_gathers(graph):
    out = [k for k in graph.nodes if k.param_bytes and KernelFeatures.of(k).op_class == "gather"
           and KernelFeatures.of(k).bytes_written <= k.param_bytes]
    assert sum(k.param_bytes == 8 * 32 * 48 * 4 for k in out) == 6, "zoo:moe:small: 2 layers x 3 expert tables"
    return out


def test_a_gather_of_expert_weights_is_floored_at_its_rows_read_and_their_copy_written(tmp_path, moe):
    """Before the fix the floor counted the chosen rows only: a CPU expert gather was priced
    at half its memory traffic, 0.24 ms under per projection on zoo moe at 95.5 GB/s."""
    costs = _costs(tmp_path)
    for k in _expert_gathers(moe):
        f = KernelFeatures.of(k)
        rows = weight_bytes_read(f)
        assert 0 < rows <= k.param_bytes  # the chosen experts' rows (small: 8 choices of 8 experts)
        assert costs.weight_floor(k, "cpu") == pytest.approx(CPU.launch_s + (rows + f.bytes_written) / BW)


def test_the_switch_off_is_the_rows_alone_and_other_kernels_are_unchanged(tmp_path, moe, monkeypatch):
    costs = _costs(tmp_path)
    others = [k for k in moe.nodes if k.param_bytes and KernelFeatures.of(k).op_class != "gather"]
    assert others
    before = {k.name: costs.weight_floor(k, "cpu") for k in moe.nodes}
    monkeypatch.setattr(cm, "GATHER_FLOOR_COUNTS_COPY", False)
    for k in _expert_gathers(moe):
        rows = weight_bytes_read(KernelFeatures.of(k))
        off = costs.weight_floor(k, "cpu")
        assert off == pytest.approx(CPU.launch_s + rows / BW) and off < before[k.name]
    for k in others:  # a matmul reads its weights in place: its floor is its weights either way
        assert costs.weight_floor(k, "cpu") == before[k.name] == pytest.approx(CPU.launch_s + k.param_bytes / BW)


def test_cold_weight_traffic_is_at_most_twice_the_rows_and_zero_without_weights(moe):
    for k in moe.nodes:
        f = KernelFeatures.of(k)
        read = weight_bytes_read(f)
        traffic = cm.cold_weight_traffic(f)
        assert (traffic == 0) == (read == 0)
        assert read <= traffic <= (2 * read if f.op_class == "gather" else read)
