"""gpu_tensor_core.LOW_PRECISION_ATTENTION_MMA (off by default): attention's batched matmuls, both
operands activations stored in bf16 (``low_precision_attention.STORE_ATTENTION_OPERANDS_BF16``,
P by the score pass), multiply in bf16 ``mma.sync`` m16n8k16 with float32 accumulators.

Without a GPU: the sm_90 CUDA C of the ``Q K^T`` and ``P V`` kernels of a BERT layer at Whisper's
widths (6 heads of 64, 384 tokens) issues the bf16 MMA with both switches on and the TF32 one
otherwise, stages both operands in bf16 by ``cp.async``, and compiles (nvcc, sm_90) without
spilling; the rule's schedule, its intrinsics emulated and built for the CPU, computes the
kernels' function.  The GPU run is ``test_importer_low_precision_attention``'s ``cuda`` test.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from hetpart.kernels import tf32
from hetpart.kernels.options import KernelOptions
from hetpart.kernels.rules import gpu_tensor_core as tc
from hetpart.targets import cuda_tvm_target

from attention_cases import assert_schedule_computes_kernel, attention_bmms
from onnx_cases import cuda_source
from tensor_core_cases import bf16_activation_emulated_intrinsics, bf16_mma_staged_emulated_intrinsics

SM90 = cuda_tvm_target("sm_90")
BF16_MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
TF32_MMA = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"


def _sources(storage: bool, mma: bool, monkeypatch) -> list[str]:
    """The sm_90 CUDA C of the two bmm kernels at Whisper's widths (384 tokens)."""
    from hetpart.costmodel import kernel_bench
    from hetpart.kernels import options

    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", mma)
    lowered, bmms = attention_bmms(384, 384, 6, storage)
    opts = options.resolve(cuda_arch="sm_90")
    return [cuda_source(kernel_bench.build_module(kernel_bench.single_kernel_module(lowered, k).mod, SM90, opts))
            for k in bmms]


@pytest.mark.parametrize("storage, mma", [(True, True), (True, False), (False, True), (False, False)])
def test_sm90_bmms_multiply_in_bf16_with_both_switches(storage, mma, monkeypatch):
    """Both switches: every MMA of ``Q K^T`` and ``P V`` is the bf16 m16n8k16 one; any switch off:
    TF32.  With the storage switch (alone: the bf16 operands widened exactly in the fragment
    loads) both operands are copied into shared memory in bf16 by 8-byte ``cp.async`` -- B
    (``K^T``, ``V``: contiguous along N) stored K-major, not one 2-byte element per lane."""
    for src in _sources(storage, mma, monkeypatch):
        kinds = set(re.findall(r"mma\.sync\.aligned\.[\w.]+", src))
        assert kinds == ({BF16_MMA} if storage and mma else {TF32_MMA}), kinds
        if storage:  # both staged in bf16, 4 elements per cp.async (B K-major: tf32's ``_kmajor`` loads)
            assert re.search(r"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*a0_ptr", src), "operand 0 not in bf16"
            assert re.search(r"ptx_cp_async\w*_8_2_2\(buf_dyn_shmem_ptr, [^;]*a1_ptr", src), "operand 1 not in bf16"
            assert not re.search(r"a1_ptr\[", src), "operand 1 loaded element by element"
            assert "(nv_bfloat16)((float*)buf_dyn_shmem_ptr)" not in src  # no float32 staging narrowed at the load


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_sm90_bf16_bmms_compile_without_spilling(tmp_path, monkeypatch):
    from hetpart.kernels import cuda_compile

    for i, src in enumerate(_sources(True, True, monkeypatch)):
        (tmp_path / f"k{i}.cu").write_text(src)
        cmd = cuda_compile.nvcc_command("90", "cubin", str(tmp_path / f"k{i}.cu"), str(tmp_path / f"k{i}.cubin"))
        done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
        spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
        assert spills and set(spills) == {"0"}, done.stderr


@pytest.mark.parametrize("mma", [True, False], ids=["bf16-mma", "tf32"])
@pytest.mark.parametrize("tokens", [128, 100])
@pytest.mark.parametrize("which", [0, 1], ids=["qk", "pv"])
def test_emulated_bf16_schedule_computes_the_bmm(which, tokens, mma, monkeypatch):
    """The rule's bf16 schedule of ``Q K^T`` / ``P V`` (BERT layer, 2 heads of 64, 128 tokens and
    100 -- rows, columns and ``P V``'s K padded to whole tiles, the copies predicated -- on 8 "SMs"
    so that the grid fills), the MMA and fragment loads emulated by plain loops, built for the
    CPU: the unscheduled kernel's result (float32 sums of exact bf16 products; a bf16 output
    within one rounding).  ``mma`` False: the storage switch alone (TF32 fragments, bf16 widened
    in the loads)."""
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", mma)
    lowered, bmms = attention_bmms(tokens, 128, 2, storage=True)
    func = lowered.module[bmms[which].func]
    names = bf16_mma_staged_emulated_intrinsics() if mma else bf16_activation_emulated_intrinsics()
    monkeypatch.setattr(tf32, "intrinsics", lambda: dict(names))
    kmajor = []
    stage_kmajor = tc._stage_kmajor

    def recorded(*args):
        staged, done = stage_kmajor(*args)
        kmajor.append(done)
        return staged, done

    monkeypatch.setattr(tc, "_stage_kmajor", recorded)
    opts = KernelOptions(sm_count=8)
    with SM90:
        sch = tc.GpuTensorCoreGemm(opts).apply(func, SM90) or tc.GpuTensorCoreSplitK(opts).apply(func, SM90)
    assert sch is not None
    assert kmajor and all(kmajor), "B (K^T / V, contiguous along N) not staged K-major"
    assert ('bfloat16", scope="warp"' in sch.mod["main"].script()) == mma  # bf16 fragments
    assert_schedule_computes_kernel(func, sch.mod["main"], 7 + which)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_sm90_layer_builds_with_both_switches(tmp_path, monkeypatch):
    """The whole BERT layer at Whisper's widths (384 tokens) built for sm_90 with both switches:
    nvcc compiles the module (sm_90a) without spilling; exactly the two bmm kernels issue the
    bf16 MMA, no kernel the TF32 one any more, the weight GEMMs' ``wgmma`` kernels as they were.
    Flash attention off: on sm_90 it would replace the bmms this is about."""
    from hetpart import kernels
    from hetpart.kernels import cuda_compile, flash_substitute

    monkeypatch.setattr(flash_substitute, "FLASH_ATTENTION", False)
    lowered, _ = attention_bmms(384, 384, 6, storage=False)
    plain = cuda_source(kernels.build(lowered.module, SM90, cuda_graph=False))
    monkeypatch.setattr(tc, "LOW_PRECISION_ATTENTION_MMA", True)
    lowered, bmms = attention_bmms(384, 384, 6, storage=True)
    src = cuda_source(kernels.build(lowered.module, SM90, cuda_graph=False))
    bodies = [part for part in src.split('extern "C" __global__ void')[1:] if "{" in part.split(";")[0]]
    bf16 = [b for b in bodies if BF16_MMA in b]
    names = [re.search(r"(\w+)\(", re.sub(r"__launch_bounds__\(\d+\)", "", b)).group(1) for b in bf16]
    assert len(bf16) == len(bmms) and all(any(n.startswith(k.func) for n in names) for k in bmms), names
    assert TF32_MMA in plain and TF32_MMA not in src  # in this layer only the bmms were mma.sync TF32 kernels
    assert src.count("wgmma.mma_async") == plain.count("wgmma.mma_async")  # the weight GEMMs' kernels as they were
    (tmp_path / "k.cu").write_text(src)  # sm_90a: the wgmma GEMMs (the bf16 build's default)
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
