"""Tests of KernelOptions (hetpart.kernels.options): the code-generation choices of a
build, read from the environment only at the CLI edge, recorded in the profile a cost
model prices with and in the compiled artifact's manifest.  (That the rules obey them
is tested with the rules: tests/test_kernels_splitk.py, tests/test_kernels_tensor_core.py;
that the defaults build the same code as before: tools/kernel_code_hash.py.)"""

from __future__ import annotations

import argparse
import json

import pytest

from hetpart import compiler
from hetpart.cli.options import add_target_options, kernel_options
from hetpart.costmodel import Profile, profile
from hetpart.costmodel.fingerprint import OPTIONS_KEY, recorded_options, this_machine
from hetpart.costmodel.profiler import adopt_options
from hetpart.errors import ProfileError, TargetError
from hetpart.kernels.options import DEFAULT, KernelOptions, resolve, sm_count_for_arch


def test_defaults_are_what_hetpart_built_before_options_existed():
    assert DEFAULT == KernelOptions(tf32=True, split_k="all", sm_count=132)
    assert KernelOptions.from_json(None) == DEFAULT  # a file written before the options were recorded
    assert KernelOptions.from_json({"tf32": False}) == KernelOptions(tf32=False)


def test_json_round_trip_and_validation():
    opts = KernelOptions(tf32=False, split_k="conv", sm_count=108)
    assert KernelOptions.from_json(json.loads(json.dumps(opts.to_json()))) == opts
    with pytest.raises(TargetError, match="split-K mode"):
        KernelOptions(split_k="sometimes")
    with pytest.raises(TargetError, match="^sm_count: the GPU's SM count") as info:
        KernelOptions(sm_count=0)
    assert info.value.cli_message().startswith("--sm-count: ")  # the CLI names its flag


def test_wgmma_defaults_to_the_module_switch_when_made_and_is_recorded_only_when_on(monkeypatch):
    """``wgmma``'s default is ``wgmma_match.WGMMA_GEMM`` when the options are made (the A/B tools
    set the switch, then make options); off it is left out of the JSON (manifests and profiles as
    before it existed); a file without it was built without it, whatever the switch says now."""
    from hetpart.kernels import wgmma_match

    assert wgmma_match.WGMMA_GEMM is False and DEFAULT.wgmma is False
    assert "wgmma" not in DEFAULT.to_json() and DEFAULT.describe() == "tf32 on, split-K all, 132 SMs"
    monkeypatch.setattr(wgmma_match, "WGMMA_GEMM", True)
    on = KernelOptions()
    assert on.wgmma and resolve(cuda_arch="sm_90").wgmma and not DEFAULT.wgmma
    assert not resolve(cuda_arch="sm_90", wgmma=False).wgmma
    assert on.to_json() == {**DEFAULT.to_json(), "wgmma": True} and on.describe().endswith(", wgmma on")
    assert KernelOptions.from_json(json.loads(json.dumps(on.to_json()))) == on
    assert KernelOptions.from_json(DEFAULT.to_json()) == DEFAULT  # an old file: wgmma off
    assert KernelOptions.from_json(None) == DEFAULT
    with pytest.raises(TargetError, match="wgmma"):
        KernelOptions(wgmma=1)


def test_a_profile_measured_with_wgmma_is_not_used_without_it():
    """The profile's recorded options (its fingerprint of the code) differ with ``wgmma`` on and off,
    and a profile measured with it on refuses a build with it off (and the reverse)."""
    on, off = KernelOptions(wgmma=True), KernelOptions(wgmma=False)
    assert on.to_json() != off.to_json() and on != off
    for measured, planned in ((on, off), (off, on)):
        prof = Profile(this_machine())
        adopt_options(prof, measured)
        assert recorded_options(prof.settings) == measured
        with pytest.raises(ProfileError, match="kernel options"):
            adopt_options(prof, planned)


def test_sm_count_from_arch_when_cross_compiling():
    assert resolve(cuda_arch="sm_80").sm_count == 108
    assert resolve(cuda_arch="sm_90").sm_count == 132
    assert resolve(cuda_arch="sm_90", sm_count=114).sm_count == 114  # an H100 PCIe, say
    assert sm_count_for_arch("sm_999") == DEFAULT.sm_count


def _cli(argv, monkeypatch, env=None):
    for k in ("HETPART_TF32", "HETPART_SPLITK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    parser = argparse.ArgumentParser()
    add_target_options(parser)
    return kernel_options(parser.parse_args(argv))


def test_cli_edge_reads_flags_and_the_environment(monkeypatch):
    assert _cli(["--cuda-arch", "sm_90"], monkeypatch) == DEFAULT
    assert _cli(["--cuda-arch", "sm_90", "--no-tf32", "--split-k", "conv"], monkeypatch) == \
        KernelOptions(tf32=False, split_k="conv")
    assert _cli(["--cuda-arch", "sm_80"], monkeypatch, {"HETPART_TF32": "0", "HETPART_SPLITK": "off"}) == \
        KernelOptions(tf32=False, split_k="off", sm_count=108)
    # A flag wins over the environment.
    assert _cli(["--cuda-arch", "sm_90", "--split-k", "all"], monkeypatch, {"HETPART_SPLITK": "0"}).split_k == "all"


def test_profile_records_options_and_refuses_to_mix_them(tmp_path, zoo_graph):
    path = tmp_path / "p.json"
    prof = Profile(this_machine(), path=path)
    prof.settings[OPTIONS_KEY] = KernelOptions(tf32=False).to_json()
    prof.save()
    assert recorded_options(Profile.load(path).settings) == KernelOptions(tf32=False)
    with pytest.raises(ProfileError, match="kernel options"):
        profile(zoo_graph("mlp"), ("cpu",), path, options=DEFAULT, progress=False)


def test_a_new_profile_takes_any_options_then_keeps_them():
    prof = Profile(this_machine())
    a100 = KernelOptions(sm_count=108)
    adopt_options(prof, a100)  # nothing measured yet: any options will do
    assert recorded_options(prof.settings) == a100
    adopt_options(prof, a100)
    with pytest.raises(ProfileError, match="kernel options"):
        adopt_options(prof, DEFAULT)


def test_manifest_records_the_options(zoo_graph, plan_for, tmp_path):
    graph = zoo_graph("mlp")
    plan = plan_for(graph, {k.id: "cpu" for k in graph.nodes})
    opts = KernelOptions(tf32=False, split_k="off", sm_count=108)
    compiled = compiler.compile(plan, graph, simulate=True, options=opts, progress=False)
    compiled.save(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["kernel_options"] == opts.to_json()
    assert compiler.load_compiled(tmp_path / "out").kernel_options == opts


@pytest.mark.slow  # imports and schedules a 4096x768 MLP
def test_cost_model_schedules_unmeasured_kernels_with_the_profiles_options():
    # A kernel the profile never measured gets the rule the profile's options would
    # give it: TF32 tensor cores by default, not when the profile was measured without.
    from hetpart import importer
    from hetpart.costmodel import CostModel
    from hetpart.targets import cuda_tvm_target

    graph = importer.load("zoo:mlp:small:batch=4096,in_features=768,hidden=768/768")
    kernel = max(graph.nodes, key=lambda k: k.flops)
    rules = {}
    for opts in (DEFAULT, KernelOptions(tf32=False)):
        prof = Profile(this_machine())
        prof.targets["cuda"] = str(cuda_tvm_target("sm_90"))
        prof.settings[OPTIONS_KEY] = opts.to_json()
        rules[opts.tf32] = CostModel(prof, graph=graph).rule_of(kernel, "cuda")
    assert rules[True] == "GpuTensorCoreGemm"
    assert rules[False] not in ("GpuTensorCoreGemm", "")
