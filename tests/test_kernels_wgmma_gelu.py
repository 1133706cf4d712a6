"""The ``wgmma`` GEMM's ``bias_gelu`` epilogue and :data:`wgmma_gemm.GELU_FAST_DIVIDE` (off; issue 17).

Device step 161's profile tables cut the ViT / DistilBERT fc1 + GELU kernel's name at 70 characters,
before ``_bf16a_wgmma_kernel``: the kernel *is* substituted.  Pinned here, without a GPU:

* a ViT-B-shaped block (bf16 A, ``bf16`` family, bn 64) and a DistilBERT-shaped post-LN layer at batch 32
  (float32 A, ``f32a``, M = 4096: the large-M bn-256 variant) lowered for an all-CUDA bf16 plan: fc1 is
  matched with the ``bias_gelu`` epilogue and a bf16 output and substituted, with the switch off and on;
  the switch changes fc1's kernel only (every other PrimFunc structurally equal), and only its GELU
  (``__fdividef`` and the multiply by 1/sqrt 2 with it on, neither off);
* the epilogue with the switch off is the fused kernel's expression (two IEEE divisions); on, evaluated in
  float32 (``__fdividef`` modelled as the correctly rounded quotient, which it is within 2 ulp) it is
  within 1e-6 (1 + |y|) of the off one and within ``wgmma_match.EPILOGUE_TOL`` of float64 erf-GELU, no
  less accurate than the off one, NaN passed through, and for y >= -3 its bf16 rounding equals the off
  one's on all but rare ties (one bf16 ulp apart; below, the output is the residue of 1 + erf, a few
  1e-7 wide in both);
* nvcc sm_90a compiles both b32 fc1 variants with the switch on without spills, their PTX with
  ``div.approx.f32`` and no ``div.rn.f32`` (64 of those with it off).

With a GPU (``cuda`` mark): the switched kernels against float64 numpy, and against the switch-off kernel
(bf16 outputs equal but for rare one-ulp ties where y >= -3).
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import tirx

from onnx_cases import plan_all_on, torchvision_attention

from hetpart import importer, models
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer.low_precision import to_low
from hetpart.kernels import weight_prepack, wgmma_gemm as wg, wgmma_match as wm, wgmma_splitk as sk
from hetpart.kernels import wgmma_substitute as ws, wgmma_variant as wv
from hetpart.kernels.options import KernelOptions
from hetpart.targets import cuda_available, cuda_tvm_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_wgmma_probe import _with_epilogue, variant_inputs  # noqa: E402

SM90 = cuda_tvm_target("sm_90")
PIPE = dict(swizzle="128b", consumers=2)
# ViT-B/16 b32's fc1 (the rule's bf16 variant) and DistilBERT b32's (f32a, LARGE_M_ROWS' bn 256)
FC1 = {"vit_b32": (6304, 3072, 768, "bf16"), "distilbert_b32": (4096, 3072, 768, "f32a")}


# --- the epilogue, evaluated -----------------------------------------------------------------------------
def _eval32(e, env: dict):
    """The TIR expression ``e`` evaluated in float32 numpy arithmetic over arrays (``env``: Var -> array);
    ``__fdividef`` modelled as the correctly rounded float32 quotient."""
    ev = lambda x: _eval32(x, env)  # noqa: E731
    if isinstance(e, tirx.Let):
        return _eval32(e.body, {**env, e.var: ev(e.value)})
    if isinstance(e, tirx.Var):
        return next(v for k, v in env.items() if k.same_as(e))
    if isinstance(e, tirx.FloatImm):
        return np.float32(e.value)
    ops = {tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply, tirx.Div: np.divide,
           tirx.Min: np.minimum, tirx.Max: np.maximum}
    for cls, fn in ops.items():
        if isinstance(e, cls):
            with np.errstate(all="ignore"):
                return fn(ev(e.a), ev(e.b)).astype(np.float32)
    if isinstance(e, tirx.Select):
        return np.where(ev(e.condition), ev(e.true_value), ev(e.false_value)).astype(np.float32)
    if isinstance(e, tvm.ir.Call):
        name = str(getattr(e.op, "name", ""))
        args = [ev(a) for a in e.args[1:]] if name.endswith("call_pure_extern") else [ev(a) for a in e.args]
        if name.endswith("isnan"):
            return np.isnan(args[0])
        if name.endswith("call_pure_extern") and str(e.args[0].value) == wg.FAST_DIVIDE:
            with np.errstate(all="ignore"):
                return np.divide(args[0], args[1]).astype(np.float32)
    raise NotImplementedError(type(e).__name__, e)


def _gelu32(y: np.ndarray, fast: bool) -> np.ndarray:
    v = tirx.Var("y_in", "float32")
    return _eval32(wg.gelu_value(v, fast), {v: y.astype(np.float32)})


def _calls(e, name: str) -> int:
    found = []
    tvm_ffi.structural_walk(e, (tvm.ir.Call, lambda x: found.append(x) if len(x.args) and isinstance(
        x.args[0], tvm.ir.StringImm) and x.args[0].value == name else None), order="post")
    return len(found)


def _divs(e) -> int:
    found = []
    tvm_ffi.structural_walk(e, (tirx.Div, found.append), order="post")
    return len(found)


def test_the_switch_is_off_and_the_default_is_the_fused_kernels_gelu():
    assert wg.GELU_FAST_DIVIDE is False
    y = tirx.Var("y", "float32")
    assert tvm_ffi.structural_equal(wg.gelu_value(y), wg.gelu_value(y, False), map_free_vars=True)
    assert _divs(wg.gelu_value(y)) == 2 and _calls(wg.gelu_value(y), wg.FAST_DIVIDE) == 0
    fast = wg.gelu_value(y, True)
    assert _divs(fast) == 0 and _calls(fast, wg.FAST_DIVIDE) == 1
    assert wg.INV_SQRT2_F32 == float(np.float32(1 / math.sqrt(2)))


def _grid() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 1e-30, -1e-30, 4 * math.sqrt(2), -4 * math.sqrt(2), 1e4, -1e4]  # fast_erf clamps at |d| 4
    return np.concatenate([np.linspace(-12, 12, 200001), rng.standard_normal(100000) * 3, edges]).astype(np.float32)


def test_the_fast_gelu_is_within_a_few_ulps_of_the_fused_kernels():
    y = _grid()
    exact, fast = _gelu32(y, False), _gelu32(y, True)
    y64 = y.astype(np.float64)
    want = 0.5 * y64 * (1.0 + np.vectorize(math.erf)(y64 / math.sqrt(2)))
    assert np.abs(fast.astype(np.float64) - exact).max() <= 1e-6 * (1 + np.abs(y64)).max()
    assert (np.abs(fast - want) <= wm.EPILOGUE_TOL * (1 + np.abs(want))).all()
    assert (np.abs(fast.astype(np.float64) - exact) <= 1e-6 * (1 + np.abs(y64))).all()
    # no less accurate than the fused kernel's, in the tail (y < -3: the output the residue of 1 + erf,
    # both errors as large as it) and elsewhere
    for part in (y < -3, y >= -3):
        assert np.abs(fast - want)[part].max() <= 1.25 * np.abs(exact - want)[part].max()
    # where the output is not that residue (y >= -3, |GELU| >= 0.004), the bf16 store rounds both alike
    # but for ties, one bf16 ulp apart
    b_exact = to_low(exact[y >= -3], "bfloat16").view(np.uint16).astype(np.int32)
    b_fast = to_low(fast[y >= -3], "bfloat16").view(np.uint16).astype(np.int32)
    assert (b_exact != b_fast).mean() < 1e-3 and np.abs(b_exact - b_fast).max() <= 1
    # NaN through, infinities as the off GELU gives them
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    assert np.isnan(_gelu32(special[:1], True)).all()
    np.testing.assert_array_equal(_gelu32(special, True)[1:], _gelu32(special, False)[1:])


# --- the kernels' CUDA C ----------------------------------------------------------------------------------
def _source(name: str, epilogue="bias_gelu") -> str:
    m, n, k, precision = FC1[name]
    v = wv.choose(m, n, k, precision)
    options = {key: val for key, val in v.gemm_options().items() if key != "split"}
    assert v.split == 1
    return wg.cuda_source(wg.build(m, n, k, v.bn, epilogue=epilogue, out_dtype="bfloat16", **options))


@pytest.mark.parametrize("name", sorted(FC1))
def test_the_switch_changes_only_the_gelu(name, monkeypatch):
    off = _source(name)
    assert wg.FAST_DIVIDE not in off and " / 0x1.6a09e6p+0f" in off
    monkeypatch.setattr(wg, "GELU_FAST_DIVIDE", True)
    on = _source(name)
    gelus = off.count(" / 0x1.6a09e6p+0f")  # one per stored value: y / float32(sqrt 2)
    assert gelus and on.count(wg.FAST_DIVIDE + "(") == on.count(" * 0x1.6a09e6p-1f") == gelus
    assert " / " not in on  # fast_erf's p / q as well
    # a bias epilogue is the same kernel either way
    bias_on = _source(name, "bias")
    monkeypatch.setattr(wg, "GELU_FAST_DIVIDE", False)
    assert bias_on == _source(name, "bias")


# --- ViT / DistilBERT fc1 + GELU, substituted -------------------------------------------------------------
def _vit_block():
    return torchvision_attention(197, 768, 12, block=True)


def _distilbert_b32():
    """DistilBERT-shaped (post-LN, erf-GELU) one layer at batch 32 x 128 tokens: fc1's A is the
    LayerNorm output the residual reads too (float32: ``f32a``), M = 4096."""
    return models.build("bert", True, layers=1, batch=32, seq_len=128, hidden=768, heads=12,
                        intermediate=3072, vocab=1000)


def _substituted(model):
    graph = importer.load(model)
    mod = weight_prepack.mark_weights(lower_plan_weights(graph, plan_all_on(graph, "cuda"),
                                                         Precision(cuda="bf16")).module)
    options = KernelOptions()
    found = {name: g for name, g in ws.taken(mod, SM90, options).items() if g.epilogue == "bias_gelu"}
    return found, ws.substitute(mod, SM90, options)


@pytest.fixture(scope="module")
def fc1_builds():
    """``{model: {switch: (bias_gelu matches, substituted module)}}``."""
    out = {}
    for name, model in (("vit", _vit_block()), ("distilbert", _distilbert_b32())):
        out[name] = {}
        for fast in (False, True):
            wg.GELU_FAST_DIVIDE = fast
            try:
                out[name][fast] = _substituted(model)
            finally:
                wg.GELU_FAST_DIVIDE = False
    return out


@pytest.mark.parametrize("name,family,m", [("vit", "bf16", 197), ("distilbert", "f32a", 4096)])
@pytest.mark.parametrize("fast", [False, True], ids=["off", "on"])
def test_fc1_gelu_is_a_wgmma_gemm_storing_bf16(fc1_builds, name, family, m, fast):
    found, mod = fc1_builds[name][fast]
    ((kernel, g),) = found.items()
    assert (g.m, g.n, g.k, g.precision, g.out_dtype) == (m, 3072, 768, family, "bfloat16")
    names = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert kernel not in names and kernel + "_wgmma" in names
    script = mod[kernel + "_wgmma"].script()
    assert (wg.FAST_DIVIDE in script) is fast
    assert str(mod[kernel + "_wgmma"].params[-1].dtype) == "bfloat16"


@pytest.mark.parametrize("name", ["vit", "distilbert"])
def test_the_switch_leaves_every_other_kernel(fc1_builds, name):
    (off_found, off), (_, on) = fc1_builds[name][False], fc1_builds[name][True]
    (fc1,) = off_found
    a, b = ({gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)} for mod in (off, on))
    assert sorted(a) == sorted(b)
    differ = [n for n in a if not tvm_ffi.structural_equal(a[n], b[n])]
    assert differ == [fc1 + "_wgmma"]


# --- nvcc ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
@pytest.mark.parametrize("name", sorted(FC1))
def test_nvcc_compiles_the_fast_gelu_without_spills(name, monkeypatch, tmp_path):
    from nvcc_cases import cubin_and_ptx

    monkeypatch.setattr(wg, "GELU_FAST_DIVIDE", True)
    cu = tmp_path / "k.cu"
    cu.write_text(_source(name))
    report, ptx = cubin_and_ptx(cu, "90a")
    spills = re.findall(r"(\d+) bytes spill stores", report)
    assert spills and set(spills) == {"0"}, report
    assert "serialized" not in report
    assert "div.approx.f32" in ptx and "div.rn.f32" not in ptx


# --- on the GPU -----------------------------------------------------------------------------------------------
def _run(m, n, k, precision, fast: bool):
    import ml_dtypes

    (a, b, bias), _ = variant_inputs(m, n, k, precision)
    v = wv.choose(m, n, k, precision)
    old = wg.GELU_FAST_DIVIDE
    wg.GELU_FAST_DIVIDE = fast
    try:
        ex = sk.build(m, n, k, v.bn, epilogue="bias_gelu", out_dtype="bfloat16",
                      **{key: val for key, val in v.gemm_options().items() if key != "split"})
    finally:
        wg.GELU_FAST_DIVIDE = old
    dev = tvm.cuda(0)
    c = tvm.runtime.tensor(np.full((m, n), np.nan, ml_dtypes.bfloat16), dev)
    ex[sk.GEMM_SYMBOL](*(tvm.runtime.tensor(x, dev) for x in (a, b, bias)), c)
    return c.numpy()


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("name", sorted(FC1))
def test_the_fast_gelu_matches_float64_numpy_on_gpu(name):
    m, n, k, precision = FC1[name]
    (_, _, bias), (a64, b64) = variant_inputs(m, n, k, precision)
    y = a64 @ b64.T + bias.astype(np.float64)
    want = _with_epilogue(y, np.zeros_like(bias), "bias_gelu")
    got = _run(m, n, k, precision, True).astype(np.float64)
    assert not np.isnan(got).any()
    err = np.abs(got - want)
    assert (err <= 2.0 ** -8 * np.abs(want) + 1e-4 * np.abs(want).max()).all(), float(err.max())
    base = _run(m, n, k, precision, False)
    assert err.max() <= 1.25 * np.abs(np.asarray(base, np.float64) - want).max() + 1e-6 * np.abs(want).max()
    body = y >= -3  # not the residue of 1 + erf (test_the_fast_gelu_is_within_a_few_ulps...)
    b_fast = np.asarray(got.astype(np.float32).astype(base.dtype)).view(np.uint16).astype(np.int32)[body]
    b_base = np.asarray(base).view(np.uint16).astype(np.int32)[body]
    assert (b_fast != b_base).mean() < 1e-3 and np.abs(b_fast - b_base).max() <= 1
