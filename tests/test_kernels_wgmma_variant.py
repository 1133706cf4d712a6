"""``kernels.wgmma_variant``: the wgmma GEMM variant the substitution builds per matched layer.

The rule (device step 150, H100, ``bench/results/gpu-wgmma-swizzle-150-nvidia-h100.json``):
``bf16`` (A bf16) 128B swizzle, 4 stages, 2 consumers, bn 64 unsplit, bn 128 split where
K >= 4 N; ``f32a`` (A float32) the same at bn 128, split where K >= N; ``tf32r`` the first
spike's variant unchanged.  Checked here for the dense layers of ViT-B/16 (M 197), DistilBERT
(M 128) and Whisper's encoder (M 1500, d 384), that every chosen variant builds (shape, shared
memory; with nvcc, compiled without spills), that it is the measured best on ViT's shapes, and that
a matched layer with a bf16 A is the ``bf16`` family (and is substituted on a bf16 view).  No GPU needed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.script import tirx as T

from hetpart.kernels import wgmma_gemm as wg
from hetpart.kernels import wgmma_layout as lay
from hetpart.kernels import wgmma_match as wm
from hetpart.kernels import wgmma_splitk as wsk
from hetpart.kernels import wgmma_variant as wv
from hetpart.targets import cuda_tvm_target

pytestmark = pytest.mark.usefixtures("scalar_store")  # these pin the layout rule's variants

SM90 = cuda_tvm_target("sm_90")
RESULTS = Path(__file__).resolve().parents[1] / "bench/results/gpu-wgmma-swizzle-150-nvidia-h100.json"
SHARED_MEMORY = 227 * 1024
"""Dynamic shared memory one H100 CTA may have."""

# (model, M, N, K): every dense layer's shape (q/k/v apart and as one GEMM; out; fc1; fc2)
SHAPES = [
    ("vit_b_16", 197, 2304, 768), ("vit_b_16", 197, 768, 768), ("vit_b_16", 197, 3072, 768),
    ("vit_b_16", 197, 768, 3072),
    ("distilbert", 128, 768, 768), ("distilbert", 128, 2304, 768), ("distilbert", 128, 3072, 768),
    ("distilbert", 128, 768, 3072),
    ("whisper_encoder", 1500, 384, 384), ("whisper_encoder", 1500, 1152, 384), ("whisper_encoder", 1500, 1536, 384),
    ("whisper_encoder", 1500, 384, 1536),
]
# (bn, split) the rule picks, per shape above: bf16 family, f32a family
EXPECTED = {
    "bf16": [(64, 1), (64, 1), (64, 1), (128, 8), (64, 1), (64, 1), (64, 1), (128, 8), (64, 1), (64, 1), (64, 1),
             (128, 4)],
    "f32a": [(128, 1), (128, 6), (128, 1), (128, 8), (128, 6), (128, 1), (128, 1), (128, 8), (128, 3), (128, 1),
             (128, 1), (128, 4)],
}


@pytest.mark.parametrize("precision", ["bf16", "f32a"])
@pytest.mark.parametrize("index", range(len(SHAPES)), ids=lambda i: "{}-{}x{}x{}".format(*SHAPES[i]))
def test_the_rule_per_model_shape(precision, index):
    _, m, n, k = SHAPES[index]
    got = wv.choose(m, n, k, precision)
    bn, split = EXPECTED[precision][index]
    assert got == wv.Variant(precision, bn, 4, "128b", 2, split)


@pytest.mark.parametrize("precision", ["bf16", "f32a", "tf32r"])
@pytest.mark.parametrize("model,m,n,k", SHAPES)
def test_every_chosen_variant_builds(precision, model, m, n, k):
    """Shape accepted (N % bn, K % tile K x split), shared memory within an H100 CTA's."""
    v = wv.choose(m, n, k, precision)
    plan = lay.PipelinePlan(lay.precision(precision), v.bn, v.stages, v.swizzle, v.consumers)
    wg.Shape(m, n, k, v.bn, plan.precision.tile_k, v.split, plan.a_rows).check()
    assert plan.smem_elems * plan.precision.elem_bytes <= SHARED_MEMORY
    if v.split > 1:  # split-K only where the rule says K is long
        assert k >= (wv.BF16_SPLIT_K_OVER_N if precision == "bf16" else wv.F32A_SPLIT_K_OVER_N) * n \
            or precision == "tf32r"


@pytest.mark.parametrize("model,m,n,k", SHAPES)
def test_tf32r_is_the_first_spikes_variant(model, m, n, k):
    """TF32 builds substitute what they did before (step 150: swizzled tf32 not faster)."""
    bn = 128 if n % 128 == 0 else 64
    assert wv.choose(m, n, k, "tf32r") == wv.Variant("tf32r", bn, 3, "none", 1,
                                                     wsk.choose_split(m, n, k, bn, "tf32r"))


def test_narrow_n_takes_bn_64_and_bad_input_raises():
    assert wv.choose(197, 192, 768, "f32a").bn == 64
    assert wv.choose(197, 192, 768 * 4, "bf16").bn == 64
    with pytest.raises(ValueError):
        wv.choose(197, 100, 768, "bf16")
    with pytest.raises(ValueError):
        wv.choose(197, 768, 768, "fp16")


# ViT-B/16 at batch 32 (M = 32 x 197) and Whisper's encoder's narrow N at 8 x 1500 rows
LARGE = [(6304, 2304, 768), (6304, 768, 768), (6304, 3072, 768), (6304, 768, 3072), (12000, 384, 384)]


def test_large_m_rule_leaves_families_it_does_not_name(monkeypatch):
    """Step 160: bf16 lost with wider tiles; the switch set changes f32a only."""
    monkeypatch.setattr(wv, "LARGE_M_ROWS", 0)
    rule = {p: wv.choose(6304, 3072, 768, p) for p in wv.FAMILIES}
    monkeypatch.setattr(wv, "LARGE_M_ROWS", 1024)
    assert wv.choose(6304, 3072, 768, "bf16") == rule["bf16"]
    assert wv.choose(6304, 3072, 768, "f32a") == wv.Variant("f32a", 256, 3, "128b", 2, 1) != rule["f32a"]


def test_large_m_rule_is_on_from_4096_rows_by_default():
    """On since step 163 (distilbert b32 bf16, M = 4096: 4.96 -> 4.65 ms): f32a GEMMs from 4096 rows
    take bn 256 unsplit; bf16 and fewer rows (Whisper b1's 1500) keep the measured rule."""
    assert wv.LARGE_M_ROWS == 4096
    assert wv.choose(4096, 768, 3072, "f32a") == wv.Variant("f32a", 256, 3, "128b", 2, 1)
    assert wv.choose(1500, 384, 384, "f32a") == wv.Variant("f32a", 128, 4, "128b", 2, 3)
    assert wv.choose(6304, 768, 3072, "bf16") == wv.Variant("bf16", 128, 4, "128b", 2, 1)


@pytest.mark.parametrize("precision", ["bf16", "f32a"])
@pytest.mark.parametrize("m,n,k", LARGE)
@pytest.mark.parametrize("bn", [256, 128])
def test_large_m_rule_takes_the_widest_tile_that_divides_n(monkeypatch, precision, m, n, k, bn):
    """With the switch set: M from LARGE_M_ROWS up gets bn (or 128 where N % bn), unsplit, a layout
    that fits; a batch-1 M keeps the measured rule."""
    small = wv.choose(197, n, k, precision)
    monkeypatch.setattr(wv, "LARGE_M_ROWS", 1024)
    monkeypatch.setattr(wv, "LARGE_M_BN", bn)
    monkeypatch.setattr(wv, "LARGE_M_FAMILIES", ("bf16", "f32a"))
    v = wv.choose(m, n, k, precision)
    want_bn = bn if n % bn == 0 else 128
    assert v == wv.Variant(precision, want_bn, wv.LARGE_M_STAGES if want_bn == 256 else wv.STAGES, "128b", 2, 1)
    plan = lay.PipelinePlan(lay.precision(precision), v.bn, v.stages, v.swizzle, v.consumers)
    wg.Shape(m, n, k, v.bn, plan.precision.tile_k, v.split, plan.a_rows).check()
    assert plan.smem_elems * plan.precision.elem_bytes <= SHARED_MEMORY
    assert wv.choose(197, n, k, precision) == small


def test_family_is_a_dtype():
    assert wv.family("bfloat16") == "bf16" and wv.family("float32") == "f32a"


def _row(rows, shape, precision, **layout):
    return [r for r in rows if r["shape"] == shape and r["precision"] == precision and r.get("vm_ms")
            and all(r.get(key) == value for key, value in layout.items())]


@pytest.mark.parametrize("shape,mnk", [("qkv", (197, 2304, 768)), ("proj", (197, 768, 768)),
                                       ("fc1", (197, 3072, 768)), ("fc2", (197, 768, 3072))])
def test_on_vits_shapes_the_rule_picks_step_150s_fastest(shape, mnk):
    """bf16: the fastest variant timed; f32a: the fastest of those timed (bn 128 / 256), and the
    split the rule picks is the timed split where a split was timed."""
    rows = json.loads(RESULTS.read_text())["variants"]
    for precision in ("bf16", "f32a"):
        timed = _row(rows, shape, precision)
        best = min(timed, key=lambda r: r["vm_ms"])
        v = wv.choose(*mnk, precision)
        assert (best["bn"], best["stages"], best["split"], best["swizzle"], best["consumers"]) == \
            (v.bn, v.stages, v.split, v.swizzle, v.consumers), (precision, best)


# --- a bf16 A: the matcher's family ---------------------------------------------------------------
@T.prim_func(private=True, s_tir=True)
def _bf16_activation(a0: T.Buffer((T.int64(1), T.int64(197), T.int64(64)), "bfloat16"),
                     a1: T.Buffer((T.int64(64), T.int64(128)), "bfloat16"), a2: T.Buffer((T.int64(128),), "bfloat16"),
                     out: T.Buffer((T.int64(1), T.int64(197), T.int64(128)), "float32")):
    """A bf16 build's dense + bias with its activation stored in bf16 too (widened as it is read)."""
    T.func_attr({"layout_free_buffers": [1, 2], "tirx.noalias": True})
    wide_a = T.sblock_alloc_buffer((T.int64(1), T.int64(197), T.int64(64)))
    wide_w = T.sblock_alloc_buffer((T.int64(64), T.int64(128)))
    acc = T.sblock_alloc_buffer((T.int64(1), T.int64(197), T.int64(128)))
    for i0, i1, i2 in T.grid(T.int64(1), T.int64(197), T.int64(64)):
        with T.sblock("widen_a"):
            v0, v1, v2 = T.axis.remap("SSS", [i0, i1, i2])
            T.reads(a0[v0, v1, v2])
            T.writes(wide_a[v0, v1, v2])
            wide_a[v0, v1, v2] = T.Cast("float32", a0[v0, v1, v2])
    for i0, i1 in T.grid(T.int64(64), T.int64(128)):
        with T.sblock("widen"):
            v0, v1 = T.axis.remap("SS", [i0, i1])
            T.reads(a1[v0, v1])
            T.writes(wide_w[v0, v1])
            wide_w[v0, v1] = T.Cast("float32", a1[v0, v1])
    for i0, i1, i2, k in T.grid(T.int64(1), T.int64(197), T.int64(128), T.int64(64)):
        with T.sblock("matmul"):
            v0, v1, v2, vk = T.axis.remap("SSSR", [i0, i1, i2, k])
            T.reads(wide_a[v0, v1, vk], wide_w[vk, v2])
            T.writes(acc[v0, v1, v2])
            with T.init():
                acc[v0, v1, v2] = T.float32(0.0)
            acc[v0, v1, v2] = acc[v0, v1, v2] + wide_a[v0, v1, vk] * wide_w[vk, v2]
    for i0, i1, i2 in T.grid(T.int64(1), T.int64(197), T.int64(128)):
        with T.sblock("T_add"):
            v0, v1, v2 = T.axis.remap("SSS", [i0, i1, i2])
            T.reads(acc[v0, v1, v2], a2[v2])
            T.writes(out[v0, v1, v2])
            out[v0, v1, v2] = acc[v0, v1, v2] + T.Cast("float32", a2[v2])


def test_a_bf16_activation_with_a_bf16_weight_is_the_bf16_family():
    got = wm.match(_bf16_activation, SM90)
    assert got is not None
    assert (got.m, got.n, got.k, got.precision, got.epilogue, got.activation_dtype) == \
        (197, 128, 64, "bf16", "bias", "bfloat16")
    assert (got.activation, got.weight, got.bias) == (0, 1, 2)


def test_a_bf16_activation_with_a_float32_weight_is_not_eligible():
    """No kernel takes a bf16 A with a float32 (tf32) B."""
    text = _bf16_activation.script().replace('a1: T.Buffer((T.int64(64), T.int64(128)), "bfloat16")',
                                             'a1: T.Buffer((T.int64(64), T.int64(128)), "float32")')
    assert '"float32")' in text
    func = tvm.script.from_source(text)
    assert str(func.params[1].dtype) == "float32"
    assert wm.match(func, SM90) is None


def _options(**kw):
    from hetpart.kernels.options import KernelOptions

    return KernelOptions(**kw)


def _bf16_module():
    """``main(x: bf16 [1, 197, 64]) -> float32 [1, 197, 128]`` calling :func:`_bf16_activation`
    with constant bf16 weight and bias (what a build with bf16 activations would hand over)."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 128)) / 8).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(128).astype(ml_dtypes.bfloat16)
    bb = relax.BlockBuilder()
    gv = bb.add_func(_bf16_activation, "fused_matmul_add_bf16a")
    x = relax.Var("x", relax.TensorType([1, 197, 64], "bfloat16"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gv, (x, relax.const(w), relax.const(b)),
                                                relax.TensorType([1, 197, 128], "float32")))
        bb.emit_func_output(out)
    return bb.get()


def test_the_substitution_feeds_a_bf16_activation_as_is(monkeypatch):
    """Switch on: the bf16-A layer calls the bf16 kernel (bn 64, two consumers, 128B swizzle) on a
    bf16 ``[M, K]`` view of its input."""
    from hetpart.kernels import wgmma_substitute as ws

    monkeypatch.setattr(wm, "WGMMA_GEMM", True)
    out = ws.substitute(_bf16_module(), SM90, _options())
    text = out["main"].script(show_meta=False)
    assert 'R.call_pure_packed("vm.builtin.reshape", x, R.shape([197, 64]), ty_args=(R.Tensor((197, 64), ' \
           'dtype="bfloat16"),))' in text
    gemm = out["fused_matmul_add_bf16a_wgmma"]
    assert str(gemm.params[0].dtype) == "bfloat16"
    assert "fused_matmul_add_bf16a" not in [g.name_hint for g in out.get_global_vars()]
    want = wsk.gemm_module(197, 128, 64, 64, epilogue="bias", **wv.choose(197, 128, 64, "bf16").gemm_options())
    assert tvm_ffi.structural_equal(gemm.body, want[wsk.GEMM_SYMBOL].body, map_free_vars=True)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("m,n,k,precision,epilogue", [(197, 3072, 768, "f32a", "bias_gelu"),
                                                       (197, 2304, 768, "bf16", "bias_gelu"),
                                                       (197, 768, 3072, "f32a", "bias"),
                                                       (6304, 3072, 768, "bf16", "bias_gelu"),
                                                       (6304, 3072, 768, "f32a", "bias_gelu"),
                                                       (6304, 768, 3072, "bf16", "bias_residual")])
def test_chosen_variants_compile_without_spilling(m, n, k, precision, epilogue, tmp_path, monkeypatch):
    """ptxas (sm_90a) spills nothing and serialises no wgmma in the chosen variants with the
    epilogues the models fuse (fc1's bias + GELU in the store; fc2's split-K reduction); at
    M = 6304, the large-M rule's bn-256 tiles (128 float32 accumulators a thread)."""
    import re
    import subprocess

    from hetpart.kernels import cuda_compile

    monkeypatch.setattr(wv, "LARGE_M_ROWS", 1024)
    v = wv.choose(m, n, k, precision)
    tgt = wg.target()
    with tgt:
        ex = tvm.compile(wsk.gemm_module(m, n, k, v.bn, epilogue=epilogue, **v.gemm_options()), target=tgt,
                         tir_pipeline=wg.TIR_PIPELINE)
    cu = tmp_path / "k.cu"
    cu.write_text(wg.cuda_source(ex))
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(cu), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    assert "serialized" not in done.stderr
