"""gpu_tensor_core.SPLIT_LONG_K_BMM (off by default): batched contractions of long K whose
smallest-tile grid is under ``LONG_K_BLOCKS_PER_SM`` blocks per SM (attention's ``P V`` at
Whisper's 1500 tokens) split in K on the tensor cores by :class:`GpuTensorCoreSplitK`.

Without a GPU: the launch shapes at Whisper's widths (6 heads of 64, 1500 tokens, all-CUDA
``cuda=bf16`` for sm_90) with the switch off (as before) and on; the split factor's cases; the
switched schedule (K padded to whole chunks), its intrinsics emulated and built for the CPU,
against the unscheduled kernel, with the bf16 attention switches off and on; nvcc (sm_90a)
without spills.  The ``cuda``-marked test runs the layer against ONNX Runtime (the lead's).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hetpart.kernels import options, tf32
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import gpu_rules, gpu_tensor_core as tc
from hetpart.targets import cuda_available, cuda_tvm_target

from attention_cases import assert_schedule_computes_kernel, attention_bmms
from onnx_cases import cuda_source
from tensor_core_cases import bf16_activation_emulated_intrinsics, bf16_mma_staged_emulated_intrinsics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_static_kernels import launch_shape  # noqa: E402

SM90 = cuda_tvm_target("sm_90")
WHISPER = dict(seq_len=1500, hidden=384, heads=6)
SWITCHES = [(False, False), (True, False), (True, True)]
"""(``STORE_ATTENTION_OPERANDS_BF16``, ``LOW_PRECISION_ATTENTION_MMA``) combinations."""


def _schedules(on: bool, storage: bool, mma: bool, monkeypatch, **shape):
    """``[(rule name, Launch)]`` of the layer's ``Q K^T`` and ``P V`` under the GPU rules (sm_90)."""
    monkeypatch.setattr(tc, "SPLIT_LONG_K_BMM", on)
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", mma)
    lowered, bmms = attention_bmms(shape["seq_len"], shape["hidden"], shape["heads"], storage)
    out = []
    for kernel in bmms:
        func = lowered.module[kernel.func]
        with SM90:
            rule, sch = next((r, s) for r in gpu_rules(options.resolve(cuda_arch="sm_90"))
                             if (s := r.apply(func, SM90)) is not None)
        out.append((type(rule).__name__, launch_shape(sch.mod["main"])))
    return out


@pytest.mark.parametrize("storage, mma", SWITCHES)
def test_whisper_pv_launch_shapes(storage, mma, monkeypatch):
    """Off: ``P V`` is the plain rule's 64 x 128 tile, 144 blocks of 256 threads (47 K slices each);
    on: 32 x 64 tiles split in 2, 564 blocks of 128 threads (>= 132 SMs), then the sum kernel.
    ``Q K^T`` (K = 64) is 864 blocks of 128 x 128 either way."""
    (qk_rule, qk), (pv_rule, pv) = _schedules(False, storage, mma, monkeypatch, **WHISPER)
    assert (qk_rule, qk.grid, qk.block) == ("GpuTensorCoreGemm", 864, 256)
    assert (pv_rule, pv.grid, pv.block, pv.kernels) == ("GpuTensorCoreGemm", 144, 256, 1)
    (qk_rule_on, qk_on), (pv_rule, pv) = _schedules(True, storage, mma, monkeypatch, **WHISPER)
    assert (qk_rule_on, qk_on) == (qk_rule, qk)
    assert (pv_rule, pv.grid, pv.block, pv.kernels) == ("GpuTensorCoreSplitK", 564, 128, 2)
    assert pv.grid >= options.DEFAULT.sm_count


def test_split_factor_cases(monkeypatch):
    """Whisper's ``P V`` in 2 (4 blocks per SM), in 4 at 8; ViT-B/16's (K = 197), ``Q K^T`` (K = 64),
    a 2-D matmul and the switch off: 1."""
    pv = (6, 1500, 64, 1500)
    assert tc.long_k_split_factor(*pv) == 1  # off by default
    monkeypatch.setattr(tc, "SPLIT_LONG_K_BMM", True)
    assert tc.long_k_split_factor(*pv) == 2
    assert tc.long_k_split_factor(*pv, KernelOptions(split_k="conv")) == 1
    assert tc.long_k_split_factor(12, 197, 64, 197) == 1
    assert tc.long_k_split_factor(6, 1500, 1500, 64) == 1
    assert tc.long_k_split_factor(1, 1500, 64, 1500) == 1
    monkeypatch.setattr(tc, "LONG_K_BLOCKS_PER_SM", 8)
    assert tc.long_k_split_factor(*pv) == 4


@pytest.mark.parametrize("storage, mma", SWITCHES)
@pytest.mark.parametrize("shape", ["whisper", "small"])
def test_emulated_split_computes_the_bmm(shape, storage, mma, monkeypatch):
    """``P V``, the MMA and fragment loads emulated, built for the CPU: the unscheduled kernel's
    result.  ``whisper``: 6 heads x 1500 x 64 x 1500 on 132 SMs as the build has it (S = 2, K
    padded to 1536, rows to 1504); ``small``: a BERT layer of 2 heads of 64 at 200 tokens (K = 200,
    7 slices, padded to 3 chunks of 3) on 8 "SMs", the long-K thresholds lowered so that it splits."""
    monkeypatch.setattr(tc, "SPLIT_LONG_K_BMM", True)
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", mma)
    if shape == "small":
        monkeypatch.setattr(tc, "LONG_K_MIN_SLICES", 4)
        monkeypatch.setattr(tc, "LONG_K_MIN_CHUNK_SLICES", 2)
    tokens, hidden, heads, opts, split = ((1500, 384, 6, KernelOptions(), 2) if shape == "whisper" else
                                          (200, 128, 2, KernelOptions(sm_count=8), 3))
    lowered, bmms = attention_bmms(tokens, hidden, heads, storage)
    func = lowered.module[bmms[1].func]
    names = bf16_mma_staged_emulated_intrinsics() if mma else bf16_activation_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    assert tc.long_k_split_factor(heads, tokens, 64, tokens, opts) == split
    with SM90:
        sch = tc.GpuTensorCoreSplitK(opts).apply(func, SM90)
    assert sch is not None and launch_shape(sch.mod["main"]).kernels == 2
    assert_schedule_computes_kernel(func, sch.mod["main"], 11)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("storage, mma", [(False, False), (True, True)])
def test_sm90a_split_pv_compiles_without_spilling(storage, mma, tmp_path, monkeypatch):
    """The switched ``P V`` at Whisper's shape (both kernels) under ptxas for sm_90a: no spills."""
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels import cuda_compile

    monkeypatch.setattr(tc, "SPLIT_LONG_K_BMM", True)
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", mma)
    lowered, bmms = attention_bmms(1500, 384, 6, storage)
    built = kernel_bench.build_module(kernel_bench.single_kernel_module(lowered, bmms[1]).mod, SM90,
                                      options.resolve(cuda_arch="sm_90"))
    src = cuda_source(built)
    assert src.count("__global__") >= 2 and "mma.sync" in src  # the partials' kernel and the sum's
    (tmp_path / "k.cu").write_text(src)
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("storage, mma", [(False, False), (True, True)])
def test_whisper_layer_matches_onnxruntime_on_gpu(storage, mma, monkeypatch):
    """All-CUDA ``cuda=bf16`` with the switch on (and the bf16 attention switches off / on): the BERT
    layer at Whisper's widths and 1500 tokens, and transformers' attention form, within 2e-2 of
    ORT float32."""
    from hetpart import compiler, load, models
    from hetpart.importer import low_precision_attention as lpq

    from conftest import random_feeds, run_composed
    from precision_cases import REL_TOL, all_on, hf_attention, ort_outputs, relative_error

    monkeypatch.setattr(tc, "SPLIT_LONG_K_BMM", True)
    monkeypatch.setattr(lpq, "STORE_ATTENTION_OPERANDS_BF16", storage)
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", mma)
    layer = models.build("bert", True, layers=1, batch=1, seq_len=1500, hidden=384, heads=6, intermediate=1536,
                         vocab=1000)
    for model in (layer, hf_attention(seq=1500, width=384, heads=6)):
        graph = load(model)
        feeds = random_feeds(graph, 3)
        compiled = compiler.compile(all_on(graph, "cuda"), simulate=False, progress=False, precision="cuda=bf16")
        for got, want in zip(run_composed(compiled, feeds), ort_outputs(model, feeds)):
            assert relative_error(got, want) <= REL_TOL, f"relative error {relative_error(got, want):.3g}"
