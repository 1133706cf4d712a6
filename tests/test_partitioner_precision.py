"""The partitioner with a precision: CUDA weights counted in the CUDA format.

DLRM's embedding tables under a cap between their bf16 and float32 sizes: in float32
they must stay on the CPU, in bf16 they fit on the GPU (which the costs favour). The
plan records the precision, and it survives the plan file; plans of version 2 read as
the default precision.
"""

from __future__ import annotations

import json

from hetpart import importer
from hetpart.contracts.precision import DEFAULT, Precision
from hetpart.importer.low_precision import param_bytes
from hetpart.partitioner import Plan, partition

from partition_graphs import mlp_favouring_gpu


def _dlrm():
    graph = importer.load("zoo:dlrm:small:batch=1")
    gathers = [k.id for k in graph.nodes if k.ops[0] == "take" and k.param_bytes >= 1000]
    return graph, gathers


def test_bf16_tables_fit_a_cap_their_float32_tables_do_not():
    graph, gathers = _dlrm()
    costs = mlp_favouring_gpu(graph)
    tables = sum(graph.kernels[k].param_bytes for k in gathers)
    cap = tables * 3 // 4
    fp32 = partition(graph, cost_model=costs, gpu_memory=cap, progress=False, stream_weights=False)
    bf16 = partition(graph, cost_model=costs, gpu_memory=cap, progress=False, precision="cuda=bf16",
                     stream_weights=False)
    assert [fp32.assignment[k] for k in gathers] == ["cpu"] * len(gathers)
    assert [bf16.assignment[k] for k in gathers] == ["cuda"] * len(gathers)
    assert bf16.predicted["gpu_memory"]["total"] <= cap
    assert bf16.precision == Precision(cuda="bf16") and fp32.precision == DEFAULT
    low = param_bytes(graph, "bfloat16")
    for p in bf16.partitions:
        if p.device == "cuda":
            assert p.weight_bytes == sum(low.get(k, graph.kernels[k].param_bytes) for k in p.kernels)
    assert bf16.predicted["gpu_memory"]["params"] == sum(
        low.get(k, graph.kernels[k].param_bytes) for k, d in bf16.assignment.items() if d == "cuda")


def test_plan_file_records_precision_and_old_versions_read_default(tmp_path):
    graph, _ = _dlrm()
    plan = partition(graph, cost_model=mlp_favouring_gpu(graph), progress=False, precision="cuda=fp16")
    path = plan.save(tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["version"] == 3 and data["precision"] == {"cpu": "fp32", "cuda": "fp16"}
    assert Plan.load(path, graph).precision == Precision(cuda="fp16")
    data["version"] = 2
    del data["precision"]
    path.write_text(json.dumps(data))
    assert Plan.load(path, graph).precision == DEFAULT


def test_bf16_kernels_are_measured_apart_and_priced_for_their_device(tmp_path, capsys, seeded_profile):
    """`partition profile --precision cpu=bf16` measures the kernels as built with bf16
    weights (other signatures than the float32 ones); the partitioner then prices the
    CPU kernels with those measurements, not with predictions or float32 timings."""
    from hetpart.cli.main import main
    from hetpart.costmodel import CostModel, Profile
    from hetpart.importer.low_precision import lower_weights
    from hetpart.partitioner.precision_costs import with_precision

    path = seeded_profile(tmp_path / "prof.json")
    assert main(["profile", "zoo:mlp:small", "--profile", str(path), "--quick", "--device", "cpu", "--jobs", "1",
                 "--precision", "cpu=bf16"]) == 0
    assert "zoo" not in capsys.readouterr().err
    graph = importer.load("zoo:mlp:small")
    low = lower_weights(graph, list(graph.kernels), "bfloat16")
    converted = [k for k in graph.kernels if low.kernels[k].signature != graph.kernels[k].signature]
    assert converted
    costs = CostModel(Profile.load(path))
    priced = with_precision(costs, graph, Precision(cpu="bf16"))
    for kid in converted:
        assert costs.is_predicted(graph.kernels[kid], "cpu"), "the float32 kernel was not measured"
        assert not priced.is_predicted(graph.kernels[kid], "cpu")
        assert priced.kernel_cost(graph.kernels[kid], "cpu") == costs.kernel_cost(low.kernels[kid], "cpu")
    assert with_precision(costs, graph, DEFAULT) is costs
