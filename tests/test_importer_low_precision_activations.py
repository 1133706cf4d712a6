"""hetpart.importer.low_precision_activations: the activations only weight GEMMs read stored
in bfloat16 inside a ``cuda=bf16`` partition (``STORE_GEMM_INPUTS_BF16``, on by default).

The graph tests read the lowered op graph (kernels, tensor dtypes, bytes) of a post-LN BERT
layer (the zoo's) and a pre-LN ViT-like layer; the rule tests schedule a projection that
reads its A in bf16 (emulated intrinsics on the CPU, CUDA C for sm_90); the correctness
tests run the CUDA partition in simulation (built for the CPU) against ONNX Runtime's
float32; the ``cuda``-marked one runs it on the GPU (the lead's device step).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm

from hetpart import load
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import low_precision as lp
from hetpart.importer import low_precision_activations as lpa
from hetpart.importer import low_precision_scores as lps
from hetpart.kernels import tf32
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.models.bert import BertConfig, _self_attention
from hetpart.models.graph_builder import GraphBuilder
from hetpart.targets import cuda_available, cuda_tvm_target

from conftest import plan_from_assignment
from onnx_cases import cuda_source
from precision_cases import (all_on, assert_narrowed, bert_layer, bf16_matches_ort, feeds_with_zeros,
                             switch_keeps_bf16_within_tolerance)
from tensor_core_cases import bf16_activation_emulated_intrinsics, bf16_mma_staged_emulated_intrinsics
from tir_loops import serial_everywhere


pytestmark = pytest.mark.usefixtures("bf16_switches_off")  # each test turns on what it is about

BF16 = Precision(cuda="bf16")
SM90 = cuda_tvm_target("sm_90")


@pytest.fixture
def switch_on(monkeypatch):
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)




def vit_layer(seq=64, hidden=64, heads=2, mlp=256):
    """A pre-LN encoder layer as ViT / Whisper's encoder spell it: LN -> attention -> out
    projection + residual -> LN -> fc1 -> GELU -> fc2 + residual; input ``x`` float32."""
    cfg = BertConfig(layers=1, hidden=hidden, heads=heads, intermediate=mlp, seq_len=seq)
    b = GraphBuilder("vit_layer", 0)
    x = b.input("x", (1, seq, hidden))
    h = b.layernorm(x, "ln1", hidden, eps=1e-6)
    attn = b.dense(_self_attention(b, h, "attn", cfg, 1), "attn.out", hidden, hidden)
    x = b.op("Add", [attn, x], "res1")
    h = b.layernorm(x, "ln2", hidden, eps=1e-6)
    y = b.gelu(b.dense(h, "fc1", hidden, mlp, gain=2.0), "gelu")
    y = b.op("Add", [b.dense(y, "fc2", mlp, hidden), x], "res2")
    return b.finish({"y": y})


def _lowered(graph, plan=None):
    return lower_plan_weights(graph, plan or all_on(graph, "cuda"), BF16)


def _narrowed(lowered):
    return {n for n, t in lowered.tensors.items() if t.dtype == lps.DTYPE}


def _producer_classes(graph, names):
    return sorted((graph.kernels[graph.tensors[n].producer].op_class, len(graph.tensors[n].consumers)) for n in names)


def _check_edges(before, lowered, narrowed) -> int:
    """:func:`precision_cases.assert_narrowed` (``before``: the graph with only its weights
    lowered), and: each producer is this pass's (``SUFFIX``), each reader a weight GEMM whose
    weight is bf16.  Returns the bytes moved."""
    assert_narrowed(before, lowered, narrowed)
    for n in narrowed:
        t = before.tensors[n]
        assert lowered.kernels[t.producer].func.endswith(lpa.SUFFIX)
        for c in t.consumers:
            k = lowered.kernels[c]
            func = lowered.module[k.func]
            assert any(str(p.dtype) == lps.DTYPE for p in func.params[len(k.inputs):-1])  # the bf16 weight
    return sum(k.bytes_read + k.bytes_written for k in lowered.kernels.values())


def test_switched_off_changes_nothing(zoo_graph):
    graph = zoo_graph("bert")  # (the switches off: bf16_switches_off)
    lowered = _lowered(graph)
    assert not any(k.func.endswith(lpa.SUFFIX) for k in lowered.kernels.values())
    assert lps.DTYPE not in {t.dtype for t in lowered.tensors.values()}


def test_post_ln_bert_layer(monkeypatch):
    """Post-LN: the LayerNorm outputs are also the next residual (read by the out- and
    fc2-projections' epilogues) and stay float32; the attention context (the merge-heads
    copy writes it) and the GELU output (fc1's epilogue) are stored in bf16, read by the
    out-projection and fc2.  No kernel added; bytes drop by half those tensors' twice."""
    graph = load(bert_layer())
    before = _lowered(graph)
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)
    lowered = _lowered(graph)
    narrowed = _narrowed(lowered)
    assert _producer_classes(graph, narrowed) == [("injective", 1), ("matmul", 1)]
    gelu = next(n for n in narrowed if graph.kernels[graph.tensors[n].producer].op_class == "matmul")
    assert "erf" in graph.kernels[graph.tensors[gelu].producer].func
    for n, t in graph.tensors.items():
        if t.producer and graph.kernels[t.producer].op_class == "norm":
            assert lowered.tensors[n].dtype == "float32"
    total = _check_edges(before, lowered, narrowed)
    saved = sum(graph.tensors[n].nbytes // 2 * (1 + len(graph.tensors[n].consumers)) for n in narrowed)
    assert total == sum(k.bytes_read + k.bytes_written for k in before.kernels.values()) - saved


def test_pre_ln_vit_layer(monkeypatch):
    """Pre-LN (ViT, Whisper): both LayerNorm outputs (Q/K/V's and fc1's input), the context
    and the GELU output are stored in bf16; the residual stream stays float32; bytes drop."""
    graph = load(vit_layer())
    before = _lowered(graph)
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)
    lowered = _lowered(graph)
    narrowed = _narrowed(lowered)
    assert _producer_classes(graph, narrowed) == [("injective", 1), ("matmul", 1), ("norm", 1), ("norm", 3)]
    total = _check_edges(before, lowered, narrowed)
    saved = sum(graph.tensors[n].nbytes // 2 * (1 + len(graph.tensors[n].consumers)) for n in narrowed)
    assert total == sum(k.bytes_read + k.bytes_written for k in before.kernels.values()) - saved
    for k in lowered.kernels.values():  # the adds' outputs (the residual stream) stay float32
        if k.op_class == "matmul" and len(k.inputs) > 1:
            assert all(lowered.tensors[t].dtype == "float32" for t in k.outputs)


def test_with_the_scores_switch(switch_on, monkeypatch):
    """Both switches: the scores pass's four tensors and this pass's, every kernel kept."""
    monkeypatch.setattr(lps, "STORE_SCORES_BF16", True)
    graph = load(vit_layer())
    lowered = _lowered(graph)
    assert list(lowered.kernels) == list(graph.kernels)
    assert len(_narrowed(lowered)) == 2 + 4
    pv = next(k for k in lowered.kernels.values() if k.func.startswith("matmul") and "bf16s" in k.func)
    assert lowered.module[pv.func].attrs[lps.NARROW_ACTIVATION_ATTR] == 1


def test_only_edges_inside_one_partition(switch_on):
    """A LayerNorm whose Q/K/V projections run in another partition writes float32."""
    graph = load(vit_layer())
    ln = next(k for k in graph.kernels.values() if k.op_class == "norm")
    order = list(graph.topological_order())
    cut = order.index(ln.id) + 1
    assignment = {k: ("cpu" if i < cut else "cuda") for i, k in enumerate(order)}
    lowered = _lowered(graph, plan_from_assignment(graph, assignment))
    assert lowered.tensors[ln.outputs[0]].dtype == "float32"
    assert len(_narrowed(lowered)) == 3


def test_transformers_attention_form(switch_on):
    """transformers' eager export (the corpus's Whisper / DistilBERT form: q scaled after its
    projection, ``K^T`` a Transpose node): the merged heads, read by the out-projection alone,
    are stored in bf16; the model's input (x) is not an edge."""
    from precision_cases import hf_attention

    m = hf_attention(seq=48)
    graph = load(m)
    assert lpa.gemm_input_edges(graph, graph.kernels) == []  # weights still float32: no bf16 GEMM
    lowered = _lowered(graph)
    (name,) = _narrowed(lowered)
    (reader,) = graph.tensors[name].consumers
    assert graph.kernels[reader].op_class == "matmul" and graph.tensors[name].shape == (1, 48, 32)
    bf16_matches_ort(m, feeds_with_zeros(m), simulate=True)


def _projection(graph):
    """The out-projection (+ residual) kernel of the lowered BERT layer: A = the bf16 context."""
    lowered = _lowered(graph)
    return lowered, next(k for k in lowered.kernels.values()
                         if k.func.endswith(lpa.SUFFIX) and lowered.module[k.func].attrs.get(lps.NARROW_ACTIVATION_ATTR)
                         and len(k.inputs) == 2)


def _marked(lowered, k):
    """``k``'s PrimFunc as the compiler schedules it: its weights marked layout-free (packed)."""
    from hetpart.kernels import weight_prepack

    return weight_prepack.mark_weights(lowered.module)[k.func]


def _emulated_projection(monkeypatch, emulated_intrinsics):
    """The projection of a 128-wide BERT layer (:func:`_projection`, :func:`_marked`), with
    ``tf32.intrinsics`` answering ``emulated_intrinsics()``'s names (plain-loop intrinsics: the
    tensor-core schedule runnable on the CPU)."""
    func = _marked(*_projection(load(bert_layer(hidden=128))))
    names = emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    return func


def _staged_dtypes(script: str) -> list[str]:
    """Dtypes of the shared-memory buffers of a scheduled function (float32 unless named)."""
    allocs = re.findall(r'sblock_alloc_buffer\(\(.*?\)\)(?:, "(\w+)")?, scope="shared\.dyn"\)', script)
    return [d or "float32" for d in allocs]


def test_rule_stages_bf16_a_of_a_projection(switch_on, monkeypatch):
    """The tensor-core rule (split K at batch 1) stages the bf16 A in bf16 and widens it in the
    fragment loads (``load_a_bfloat16``); emulated on the CPU it computes A @ W + bias + residual."""
    func = _emulated_projection(monkeypatch, bf16_activation_emulated_intrinsics)
    with SM90:
        sch = tc.GpuTensorCoreSplitK(KernelOptions()).apply(func, SM90)
        if sch is None:
            sch = tc.GpuTensorCoreGemm(KernelOptions()).apply(func, SM90)
    assert sch is not None
    # A and the packed weight staged in bf16; the accumulators' tile float32
    assert sorted(_staged_dtypes(sch.mod["main"].script())) == ["bfloat16", "bfloat16", "float32"]
    rng = np.random.default_rng(3)
    shapes = [[int(d) for d in p.shape] for p in func.params]
    a = lp.to_low(rng.standard_normal(shapes[0]).astype(np.float32), "bfloat16")
    a[0, :4] = 0
    args = [a] + [rng.standard_normal(s).astype(np.float32) if str(p.dtype) == "float32"
                  else lp.to_low(rng.standard_normal(s).astype(np.float32), "bfloat16")
                  for s, p in zip(shapes[1:-1], func.params[1:-1])]
    _assert_schedule_keeps_values(func, sch, args, shapes[-1])


def test_cuda_stages_bf16_a_by_cp_async(switch_on):
    """sm_90 CUDA C of the projection (tensor cores): A copied in bf16 by 8-byte ``cp.async``,
    widened as its fragments load; the producers (merge-heads copy, fc1 + GELU) store bf16."""
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels import options

    lowered, k = _projection(load(bert_layer(hidden=128)))
    opts = options.resolve(cuda_arch="sm_90")
    src = cuda_source(kernel_bench.build_module(kernel_bench.single_kernel_module(lowered, k).mod, SM90, opts))
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in src  # the default: TF32 MMA, bf16 widened exactly
    assert re.search(r"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*a0_ptr", src), "A not staged by cp.async in bf16"
    assert "(float)((nv_bfloat16*)buf_dyn_shmem_ptr)" in src
    ctx = lowered.tensors[k.inputs[0]].producer
    src = cuda_source(kernel_bench.build_module(kernel_bench.single_kernel_module(lowered, lowered.kernels[ctx]).mod,
                                                SM90, opts))
    assert "nv_bfloat16" in src






@pytest.mark.parametrize("which", ["bert", "vit", "whisper"])
def test_matches_onnxruntime_in_simulation(which, monkeypatch):
    """Within 2e-2 of ORT float32 (switch off and on; the switch changes the outputs): the zoo's
    BERT layer at 128 tokens, the ViT-like layer, and Whisper's encoder widths (6 heads of 64,
    fc 1536; 128 tokens on ORT's CPU)."""
    model = {"bert": lambda: bert_layer(),
             "vit": lambda: vit_layer(),
             "whisper": lambda: bert_layer(seq_len=128, hidden=384, heads=6, intermediate=1536)}[which]()
    switch_keeps_bf16_within_tolerance(model, monkeypatch, lpa, "STORE_GEMM_INPUTS_BF16")


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU: the bf16 activations' kernels run on the device only")
def test_matches_onnxruntime_on_gpu(switch_on, monkeypatch):
    """All-CUDA bf16 with the switch on, alone and with the scores switch, within 2e-2 of ORT
    float32: the BERT layer, the ViT-like layer and Whisper's encoder layer at 384 tokens."""
    models_ = [bert_layer(), vit_layer(seq=197, hidden=256, heads=4, mlp=1024),
               bert_layer(seq_len=384, hidden=384, heads=6, intermediate=1536)]
    for m in models_:
        bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)
    monkeypatch.setattr(lps, "STORE_SCORES_BF16", True)
    for m in models_:
        bf16_matches_ort(m, feeds_with_zeros(m), simulate=False)


def _kernel_bodies(src: str) -> dict[str, str]:
    """``{kernel name with the retyping suffixes dropped: its CUDA body}``."""
    out = {}
    for part in src.split('extern "C" __global__ void')[1:]:
        m = re.search(r"(\w+)\(", re.sub(r"__launch_bounds__\(\d+\)", "", part))
        if "{" in part.split(";")[0]:  # a definition, not a declaration
            name = m.group(1).replace(f"_{lpa.SUFFIX}", "").replace(f"_{lps.SUFFIX}", "")
            out[name] = part
    return out


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_sm90_build_compiles_and_keeps_gemms_on_tensor_cores(tmp_path, monkeypatch):
    """The ViT-like layer's fused module built for sm_90 with both switches on: nvcc compiles
    it, and every kernel that runs ``mma.sync`` without the switches still does."""
    from hetpart import kernels
    from hetpart.kernels import cuda_compile

    graph = load(vit_layer())
    plain = cuda_source(kernels.build(_lowered(graph).module, SM90, cuda_graph=False))
    monkeypatch.setattr(lpa, "STORE_GEMM_INPUTS_BF16", True)
    monkeypatch.setattr(lps, "STORE_SCORES_BF16", True)
    src = cuda_source(kernels.build(_lowered(graph).module, SM90, cuda_graph=False))
    before, after = _kernel_bodies(plain), _kernel_bodies(src)
    on_tc = [n for n, body in before.items() if "mma.sync" in body]
    assert len(on_tc) >= 6 and all("mma.sync" in after[n] for n in on_tc), on_tc
    bf16_a = r"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*a0_ptr"  # A (the first argument) copied in bf16
    assert len(re.findall(bf16_a, src)) > len(re.findall(bf16_a, plain))
    (tmp_path / "k.cu").write_text(src)
    cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    subprocess.run(cmd, capture_output=True, text=True, check=True)


# --- gpu_tensor_core.LOW_PRECISION_MMA (off by default): bf16 A copied into bf16 fragments ---
def test_bf16_mma_path_copies_the_bf16_a(switch_on, monkeypatch):
    """With ``LOW_PRECISION_MMA``: A staged in bf16 and copied into the bf16 fragments as it is
    (``mma_load_a_bfloat16_staged``; before, widened to float32 in shared memory and narrowed
    back in the fragment load); emulated on the CPU it computes the kernel's function."""
    monkeypatch.setattr(tc, "LOW_PRECISION_MMA", True)
    func = _emulated_projection(monkeypatch, bf16_mma_staged_emulated_intrinsics)
    with SM90:
        sch = tc.GpuTensorCoreSplitK(KernelOptions()).apply(func, SM90)
    assert sch is not None
    script = sch.mod["main"].script()
    assert "hetpart_test_emu_narrow_mma_compute_bfloat16" in str(sch.trace) or "bfloat16\", scope=\"warp\"" in script
    assert sorted(_staged_dtypes(script)) == ["bfloat16", "bfloat16", "float32"]
    rng = np.random.default_rng(5)
    shapes = [[int(d) for d in p.shape] for p in func.params]
    args = [lp.to_low(rng.standard_normal(s).astype(np.float32), "bfloat16") if str(p.dtype) == "bfloat16"
            else rng.standard_normal(s).astype(np.float32) for s, p in zip(shapes[:-1], func.params[:-1])]
    args[0][0, :3] = 0
    _assert_schedule_keeps_values(func, sch, args, shapes[-1])


def test_bf16_mma_cuda_stages_a_by_cp_async(switch_on, monkeypatch):
    """sm_90 CUDA C of that kernel: A copied by 8-byte ``cp.async`` in bf16, its fragments loaded
    from bf16 shared memory without a float32 round trip, bf16 ``mma.sync``."""
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels import options

    monkeypatch.setattr(tc, "LOW_PRECISION_MMA", True)
    lowered, k = _projection(load(bert_layer(hidden=128)))
    opts = options.resolve(cuda_arch="sm_90")
    src = cuda_source(kernel_bench.build_module(kernel_bench.single_kernel_module(lowered, k).mod, SM90, opts))
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in src
    assert re.search(r"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*a0_ptr", src), "A not staged by cp.async in bf16"
    assert "(nv_bfloat16)((float*)buf_dyn_shmem_ptr)" not in src  # no float32 staging narrowed at the load


def test_cpu_partitions_in_bf16_are_left(switch_on):
    """``cpu=bf16``: the CPU partition's weights are bf16, its activations stay float32."""
    graph = load(vit_layer())
    plan = all_on(graph, "cpu")
    lowered = lower_plan_weights(graph, plan, Precision(cpu="bf16", cuda="bf16"))
    assert any(k.func.endswith("bf16w") for k in lowered.kernels.values())
    assert not _narrowed(lowered)


def _assert_schedule_keeps_values(func, sch, args, out_shape) -> None:
    """``func`` unscheduled and as ``sch`` scheduled it (its GPU intrinsics emulated, its loops
    serial), both built for the CPU and run on ``args``: the same float32 ``out_shape`` result."""
    outs = []
    for f in (func, serial_everywhere(sch.mod["main"])):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target="llvm")
        tensors = [tvm.runtime.tensor(x) for x in args] + [tvm.runtime.empty(out_shape, "float32")]
        lib["main"](*tensors)
        outs.append(tensors[-1].numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4 * np.abs(outs[0]).max())
