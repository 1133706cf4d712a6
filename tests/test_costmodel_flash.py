"""``hetpart.costmodel.flash_cost``: a flash-marked attention triple priced as the chain that runs.

With ``FLASH_ATTENTION`` on, the planner prices a ``cuda=bf16`` device's kernels with the attention
triples marked (``precision_costs.priced_graph``); on a profile whose CUDA target is sm_90 the cost
model prices a marked triple by the sum rule: ``scores`` and ``softmax`` 0, ``values`` the
substituted chain -- its chain record (``flash == "chain"``, under the chain's signature: its three
kernels', so a masked and an unmasked chain whose ``values`` kernels share a signature are two
records) where measured, else the narrowing
kernels predicted plus the flash kernel's FLOPs at ``FLASH_FLOPS_PER_S``.  A chain record never
trains the predictor.  On any other target the marks are ignored (each kernel as itself); off,
nothing is marked and every price and plan is what it was.  The profiler times a marked ``values``
kernel on sm_90 as its whole chain (``kernel_bench.bench_module``, built through the compiler's
``flash_substitute``).  With ``FLASH_MASKED_ATTENTION`` on, a masked triple (DistilBERT's ``Where``,
BERT's additive mask, GPT-2's causal ``Where``) is marked and priced the same way: its chain module
takes the scores kernel's mask inputs (``main(Q, KT, V, mask)``, an integer mask drawn 0 / 1) and
builds to the bias kernel and the biased flash kernel; its features list the bias kernel.  With a
GPU (``cuda`` mark, sm_90): the chain measured under its chain signature, unmasked and masked.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from precision_cases import bert_layer

from hetpart import importer
from hetpart.contracts.precision import Precision
from hetpart.costmodel import CostModel, Profile, flash_cost, kernel_bench, recorded_profiles
from hetpart.costmodel.predictor import samples
from hetpart.costmodel.profile_db import KernelFeatures, KernelRecord, Timing
from hetpart.importer.flash_triples import ROLES
from hetpart.importer.low_precision import lower_weights
from hetpart.kernels import flash_substitute
from hetpart.partitioner.precision_costs import priced_graph, with_precision
from hetpart.targets import cuda_available, cuda_tvm_target

BF16 = Precision(cuda="bf16")


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", True)


@pytest.fixture(scope="module")
def layer():
    return importer.load(bert_layer(seq_len=256, hidden=384, heads=6, intermediate=1536))


def _profile(arch: str = "sm_90") -> Profile:
    """The recorded (H200, sm_90) profile, its CUDA target switched to ``arch``."""
    prof = Profile.load(recorded_profiles()[0])
    prof.targets["cuda"] = str(cuda_tvm_target(arch)) if arch != "sm_90" else prof.targets["cuda"]
    return prof


def _roles(graph) -> dict[str, object]:
    """``{role: kernel}`` of the one marked triple of ``graph``."""
    out = {}
    for k in graph.kernels.values():
        r = flash_cost.role(graph, k)
        if r is not None:
            out[r[0]] = k
    return out


def test_marked_triple_is_priced_by_the_sum_rule(on, layer):
    marked = priced_graph(layer, "cuda", "bfloat16")
    roles = _roles(marked)
    assert sorted(roles) == ["scores", "softmax", "values"]
    cm = CostModel(_profile()).add_graph(marked)
    assert cm.kernel_cost(roles["scores"], "cuda") == cm.kernel_cost(roles["softmax"], "cuda") == 0.0
    assert not cm.is_predicted(roles["scores"], "cuda") and cm.is_predicted(roles["values"], "cuda")
    launch = cm.profile.overheads["cuda"].launch_s
    chain = flash_cost.chain_features(marked, roles["values"])
    want = sum(flash_cost.predicted_flash_s(f, launch) if rule == flash_cost.FLASH_RULE
               else cm._predictor("cuda").predict(f, rule) for f, rule in chain)
    triple = sum(cm.kernel_cost(roles[r], "cuda") for r in ROLES)
    assert triple == pytest.approx(want, rel=1e-12)
    # the chain: Q and V narrowed (float32 here), K^T narrowed and transposed, one flash kernel
    feats = flash_cost.chain_features(marked, roles["values"])
    assert [f.func for f, _ in feats] == ["flash_in_q", "flash_in_kt", "flash_in_v", "flash_attention"]
    assert feats[-1][0].flops == 4 * 6 * 256 * 256 * 64
    assert [cm.launches(roles[r]) for r in ROLES] == [0, 0, 4]  # a CUDA partition without graphs launches these
    # the CPU prices the marked kernels as themselves
    plain = lower_weights(layer, list(layer.kernels), "bfloat16")
    cm0 = CostModel(_profile()).add_graph(plain)
    for k in roles.values():
        assert cm.kernel_cost(k, "cpu") == cm0.kernel_cost(plain.kernels[k.id], "cpu")


def test_a_measured_chain_prices_the_triple_and_trains_nothing(on, layer):
    marked = priced_graph(layer, "cuda", "bfloat16")
    values = _roles(marked)["values"]
    prof = _profile()
    before = samples(prof, "cuda")
    raw = 40e-6 + prof.overheads["cuda"].empty_s
    chain = flash_cost.chain_signature(marked, values)
    prof.add_kernel("cuda", KernelRecord(chain, KernelFeatures.of(values), "ok", Timing(raw, raw, raw, 5),
                                         rule=flash_cost.FLASH_RULE, flash=flash_cost.CHAIN))
    assert samples(prof, "cuda") == before  # the chain's timing is not the matmul's
    cm = CostModel(prof).add_graph(marked)
    want = 40e-6 + prof.overheads["cuda"].launch_s
    assert sum(cm.kernel_cost(k, "cuda") for k in _roles(marked).values()) == pytest.approx(want)
    assert not cm.is_predicted(values, "cuda")
    # a chain record that failed to build: the triple cannot run on CUDA
    prof.add_kernel("cuda", KernelRecord(chain, KernelFeatures.of(values), "failed", error="x", flash=flash_cost.CHAIN))
    assert CostModel(prof).add_graph(marked).kernel_cost(values, "cuda") == float("inf")


def test_the_chain_record_round_trips_and_old_records_load(tmp_path, on, layer):
    marked = priced_graph(layer, "cuda", "bfloat16")
    values = _roles(marked)["values"]
    rec = KernelRecord(flash_cost.chain_signature(marked, values), KernelFeatures.of(values), "ok",
                       Timing(1e-4, 1e-4, 1e-4, 5),
                       rule=flash_cost.FLASH_RULE, flash=flash_cost.CHAIN)
    assert KernelRecord.from_json(rec.signature, json.loads(json.dumps(rec.to_json()))) == rec
    plain = dataclasses.replace(rec, flash="")
    assert "flash" not in plain.to_json()  # written only where set: every other record as before
    prof = _profile()
    prof.add_kernel("cuda", rec)
    path = prof.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["kernels"]["cuda"][rec.signature]["flash"] == "chain"
    assert Profile.load(path).record("cuda", rec.signature) == rec
    assert Profile.load(recorded_profiles()[0]).kernels["cuda"]  # a profile without the key loads


def test_other_targets_price_the_marked_kernels_as_themselves(on, layer):
    """sm_80 runs the three kernels (``flash_substitute`` ignores the marks there)."""
    marked = priced_graph(layer, "cuda", "bfloat16")
    cm = CostModel(_profile("sm_80")).add_graph(marked)
    pred = cm._predictor("cuda")
    for k in _roles(marked).values():
        want = pred.predict(KernelFeatures.of(k), cm.rule_of(k, "cuda"), cm.access_of(k, "cuda"))
        assert cm.kernel_cost(k, "cuda") == pytest.approx(max(want, cm.weight_floor(k, "cuda")))
        assert cm.kernel_cost(k, "cuda") > 0


def test_an_unmarked_triple_is_priced_as_before(on, layer):
    """A graph priced for the CPU's format (nothing marked) or a TF32 CUDA: the same costs as
    the cost model gave the lowered graph before flash pricing existed."""
    plain = lower_weights(layer, list(layer.kernels), "bfloat16")
    assert not _roles(plain)
    cm = CostModel(_profile()).add_graph(plain)
    ref = CostModel(_profile()).add_graph(plain)
    ref._flash_role = lambda kernel, device: None  # the cost model without the rule
    for k in plain.kernels.values():
        assert cm.kernel_cost(k, "cuda") == ref.kernel_cost(k, "cuda")
    assert priced_graph(layer, "cpu", "bfloat16").kernels.keys() == plain.kernels.keys()
    assert not _roles(priced_graph(layer, "cpu", "bfloat16"))


def test_off_prices_as_before(layer, monkeypatch):
    """``FLASH_ATTENTION`` off: ``priced_graph`` is ``lower_weights``' graph (same signatures),
    so every cuda=bf16 price is the one the planner had before."""
    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", False)
    got = priced_graph(layer, "cuda", "bfloat16")
    want = lower_weights(layer, list(layer.kernels), "bfloat16")
    assert {k: v.signature for k, v in got.kernels.items()} == {k: v.signature for k, v in want.kernels.items()}
    costs = with_precision(CostModel(_profile()).add_graph(layer), layer, BF16)
    ref = CostModel(_profile()).add_graph(want)
    for k in layer.kernels.values():
        assert costs.kernel_cost(k, "cuda") == ref.kernel_cost(want.kernels[k.id], "cuda")


def test_on_the_planner_sees_the_chain(on, layer):
    """``with_precision`` (the planner's costs) prices the triple of an all-CUDA bf16 layer as the chain."""
    costs = with_precision(CostModel(_profile()).add_graph(layer), layer, BF16)
    sm = next(k for k in layer.kernels.values() if k.op_class == "softmax")
    assert costs.kernel_cost(sm, "cuda") == 0.0
    qk = layer.kernels[layer.tensors[sm.inputs[0]].producer]
    assert costs.kernel_cost(qk, "cuda") == 0.0 and costs.kernel_cost(qk, "cpu") > 0


def test_profiler_times_a_marked_values_kernel_as_its_chain(on, layer):
    marked = priced_graph(layer, "cuda", "bfloat16")
    roles = _roles(marked)
    kmod, flash = kernel_bench.bench_module(marked, roles["values"], cuda_tvm_target("sm_90"))
    assert flash == flash_cost.CHAIN and [a.shape for a in kmod.args] == [(1, 6, 256, 64), (1, 6, 64, 256),
                                                                           (1, 6, 256, 64)]
    built = flash_substitute.substitute(kmod.mod, cuda_tvm_target("sm_90"))  # what kernels.build does first
    names = sorted(gv.name_hint for gv in built.get_global_vars())
    assert any(n.startswith("flash_attention_b1_h6_n256") for n in names)
    assert not {k.func for k in roles.values()} & set(names)  # the three kernels are gone
    for target in (cuda_tvm_target("sm_80"),):
        kmod, flash = kernel_bench.bench_module(marked, roles["values"], target)
        assert flash == "" and kmod.func == roles["values"].func  # the kernel alone, as before
    kmod, flash = kernel_bench.bench_module(marked, roles["scores"], cuda_tvm_target("sm_90"))
    assert flash == "" and kmod.func == roles["scores"].func


def test_the_chain_builds_for_sm90_as_narrowing_and_flash(on, layer):
    """``kernel_bench.build_module`` (the profiler's build, :func:`hetpart.kernels.build`) of the chain
    module, cross-compiled for sm_90: the narrowing kernels and the flash kernel, nothing else."""
    import re

    from onnx_cases import cuda_source

    marked = priced_graph(layer, "cuda", "bfloat16")
    kmod, _ = kernel_bench.bench_module(marked, _roles(marked)["values"], cuda_tvm_target("sm_90"))
    src = cuda_source(kernel_bench.build_module(kmod.mod, cuda_tvm_target("sm_90")))
    names = set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", src))
    assert names == {"flash_attention_b1_h6_n256_s3e000000_kernel", "flash_in_kernel", "flash_in1_kernel"}


def _chain_on_gpu(graph, tmp_path):
    """On this machine's CUDA device (skips unless it runs the flash kernel), ``graph`` priced as a
    bf16 CUDA build: the profiler records its ``values`` kernel as the chain and the cost model prices
    the triple at that record.  Returns ``(fused, unfused, predicted)`` seconds: the triple as priced,
    its three kernels each timed alone (as the profiler times them), and the chain the recorded
    profile predicts."""
    from hetpart.costmodel import profile
    from hetpart.costmodel.kernel_bench import MeasureSettings, build_module, measure, single_kernel_module
    from hetpart.targets import resolve

    spec = resolve("cuda")
    if not flash_cost.substitutes(spec.tvm_target):
        pytest.skip(f"{spec.tvm_target} does not run the flash kernel (sm_90 only)")
    marked = priced_graph(graph, "cuda", "bfloat16")
    roles = _roles(marked)
    settings = MeasureSettings.quick()
    prof = profile(marked, ("cuda",), tmp_path / "p.json", settings=settings, progress=False)
    rec = prof.record("cuda", flash_cost.chain_signature(marked, roles["values"]))
    assert rec is not None and rec.ok and rec.flash == flash_cost.CHAIN and rec.rule == flash_cost.FLASH_RULE
    cm = CostModel(prof).add_graph(marked)
    fused = sum(cm.kernel_cost(k, "cuda") for k in roles.values())
    assert fused == pytest.approx(rec.cost(prof.overheads["cuda"]))
    plain = lower_weights(graph, list(graph.kernels), "bfloat16")
    oh, unfused = prof.overheads["cuda"], 0.0
    for k in roles.values():
        kmod = single_kernel_module(plain, plain.kernels[k.id])
        t = measure(kmod, build_module(kmod.mod, spec.tvm_target), spec.device(), settings)
        unfused += max(t.median_s - oh.empty_s, 0.0) + oh.launch_s
    predicted = CostModel(_profile()).add_graph(marked).kernel_cost(roles["values"], "cuda")
    return fused, unfused, predicted


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_gpu_chain_is_measured_under_values(on, tmp_path):
    """Whisper-shaped (1500 tokens, 6 heads of 64), all-CUDA bf16, on sm_90: the profiler records the
    ``values`` kernel as its chain, the cost model prices the triple at it, and the chain runs
    faster than the three kernels it replaces (each timed alone, as the profiler times them)."""
    graph = importer.load(bert_layer(seq_len=1500, hidden=384, heads=6, intermediate=1536))
    fused, unfused, predicted = _chain_on_gpu(graph, tmp_path)
    flops = 4 * 6 * 1500 * 1500 * 64
    print(f"flash chain {fused * 1e6:.1f} us ({flops / fused / 1e12:.0f} TFLOP/s with its narrowing), "
          f"the three kernels {unfused * 1e6:.1f} us, predicted chain (recorded profile, "
          f"FLASH_FLOPS_PER_S {flash_cost.FLASH_FLOPS_PER_S:.1e}) {predicted * 1e6:.1f} us")
    assert 0 < fused < unfused


# --- masked triples (FLASH_MASKED_ATTENTION) ------------------------------------------------------
@pytest.fixture
def masked_on(on, monkeypatch):
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", True)


@pytest.fixture(scope="module", params=["where", "add"])
def masked_layer(request):
    """DistilBERT's ``Where(mask, min, Q K^T)`` / BERT's ``Q K^T / c + (1 - mask) * min``, batch 2,
    100 tokens, 2 heads of 64 (``attention_mask [2, 100]`` int64)."""
    from attention_cases import masked_attention

    return request.param, importer.load(masked_attention(request.param, batch=2, seq=100))


def test_a_masked_triple_is_marked_with_the_switch_only(on, masked_layer, monkeypatch):
    _, graph = masked_layer
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", False)
    assert not _roles(priced_graph(graph, "cuda", "bfloat16"))  # off: three kernels, each priced as itself
    monkeypatch.setattr(flash_substitute, "FLASH_MASKED_ATTENTION", True)  # read at call time
    assert sorted(_roles(priced_graph(graph, "cuda", "bfloat16"))) == ["scores", "softmax", "values"]


def test_the_masked_chain_module_takes_the_mask_and_builds_the_biased_flash_kernel(masked_on, masked_layer):
    """``main(Q, KT, V, mask)``: the scores call's mask input once more (DistilBERT: the
    ``[2, 1, 1, 100]`` bool the mask kernel makes; BERT: the int64 ``attention_mask``, drawn 0 / 1),
    its constants (the fill) kept; built for sm_90: the narrowings, one ``flash_bias`` kernel and the
    biased flash kernel, none of the three marked kernels."""
    import re

    import numpy as np

    from onnx_cases import cuda_source

    style, graph = masked_layer
    marked = priced_graph(graph, "cuda", "bfloat16")
    roles = _roles(marked)
    kmod, flash = kernel_bench.bench_module(marked, roles["values"], cuda_tvm_target("sm_90"))
    assert flash == flash_cost.CHAIN
    mask = ((2, 1, 1, 100), "bool") if style == "where" else ((2, 100), "int64")
    assert [(a.shape, a.dtype) for a in kmod.args] == [((2, 2, 100, 64), "float32"), ((2, 2, 64, 100), "float32"),
                                                       ((2, 2, 100, 64), "float32"), mask]
    assert kmod.num_inputs == 4 and int(kmod.mod["main"].attrs["num_input"]) == 4
    assert len(kmod.mod["main"].params) == 4 and not any(a.weight for a in kmod.args)
    values = np.concatenate([kernel_bench.random_array(kmod.args[3], np.random.default_rng(s)).ravel().astype(np.int64)
                             for s in range(3)])
    assert set(values.tolist()) == {0, 1}  # a valid mask: keep / pad
    src = cuda_source(kernel_bench.build_module(kmod.mod, cuda_tvm_target("sm_90")))
    names = set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", src))
    flash_names = [n for n in names if re.fullmatch(r"flash_attention_b2_h2_n100_s\w+_bias2x1x1x100_kernel", n)]
    assert len(flash_names) == 1
    assert names == {flash_names[0], "flash_bias_kernel", "flash_in_kernel", "flash_in1_kernel"}


def test_a_masked_triple_is_priced_by_the_sum_rule(masked_on, masked_layer):
    """``scores`` and ``softmax`` 0, ``values`` the chain's predicted cost; the chain lists the bias
    kernel (reads the mask, writes the float32 ``[2, 1, 1, 100]`` bias) and the flash kernel reads it."""
    style, graph = masked_layer
    marked = priced_graph(graph, "cuda", "bfloat16")
    roles = _roles(marked)
    cm = CostModel(_profile()).add_graph(marked)
    assert cm.kernel_cost(roles["scores"], "cuda") == cm.kernel_cost(roles["softmax"], "cuda") == 0.0
    assert cm.is_predicted(roles["values"], "cuda") and not cm.is_predicted(roles["scores"], "cuda")
    launch = cm.profile.overheads["cuda"].launch_s
    chain = flash_cost.chain_features(marked, roles["values"])
    assert [f.func for f, _ in chain] == ["flash_in_q", "flash_in_kt", "flash_in_v", "flash_bias", "flash_attention"]
    bias, fa = chain[-2][0], chain[-1][0]
    assert chain[-2][1] == "" and bias.op_class == "injective" and bias.bytes_written == 4 * 2 * 100
    # DistilBERT: the bool [2, 1, 1, 100] mask and the 0-d fill; BERT: the int64 [2, 100] mask
    assert bias.bytes_read == (2 * 100 + 4 if style == "where" else 8 * 2 * 100)
    assert fa.flops == 4 * 2 * 2 * 100 * 100 * 64 and fa.bytes_read == 3 * 2 * (2 * 2 * 100 * 64) + 4 * 2 * 100
    want = sum(flash_cost.predicted_flash_s(f, launch) if rule == flash_cost.FLASH_RULE
               else cm._predictor("cuda").predict(f, rule) for f, rule in chain)
    assert cm.kernel_cost(roles["values"], "cuda") == pytest.approx(want, rel=1e-12)
    assert sum(cm.kernel_cost(roles[r], "cuda") for r in ROLES) == pytest.approx(want, rel=1e-12)
    assert [cm.launches(roles[r]) for r in ROLES] == [0, 0, 5]
    # the planner's costs: the masked triple priced as the chain
    costs = with_precision(CostModel(_profile()).add_graph(graph), graph, BF16)
    assert costs.kernel_cost(graph.kernels[roles["softmax"].id], "cuda") == 0.0
    assert costs.kernel_cost(graph.kernels[roles["values"].id], "cuda") == pytest.approx(want, rel=1e-12)


def test_gpt2s_constant_causal_mask_stays_a_constant_of_the_chain(masked_on):
    """GPT-2's ``Where(causal, Q K^T, lowest)``: mask and fill are constants, so ``main(Q, KT, V)``
    (they stay in the scores call, as in the model) and the bias is ``[1, 1, n, n]``."""
    from hetpart import models

    graph = importer.load(models.build("gpt2", True, layers=1, batch=1, seq_len=128, hidden=128, heads=2,
                                       vocab=1000))
    marked = priced_graph(graph, "cuda", "bfloat16")
    values = _roles(marked)["values"]
    kmod, _ = kernel_bench.bench_module(marked, values, cuda_tvm_target("sm_90"))
    assert len(kmod.args) == kmod.num_inputs == 3
    built = flash_substitute.substitute(kmod.mod, cuda_tvm_target("sm_90"))
    assert any(gv.name_hint.endswith("_bias1x1x128x128") for gv in built.get_global_vars())
    bias = flash_cost.chain_features(marked, values)[-2][0]
    assert bias.func == "flash_bias" and bias.bytes_written == 4 * 128 * 128


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("style", ["where", "add"])
def test_gpu_masked_chain_is_measured_under_values(masked_on, style, tmp_path):
    """DistilBERT / BERT-base-shaped masked attention (batch 8, 128 tokens, 12 heads of 64), all-CUDA
    bf16, on sm_90: the profiler records the ``values`` kernel as its masked chain (narrowings, the
    bias kernel, the biased flash kernel; timed on a random 0 / 1 mask) and the cost model prices the
    triple at it.  Prints the chain beside the three kernels it replaces (no order asserted: at b1
    the masked switch's A/B was within its spread)."""
    from attention_cases import masked_attention

    graph = importer.load(masked_attention(style, batch=8, seq=128, heads=12))
    fused, unfused, predicted = _chain_on_gpu(graph, tmp_path)
    assert fused > 0
    print(f"{style}: masked flash chain {fused * 1e6:.1f} us, the three kernels {unfused * 1e6:.1f} us, "
          f"predicted chain (recorded profile) {predicted * 1e6:.1f} us")


# --- chain records: one per chain, not per values kernel (a masked and an unmasked chain) ---------
@pytest.fixture(scope="module")
def twins():
    """BERT's masked attention and an unmasked block (scores ``* c``), both batch 1, 2 heads of 64,
    100 tokens: their ``values`` kernels (``P V``) share a signature, their scores kernels do not."""
    from attention_cases import masked_attention, onnx_attention

    return importer.load(masked_attention("add", batch=1, seq=100)), importer.load(onnx_attention("mul", tokens=100))


def _record_chain(graph, prof, seconds: float, monkeypatch) -> None:
    """What the profiler records for ``graph``'s ``values`` kernel on sm_90 (its chain), timed at
    ``seconds``: its ``_measure_chunk`` with the build and the timing faked (no GPU here)."""
    from types import SimpleNamespace

    from hetpart.costmodel import profiler
    from hetpart.costmodel.kernel_bench import MeasureSettings
    from hetpart.kernels.options import DEFAULT

    monkeypatch.setattr(kernel_bench, "measure", lambda *a, **k: Timing(seconds, seconds, seconds, 5))
    spec = SimpleNamespace(name="cuda", tvm_target=cuda_tvm_target("sm_90"), device=lambda: None)
    pool = SimpleNamespace(build_all=lambda mods, target, options: [object()] * len(mods))
    profiler._measure_chunk(graph, [_roles(graph)["values"]], spec, prof, MeasureSettings.quick(), pool,
                            SimpleNamespace(update=lambda n: None), DEFAULT)


def test_a_chain_record_prices_only_its_own_chain(masked_on, twins, tmp_path, monkeypatch):
    """The profiler's chain record of the unmasked block does not price the masked one, whose ``values``
    kernel has the same signature (it is predicted, with its bias kernel), and vice versa: each chain
    has its own record, its own price and its own launch count."""
    from hetpart.costmodel import profiler

    masked, plain = (priced_graph(g, "cuda", "bfloat16") for g in twins)
    vm, vp = _roles(masked)["values"], _roles(plain)["values"]
    assert vm.signature == vp.signature  # the collision this guards against
    prof = _profile()
    prof.path = tmp_path / "p.json"
    empty, launch = prof.overheads["cuda"].empty_s, prof.overheads["cuda"].launch_s
    predicted = CostModel(_profile()).add_graph(masked).kernel_cost(vm, "cuda")
    _record_chain(plain, prof, empty + 40e-6, monkeypatch)
    cm = CostModel(prof).add_graph(masked)
    assert cm.is_predicted(vm, "cuda") and cm.kernel_cost(vm, "cuda") == pytest.approx(predicted, rel=1e-12)
    assert CostModel(prof).add_graph(plain).kernel_cost(vp, "cuda") == pytest.approx(40e-6 + launch)
    sig = profiler.flash_cost.record_signature

    def missing(graph):
        return {k.id for k in profiler._distinct_missing(graph, prof, "cuda", cuda_tvm_target("sm_90"))}

    assert vm.id in missing(masked) and vp.id not in missing(plain)  # the masked chain is still to measure
    assert sig(masked, vm, cuda_tvm_target("sm_90")) != sig(plain, vp, cuda_tvm_target("sm_90"))
    _record_chain(masked, prof, empty + 70e-6, monkeypatch)
    for graph, values, want, launches in ((masked, vm, 70e-6, 5), (plain, vp, 40e-6, 4)):
        cm = CostModel(prof).add_graph(graph)
        assert not cm.is_predicted(values, "cuda") and cm.kernel_cost(values, "cuda") == pytest.approx(want + launch)
        assert values.id not in missing(graph)
    both = CostModel(prof).add_graph(masked).add_graph(plain)  # one cost model, both chains (ids differ)
    assert [both.launches(vm), both.launches(vp)] == [5, 4]
    # sm_80 runs the values kernel alone: recorded under its own signature, as before
    assert sig(masked, vm, cuda_tvm_target("sm_80")) == vm.signature


def test_an_old_chain_record_prices_no_chain(masked_on, twins):
    """A chain record of a hetpart that kept it under the ``values`` kernel's own signature (which
    masked and unmasked chains share) is ignored: both chains are predicted, neither is unsupported."""
    masked, plain = (priced_graph(g, "cuda", "bfloat16") for g in twins)
    values = _roles(plain)["values"]
    for status, timing in (("ok", Timing(40e-6, 40e-6, 40e-6, 5)), ("failed", None)):
        prof = _profile()
        prof.add_kernel("cuda", KernelRecord(values.signature, KernelFeatures.of(values), status, timing,
                                             error="x" if timing is None else "", rule=flash_cost.FLASH_RULE,
                                             flash=flash_cost.CHAIN))
        for graph in (masked, plain):
            v = _roles(graph)["values"]
            got = CostModel(prof).add_graph(graph)
            assert got.supports(v, "cuda")[0] and got.is_predicted(v, "cuda")
            assert got.kernel_cost(v, "cuda") == CostModel(_profile()).add_graph(graph).kernel_cost(v, "cuda")
