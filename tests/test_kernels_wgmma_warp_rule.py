"""``kernels.wgmma_variant.WARP_PRODUCER_ROWS``: the warp-specialised wgmma GEMM (``producer="warp"``,
:mod:`hetpart.kernels.wgmma_ws`) reachable from a whole-model build, off by default.

Without a GPU:

* the rule: off (0) by default, every variant and its ``gemm_options`` exactly as before (no
  ``producer`` key); on, a ``bf16``-family GEMM of at least that many rows takes ``producer="warp"``
  at :data:`~hetpart.kernels.wgmma_variant.WARP_PRODUCER_BN` (else 128 or 64, by N), 4 stages, unsplit --
  an option set :func:`wgmma_ws.check_options` accepts, that fits an H100 CTA's shared memory -- and
  ``f32a`` / ``tf32r`` / ``tf32`` and fewer rows keep their variants;
* the substitution (``wgmma_substitute``) forwards it: a ViT-B block (197 tokens, all-CUDA bf16) with
  the switch at 128 rows builds its four projections as warp-specialised kernels
  (``kernels.build`` for sm_90: ``__launch_bounds__(384)``, ``setmaxnreg``, TMA loads on mbarriers,
  ``CUtensorMap`` parameters; the host code encodes the maps through
  ``runtime.cuTensorMapEncodeTiled``), which nvcc compiles for sm_90a without spills -- and NVRTC
  (hetpart's compile callback where ``cuda-bindings`` is installed: the GPU machines) too;
* the switch set below the block's rows changes nothing.

On the GPU the numbers are ``tests/test_kernels_wgmma_ws.py``'s and the model A/B's
(``tools/gpu_model_switch_ab.py MODEL --precision bf16 --before ...WARP_PRODUCER_ROWS=0
--after ...WARP_PRODUCER_ROWS=1024``).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from tvm import tirx

from onnx_cases import cuda_source, plan_all_on, torchvision_attention

from hetpart import importer, kernels
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.kernels import cuda_compile, weight_prepack
from hetpart.kernels import wgmma_gemm as wg
from hetpart.kernels import wgmma_layout as lay
from hetpart.kernels import wgmma_splitk as wsk
from hetpart.kernels import wgmma_substitute as wsub
from hetpart.kernels import wgmma_variant as wv
from hetpart.kernels import wgmma_ws
from hetpart.kernels.options import KernelOptions
from hetpart.targets import cuda_tvm_target

pytestmark = pytest.mark.usefixtures("scalar_store")  # these pin the layout rule's variants

SM90 = cuda_tvm_target("sm_90")
SHARED_MEMORY = 227 * 1024
# ViT-B/16 at batch 32 and Whisper's encoder (d 384) at batch 8: M, N, K of every dense layer
LARGE = [(6304, 2304, 768), (6304, 768, 768), (6304, 3072, 768), (6304, 768, 3072),
         (12000, 384, 384), (12000, 1152, 384), (12000, 1536, 384), (12000, 384, 1536)]
OLD_KEYS = {"stages", "precision", "split", "swizzle", "consumers"}


def test_off_by_default_and_the_options_of_before():
    assert wv.WARP_PRODUCER_ROWS == 0
    for m, n, k in LARGE + [(197, 768, 3072)]:
        for precision in ("bf16", "f32a", "tf32r", "tf32"):
            v = wv.choose(m, n, k, precision)
            assert v.producer == "threads"
            assert set(v.gemm_options()) == OLD_KEYS
    assert wv.choose(6304, 768, 3072, "bf16") == wv.Variant("bf16", 128, 4, "128b", 2, 1)


@pytest.mark.parametrize("m,n,k", LARGE)
def test_on_a_large_bf16_gemm_takes_the_warp_producer(monkeypatch, m, n, k):
    before = {p: wv.choose(m, n, k, p) for p in ("f32a", "tf32r", "tf32")}
    monkeypatch.setattr(wv, "WARP_PRODUCER_ROWS", 1024)
    v = wv.choose(m, n, k, "bf16")
    assert v == wv.Variant("bf16", wv.WARP_PRODUCER_BN, wv.WARP_PRODUCER_STAGES, "128b", 2, 1, "warp")
    assert v.gemm_options() == {"stages": 4, "precision": "bf16", "split": 1, "swizzle": "128b",
                                "consumers": 2, "producer": "warp"}
    prec = lay.precision("bf16")
    wgmma_ws.check_options(prec, v.stages, v.swizzle, v.consumers)
    plan = lay.PipelinePlan(prec, v.bn, v.stages, v.swizzle, v.consumers)
    wg.Shape(m, n, k, v.bn, prec.tile_k, v.split, plan.a_rows).check()
    assert plan.smem_elems * prec.elem_bytes <= SHARED_MEMORY
    # the other families are the rule's of before, also with the large-M rule on for them
    assert {p: wv.choose(m, n, k, p) for p in before} == before
    monkeypatch.setattr(wv, "LARGE_M_ROWS", 1024)
    assert wv.choose(m, n, k, "bf16") == v  # the warp producer's tile wins for bf16


def test_on_fewer_rows_and_narrow_n(monkeypatch):
    small = wv.choose(197, 3072, 768, "bf16")
    monkeypatch.setattr(wv, "WARP_PRODUCER_ROWS", 1024)
    assert wv.choose(197, 3072, 768, "bf16") == small
    assert wv.choose(1023, 3072, 768, "bf16").producer == "threads"
    assert wv.choose(1024, 3072, 768, "bf16").producer == "warp"
    assert wv.choose(6304, 320, 768, "bf16").bn == 64  # N % 128 != 0
    monkeypatch.setattr(wv, "WARP_PRODUCER_BN", 256)
    assert [wv.choose(6304, n, 768, "bf16").bn for n in (768, 384, 320)] == [256, 128, 64]


def test_gemm_module_takes_the_options(monkeypatch):
    """The options reach ``wgmma_gemm``: the PrimFunc encodes two tensor maps before its launch; the
    default's module is the one built without the ``producer`` argument."""
    import tvm

    off = wv.choose(6304, 768, 3072, "bf16")
    tvm.ir.assert_structural_equal(wsk.gemm_module(6304, 768, 3072, off.bn, epilogue="bias", **off.gemm_options()),
                                   wsk.gemm_module(6304, 768, 3072, off.bn, epilogue="bias", stages=4, precision="bf16",
                                                   split=off.split, swizzle="128b", consumers=2))
    monkeypatch.setattr(wv, "WARP_PRODUCER_ROWS", 1024)
    v = wv.choose(6304, 768, 3072, "bf16")
    text = wsk.gemm_module(6304, 768, 3072, v.bn, epilogue="bias_residual", **v.gemm_options()).script()
    assert text.count("tensormap_encode_tiled") == 2 and "setmaxnreg" in text


# --- the whole-model path: substitution, kernels.build ---------------------------------------------
TOKENS = 197


@pytest.fixture(scope="module")
def vit_block():
    graph = importer.load(torchvision_attention(TOKENS, 768, 12, block=True))
    return lower_plan_weights(graph, plan_all_on(graph, "cuda"), Precision(cuda="bf16")).module


def _gemms(mod) -> dict:
    return {gv.name_hint: f for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and gv.name_hint.endswith("_wgmma")}


def test_the_substitution_builds_warp_kernels_from_the_rows_up(vit_block, monkeypatch):
    options = KernelOptions()
    marked = weight_prepack.mark_weights(vit_block)
    before = {name: f.script() for name, f in _gemms(wsub.substitute(marked, SM90, options)).items()}
    assert len(before) == 4 and not any("tensormap" in t for t in before.values())
    monkeypatch.setattr(wv, "WARP_PRODUCER_ROWS", TOKENS + 1)  # above the block's rows: nothing changes
    assert {name: f.script() for name, f in _gemms(wsub.substitute(marked, SM90, options)).items()} == before
    monkeypatch.setattr(wv, "WARP_PRODUCER_ROWS", 128)
    substituted = wsub.substitute(marked, SM90, options)
    after = _gemms(substituted)
    assert sorted(after) == sorted(before)
    assert all(f.script().count("tensormap_encode_tiled") == 2 for f in after.values())
    assert not any(gv.name_hint.endswith("_wgmma_reduce") for gv, _ in
                   substituted.functions_items())  # unsplit (fc2 split before)


@pytest.fixture(scope="module")
def warp_build(vit_block):
    """``kernels.build`` (sm_90, cross-compiled) of the block with the switch at 128 rows."""
    old = wv.WARP_PRODUCER_ROWS
    wv.WARP_PRODUCER_ROWS = 128
    try:
        return kernels.build(vit_block, SM90, cuda_graph=False, options=KernelOptions())
    finally:
        wv.WARP_PRODUCER_ROWS = old


def _host_ir(exe) -> str:
    out = []

    def walk(mod):
        if mod.kind == "llvm":
            out.append(mod.inspect_source("ll"))
        for sub in mod.imports:
            walk(sub)

    walk(exe.mod)
    return "\n".join(out)


def test_the_build_has_the_warp_specialised_kernels_and_host_tensor_maps(warp_build):
    src = cuda_source(warp_build)
    heads = re.findall(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+_wgmma_kernel)\(([^)]*)\) \{', src)
    assert len(heads) == 4, [h[1] for h in heads]
    for threads, name, params in heads:
        assert threads == "384", name
        assert params.count("const __grid_constant__ CUtensorMap tma_") == 2, name
        assert "nv_bfloat16* __restrict__ A_ptr" not in params  # A and B are read through the maps
    for op in (f"setmaxnreg.dec.sync.aligned.u32 {wgmma_ws.PRODUCER_REGS}",
               f"setmaxnreg.inc.sync.aligned.u32 {wgmma_ws.CONSUMER_REGS}",
               "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes",
               "mbarrier.arrive.expect_tx.shared::cta.b64", "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"):
        assert op in src, op
    host = _host_ir(warp_build)
    assert "runtime.cuTensorMapEncodeTiled" in host  # the maps are encoded by the host code before each launch
    assert sum(1 for line in host.splitlines()
               if line.startswith("define") and "_wgmma(" in line) == 4


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_nvcc_compiles_the_builds_kernels_without_spills(warp_build, tmp_path):
    cu = tmp_path / "block.cu"
    cu.write_text(cuda_source(warp_build))
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(cu), str(tmp_path / "block.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    per_kernel = re.findall(r"Compiling entry function '(\w+)'.*?(\d+) bytes spill stores.*?Used (\d+) registers",
                            done.stderr, flags=re.S)
    ws = [(name, spills, regs) for name, spills, regs in per_kernel if name.endswith("_wgmma_kernel")]
    assert len(ws) == 4, done.stderr[-2000:]
    assert all(spills == "0" and regs == "168" for _, spills, regs in ws), ws


@pytest.mark.skipif(not cuda_compile.nvrtc_available(), reason="no cuda-bindings (NVRTC)")
def test_nvrtc_compiles_the_builds_kernels(warp_build):
    """Where hetpart compiles CUDA C with NVRTC (the GPU machines), the ``CUtensorMap`` parameters
    need the type cuda.h would give (:func:`cuda_compile.nvrtc_source`)."""
    assert len(cuda_compile.compile_source(cuda_source(warp_build), arch="90a", compiler="nvrtc")) > 0
