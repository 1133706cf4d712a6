"""The capped-GPU-memory benchmark's logic (``hetpart.bench.capped``, issue 19) on the CPU:
caps, the physical limit, every contender on a tiny simulated workload, the budget,
the results file and its table.  The GPU run is bench/capped.py on the GPU machine."""

from __future__ import annotations

import json
import time

import pytest

from hetpart.bench import capped
from hetpart.bench.capped import Bandwidths, Options, Record, Workload, limit_s, parse_cap
from hetpart.bench.timing import Settings
from hetpart.errors import HetpartError
from hetpart.partitioner.random_cases import roofline_costs


@pytest.mark.parametrize("text, want", [("1/2", 500), ("1/3", 333), ("0.25", 250), ("512MiB", 512 << 20),
                                        ("2GB", 2 * 10**9), ("4096", 4096)])
def test_caps_are_shares_of_the_weights_or_bytes(text, want):
    assert parse_cap(text, 1000) == want


@pytest.mark.parametrize("text", ["0", "3/2", "lots", "1/0", "5 parsecs"])
def test_a_bad_cap_is_a_user_error(text):
    with pytest.raises(HetpartError, match="bad GPU memory cap"):
        parse_cap(text, 1000)


def test_the_limit_takes_the_best_placement():
    bw = Bandwidths(h2d_bytes_per_s=10.0, cpu_bytes_per_s=20.0)
    # 100 bytes of weights, 40 fit: 60 over the cap.  All-CPU 100/20 = 5; all streamed
    # max(1, 60/10) = 6; best split: 50 on the CPU (2.5) + 10 streamed under 1 s of compute.
    assert limit_s(1.0, 100, 40, bw) == pytest.approx(3.5)
    assert limit_s(1.0, 100, 100, bw) == pytest.approx(1.0)  # everything resident: compute
    assert limit_s(1.0, 100, 40, Bandwidths(None, 20.0)) == pytest.approx(5.0)  # no link known: all-CPU
    caps = [0, 20, 40, 60, 80, 100]
    limits = [limit_s(1.0, 100, c, bw) for c in caps]
    assert limits == sorted(limits, reverse=True)  # more memory never makes the limit worse


@pytest.fixture(scope="module")
def mlp_run():
    """Every item bench() yields for zoo:mlp:small under two caps, simulated."""
    from hetpart import importer

    costs = roofline_costs(importer.load("zoo:mlp:small"))
    options = Options(settings=Settings.tiny(), cost_model=costs, simulate=True, bandwidth_bytes=1 << 20)
    return list(capped.bench(["zoo:mlp:small"], ["1/2", "1/4"], options, export_dir=None))


@pytest.mark.slow  # the simulated run compiles four placements (~7 s)
def test_every_contender_has_a_record_per_cap(mlp_run):
    header, workload, *records = mlp_run
    assert set(header["bandwidths"]) >= {"h2d_bytes_per_s", "cpu_bytes_per_s"}
    assert workload["workload"] == "zoo:mlp:small" and workload["weight_bytes"] > 0
    caps = sorted({r.cap_bytes for r in records})
    assert caps == [workload["weight_bytes"] // 4, workload["weight_bytes"] // 2]
    for cap in caps:
        assert [r.contender for r in records if r.cap_bytes == cap] == list(capped.CONTENDERS)
    assert all(r.limit_ms is not None and r.limit_ms > 0 for r in records)


@pytest.mark.slow  # the simulated run compiles four placements (~7 s)
def test_plans_are_measured_and_the_rest_skipped_with_a_reason(mlp_run):
    records = [r for r in mlp_run if isinstance(r, Record)]
    for r in records:
        if r.contender in ("torch_cpu", "accelerate"):
            assert r.ms is None and r.skipped, r
        else:
            assert r.ms is not None and r.ms > 0 and not r.skipped, r
        if r.contender in ("hetpart", "hetpart all-CPU", "llama.cpp-style rule", "ORT-style rule"):
            assert r.predicted_ms is not None and r.placement
    all_cpu = [r for r in records if r.contender == "hetpart all-CPU"]
    assert all_cpu[0].ms == all_cpu[1].ms and "measured once" in all_cpu[1].note


def test_torch_contenders_say_torch_is_missing():
    def no_torch():
        raise ImportError("No module named 'torch'", name="torch")

    prep = capped.prepare(Workload("mlp", "zoo:mlp:small", torch=no_torch))
    options = Options(settings=Settings.tiny())
    with pytest.raises(capped.Skip, match="torch not installed|PyTorch not installed"):
        capped._peer_seconds("torch_cpu", prep, options)
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(capped.Skip, match="torch not installed"):
            capped._accelerate_seconds(prep, 1000, options)


def test_the_deadline_stops_before_any_workload():
    options = Options(settings=Settings.tiny(), cost_model=roofline_costs_for_mlp(), simulate=True,
                      deadline=time.monotonic() - 1, bandwidth_bytes=1 << 20)
    items = list(capped.bench(["zoo:mlp:small"], ["1/2"], options, export_dir=None))
    assert len(items) == 1 and "bandwidths" in items[0]


def roofline_costs_for_mlp():
    from hetpart import importer

    return roofline_costs(importer.load("zoo:mlp:small"))


@pytest.mark.slow  # the simulated run compiles four placements (~7 s)
def test_results_file_and_table(mlp_run, tmp_path):
    results = capped.new_results("simulated")
    for item in mlp_run:
        capped.add(results, item)
    capped.add(results, mlp_run[-1])  # a record again replaces its key's
    out = tmp_path / "capped-simulated.json"
    capped.save(out, results)
    data = json.loads(out.read_text())
    assert (data["schema"], data["version"]) == (capped.SCHEMA, capped.VERSION)
    assert len(data["records"]) == 2 * len(capped.CONTENDERS)
    for r in data["records"]:
        assert {"workload", "cap_bytes", "contender", "ms", "predicted_ms", "limit_ms"} <= set(r)
    table = out.with_suffix(".md").read_text()
    assert all(c in table for c in capped.CONTENDERS)
    assert table.count("| zoo:mlp:small |") == 2
    assert capped.load_results(out, "x")["records"] == data["records"]


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(HetpartError, match="bert_large"):
        capped.workload("gpt5", None)


def test_workload_lists_keep_zoo_specs_whole():
    assert capped.split_names("bert_large,zoo:dlrm:table_rows=9,num_tables=4,llama_decode,zoo:mlp:small") == [
        "bert_large", "zoo:dlrm:table_rows=9,num_tables=4", "llama_decode", "zoo:mlp:small"]


def test_a_workload_that_cannot_run_here_is_skipped_and_the_next_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import transformers  # noqa: F401
        pytest.skip("transformers is installed: bert_large would run")
    except ImportError:
        pass
    options = Options(settings=Settings.tiny(), cost_model=roofline_costs_for_mlp(), simulate=True,
                      bandwidth_bytes=1 << 20, deadline=time.monotonic() + 3600)
    items = capped.bench(["bert_large", "zoo:mlp:small"], ["1/2"], options, export_dir=tmp_path)
    _, skipped, nxt = next(items), next(items), next(items)
    assert skipped["workload"] == "bert_large" and "not installed" in skipped["skipped"]
    assert nxt["workload"] == "zoo:mlp:small" and "weight_bytes" in nxt
