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
    """zoo:moe:small imported with its expert gathers as kernels of their own (the fusion off:
    the gather floor is what a model keeps where the fusion does not apply)."""
    from hetpart import importer
    from hetpart.bench.switches import switched

    with switched(["hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER=0"]):
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


# --- the gather fused into its matmul (hetpart.importer.expert_matmul, switch on) ---------------
@pytest.fixture(scope="module")
def moe_fused():
    """zoo:moe:small at one token (top-2 of 8 experts: a quarter of each table read), imported
    with and without the expert gathers fused into their matmuls."""
    from hetpart import importer, models
    from hetpart.importer import expert_matmul as em

    m = models.build("moe", small=True, seq_len=1)
    graphs, was = {}, em.FUSE_EXPERT_GATHER
    for on in (False, True):
        em.FUSE_EXPERT_GATHER = on
        try:
            graphs[on] = importer.load(m)
        finally:  # as it was: the switch is on by default, and later tests in this process read it
            em.FUSE_EXPERT_GATHER = was
    return graphs


def test_a_fused_expert_matmul_is_floored_at_its_rows_read_with_no_copy(tmp_path, moe_fused):
    from hetpart.costmodel.kernel_shape import streamed_bytes, weight_bytes
    from hetpart.importer.expert_matmul import OP

    costs = _costs(tmp_path)
    fused = [k for k in moe_fused[True].nodes if OP in k.ops]
    assert len(fused) == 6
    for k in fused:
        f = KernelFeatures.of(k)
        assert f.op_class == "matmul"
        k_in = 32 if f.bytes_written == 2 * 48 * 4 else 48  # gate / up: hidden 32 -> 48; down: 48 -> 32
        exact = 2 * (k.param_bytes // 8)  # 2 chosen experts' [K, N] of 8
        rows = weight_bytes_read(f)
        # the chosen two of eight experts' rows; a fused SwiGLU's FLOPs count as under 1/K more
        assert exact <= rows <= exact * (1 + 1.5 / k_in) and rows < k.param_bytes
        assert weight_bytes(f) == rows  # the predictor's weight feature: the rows too
        assert cm.cold_weight_traffic(f) == rows  # no copy written
        assert costs.weight_floor(k, "cpu") == pytest.approx(CPU.launch_s + rows / BW)
        assert streamed_bytes(f) == f.bytes - k.param_bytes  # x, ids and the output: no table


def test_fusing_keeps_the_graphs_param_bytes_and_reads_no_more_weight(moe_fused):
    from hetpart.costmodel.kernel_shape import graph_weight_bytes

    off, on = moe_fused[False], moe_fused[True]
    assert sum(k.param_bytes for k in on.nodes) == sum(k.param_bytes for k in off.nodes)  # memory accounting
    gathers = [k for k in off.nodes if k.op_class == "gather" and k.param_bytes == 8 * 32 * 48 * 4]
    assert len(gathers) == 6
    # the fused kernels read the rows the gathers read (a fused SwiGLU's FLOPs: a little over)
    assert graph_weight_bytes(off) <= graph_weight_bytes(on) <= graph_weight_bytes(off) * 1.03
