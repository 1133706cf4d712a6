"""``hetpart.importer.fused_attention``: attention's Q K^T / softmax / P V as one kernel (issue 17).

Attention blocks as HF and torchvision export them (scores scaled by ``Mul``, by ``Div``, or Q
pre-scaled with no scale on the scores; heads reshaped and transposed; head dim 64) import with
:data:`FUSE_ATTENTION` on as one ``attention`` kernel where there were three, and compute what ONNX
Runtime computes within 1e-4 on inputs with negatives and zeros, built for the CPU (the legalised
kernel is exact math).  A masked block, head dim 32 and a score read twice are left alone; off, the
import is untouched (the same module object).  The bf16 importer passes find nothing in the fused kernel.

With a ``cuda=bf16`` all-CUDA plan the attention kernel is marked (:mod:`hetpart.importer.low_precision_flash`)
and the sm_90 build calls the flash kernel (its bf16 ``mma.sync`` and ``ldmatrix`` in the CUDA C; nvcc
compiles it for sm_90a without spills); a TF32 sm_90, an sm_80 bf16 and a CPU build keep the legalised
kernel.  With a GPU (``cuda`` mark): whisper-shaped attention (1500 tokens, 6 heads of 64) all-CUDA bf16
against ONNX Runtime within 2e-2.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from onnx import helper

from onnx_cases import model, onnxruntime_outputs, run_on, torchvision_attention

from hetpart import importer, kernels
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import fused_attention as fa
from hetpart.importer import low_precision_flash as lpf
from hetpart.kernels import flash_substitute
from hetpart.targets import cuda_available, cuda_tvm_target

T = 40  # tokens


def _attention(scale: str = "mul", heads: int = 2, hd: int = 64, mask: bool = False, extra_use: bool = False,
               seed: int = 0, tokens: int = T):
    """``x [1, T, heads*hd]`` -> Q, K, V projections (K without bias) -> heads -> attention -> out proj.
    ``scale``: "mul" (scores * c), "div" (scores / sqrt(hd)), "pre" (Q * c, scores unscaled);
    ``mask``: an additive mask input ``m [1, 1, T, T]`` on the scores; ``extra_use``: the scores
    are a model output too; ``tokens``: T."""
    T = tokens
    rng = np.random.default_rng(seed)
    d = heads * hd
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    inits = {"wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d),
             "bq": rng.standard_normal(d).astype(np.float32), "bv": rng.standard_normal(d).astype(np.float32),
             "shape": np.array([1, T, heads, hd], np.int64), "back": np.array([1, T, d], np.int64),
             "c": np.array(hd ** -0.5, np.float32), "root": np.array(hd ** 0.5, np.float32)}
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q_mm"]), n("Add", ["q_mm", "bq"], ["q0"]),
             n("MatMul", ["x", "wk"], ["k"]), n("MatMul", ["x", "wv"], ["v_mm"]), n("Add", ["v_mm", "bv"], ["v"])]
    q = "q0"
    if scale == "pre":
        nodes.append(n("Mul", ["q0", "c"], ["q"]))
        q = "q"
    for name, src, perm in (("qh", q, [0, 2, 1, 3]), ("kh", "k", [0, 2, 1, 3]), ("vh", "v", [0, 2, 1, 3])):
        nodes += [n("Reshape", [src, "shape"], [name + "_r"]), n("Transpose", [name + "_r"], [name], perm=perm)]
    nodes += [n("Transpose", ["kh"], ["khT"], perm=[0, 1, 3, 2]), n("MatMul", ["qh", "khT"], ["s"])]
    s = "s"
    if scale in ("mul", "div"):
        nodes.append(n("Mul" if scale == "mul" else "Div", ["s", "c" if scale == "mul" else "root"], ["s2"]))
        s = "s2"
    inputs, outputs = [("x", (1, T, d), np.float32)], [("y", (1, T, d), np.float32)]
    if mask:
        nodes.append(n("Add", [s, "m"], ["sm"]))
        inputs.append(("m", (1, 1, T, T), np.float32))
        s = "sm"
    if extra_use:
        outputs.append(("s", (1, heads, T, T), np.float32))
    nodes += [n("Softmax", [s], ["p"], axis=-1), n("MatMul", ["p", "vh"], ["o"]),
              n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), n("Reshape", ["ot", "back"], ["a"]),
              n("MatMul", ["a", "wo"], ["y"])]
    return model(nodes, inputs, outputs, inits)


def _feeds(d: int, seed: int = 1, mask: bool = False, tokens: int = T) -> dict:
    """x with negatives and zeros (every 5th element, one whole token); a 0/-1e4 mask."""
    T = tokens
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal((1, T, d))).astype(np.float32)
    x.flat[::5] = 0.0
    x[0, 3] = 0.0
    feeds = {"x": x}
    if mask:
        feeds["m"] = np.where(rng.random((1, 1, T, T)) < 0.2, -1e4, 0.0).astype(np.float32)
    return feeds


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(fa, "FUSE_ATTENTION", True)


def _ops(m) -> list[tuple[str, ...]]:
    return [k.ops for k in importer.load(m).kernels.values()]


def _attention_kernels(ops) -> tuple[int, int]:
    """(kernels that are exactly ``attention``, kernels with a softmax)."""
    return sum(o == ("attention",) for o in ops), sum("softmax" in o for o in ops)


@pytest.mark.parametrize("scale", ["mul", "div", "pre"])
def test_three_kernels_become_one(monkeypatch, scale):
    m = _attention(scale)
    before = _ops(m)
    monkeypatch.setattr(fa, "FUSE_ATTENTION", True)
    after = _ops(m)
    assert _attention_kernels(before) == (0, 1)
    assert _attention_kernels(after) == (1, 0)
    assert sum("matmul" in o for o in before) - sum("matmul" in o for o in after) == 2  # Q K^T, P V
    # the permutes into and out of [b, s, h, d] fuse into the head transposes: no kernel more
    assert len(after) == len(before) - 2


def test_torchvision_form(monkeypatch):
    """torchvision's ViT attention (packed in-projection, Gather per Q/K/V, per-head views)."""
    m = torchvision_attention(T, 128, 2)
    before = _ops(m)
    monkeypatch.setattr(fa, "FUSE_ATTENTION", True)
    after = _ops(m)
    assert _attention_kernels(after) == (1, 0) and len(after) == len(before) - 2


@pytest.mark.parametrize("kw", [dict(mask=True), dict(hd=32, heads=4), dict(extra_use=True)],
                         ids=["masked", "head_dim_32", "scores_read_twice"])
def test_other_blocks_left_alone(on, kw):
    assert _attention_kernels(_ops(_attention(**kw))) == (0, 1)


def test_off_leaves_the_import_unchanged():
    from hetpart.importer.onnx_source import read_model
    from hetpart.importer.relax_import import to_relax

    assert not fa.FUSE_ATTENTION
    relax_mod = to_relax(read_model(_attention(), None))
    assert fa.fuse_attention(relax_mod) is relax_mod


@pytest.mark.parametrize("scale", ["mul", "div", "pre"])
def test_outputs_match_onnxruntime_on_cpu(on, scale):
    m, feeds = _attention(scale), _feeds(128)
    assert _attention_kernels(_ops(m)) == (1, 0)
    got = run_on(m, "cpu", feeds)["y"]
    np.testing.assert_allclose(got, onnxruntime_outputs(m, feeds)[0], rtol=1e-4, atol=1e-4)


def test_masked_block_still_matches_onnxruntime(on):
    m, feeds = _attention(mask=True), _feeds(128, mask=True)
    got = run_on(m, "cpu", feeds)["y"]
    np.testing.assert_allclose(got, onnxruntime_outputs(m, feeds)[0], rtol=1e-4, atol=1e-4)


def test_bf16_importer_passes_find_nothing_in_the_fused_kernel(on):
    """The scores no longer exist: the bf16 passes' edge finders return no edge touching the
    attention kernel (they look for softmax kernels and ``matmul`` contractions)."""
    from hetpart.importer import low_precision_activations as lpa
    from hetpart.importer import low_precision_attention as lpt
    from hetpart.importer import low_precision_scores as lps

    graph = importer.load(_attention())
    group = list(graph.kernels)
    att = next(k for k, kern in graph.kernels.items() if kern.ops == ("attention",))
    assert lps.score_edges(graph, group) == []
    for edges in (lpt.attention_operand_edges(graph, group), lpa.gemm_input_edges(graph, group)):
        assert all(att != e.producer and att not in e.consumers for e in edges), edges


# --- the flash kernel in sm_90 bf16 builds ---
BF16 = Precision(cuda="bf16")


def _cuda_source(m, precision=BF16, arch: str = "sm_90") -> str:
    """CUDA C of ``m``'s all-CUDA build for ``arch`` with ``precision`` (None: float32 / TF32)."""
    from onnx_cases import cuda_source
    from precision_cases import all_on

    graph = importer.load(m)
    if precision is not None:
        graph = lower_plan_weights(graph, all_on(graph, "cuda"), precision)
    return cuda_source(kernels.build(graph.module, cuda_tvm_target(arch), cuda_graph=False))


def _flash_marked(graph) -> list[str]:
    """Names of the PrimFuncs of ``graph.module`` carrying the flash mark."""
    return [gv.name_hint for gv, f in graph.module.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and lpf.FLASH_ATTR in f.attrs]


def test_marked_only_in_bf16_cuda_partitions(on):
    from precision_cases import all_on

    graph = importer.load(_attention())
    marked = lower_plan_weights(graph, all_on(graph, "cuda"), BF16)
    att = next(k for k in marked.kernels.values() if k.ops == ("attention",))
    assert _flash_marked(marked) == [att.func]
    assert att.signature != graph.kernels[att.id].signature  # a float32 profile is not taken for it
    assert _flash_marked(lower_plan_weights(graph, all_on(graph, "cuda"), Precision())) == []
    assert _flash_marked(lower_plan_weights(graph, all_on(graph, "cpu"), Precision(cpu="bf16"))) == []


def test_mark_finds_nothing_without_the_switch():
    graph = importer.load(_attention())
    assert lpf.mark_flash(graph, [list(graph.kernels)]) is graph
    assert flash_substitute.substitute(graph.module, cuda_tvm_target("sm_90")) is graph.module


def test_sm90_bf16_build_runs_the_flash_kernel(on, tmp_path):
    src = _cuda_source(_attention())
    assert re.search(r"void (?:__launch_bounds__\(\d+\) )?attention_flash_kernel\(", src)
    assert not re.search(r"void (?:__launch_bounds__\(\d+\) )?attention_kernel\w*\(", src)  # the legalised one
    assert "mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32" in src and "ldmatrix" in src
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc")
    from hetpart.kernels import cuda_compile

    (tmp_path / "k.cu").write_text(src)
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(tmp_path / "k.cu"), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr


@pytest.mark.parametrize("precision,arch", [(None, "sm_90"), (BF16, "sm_80")], ids=["tf32_sm90", "bf16_sm80"])
def test_other_cuda_builds_keep_the_legalised_kernel(on, precision, arch):
    src = _cuda_source(_attention(), precision, arch)
    assert "attention_flash" not in src and re.search(r"void (?:__launch_bounds__\(\d+\) )?attention_kernel\(", src)


def test_cpu_target_ignores_the_mark(on):
    from precision_cases import all_on
    from hetpart.targets import cpu_tvm_target

    graph = importer.load(_attention())
    marked = lower_plan_weights(graph, all_on(graph, "cuda"), BF16)
    assert flash_substitute.substitute(marked.module, cpu_tvm_target()) is marked.module


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_whisper_shaped_attention_on_gpu_bf16(on):
    """1500 tokens, 6 heads of 64 (Whisper's encoder), all-CUDA bf16 with the switch on (the flash
    kernel on an H100), against ONNX Runtime's float32 within 2e-2 relative to its largest output."""
    from hetpart import compiler
    from hetpart.runtime import Session
    from precision_cases import all_on

    m, feeds = _attention("mul", heads=6, tokens=1500), _feeds(384, tokens=1500)
    graph = importer.load(m)
    assert any(k.ops == ("attention",) for k in graph.kernels.values())
    compiled = compiler.compile(all_on(graph, "cuda"), simulate=False, progress=False, precision="cuda=bf16")
    with Session(compiled) as s:
        got = s.run(feeds)["y"]
    want = onnxruntime_outputs(m, feeds)[0]
    assert float(np.abs(got - want).max() / np.abs(want).max()) < 2e-2


@pytest.mark.parametrize("scale,want", [("mul", 0.125), ("div", 0.125), ("pre", 1.0)])
def test_flash_kernel_gets_the_scores_scale(on, scale, want):
    """The scale the substitution reads from the legalised kernel (``* c``, ``/ sqrt(d)`` as ``* 1/sqrt(d)``,
    none when Q was scaled before)."""
    graph = importer.load(_attention(scale))
    att = next(k for k in graph.kernels.values() if k.ops == ("attention",))
    assert flash_substitute._scale(graph.module[att.func]) == pytest.approx(want, rel=1e-7)


def test_bf16_plan_in_simulation_matches_onnxruntime(on):
    """The marked graph of an all-CUDA ``cuda=bf16`` plan, built for the CPU (simulation: the mark
    is ignored, the legalised kernel runs), within 2e-2 of ONNX Runtime's float32."""
    from hetpart import compiler
    from hetpart.runtime import Session
    from precision_cases import all_on

    m, feeds = _attention("div"), _feeds(128)
    graph = importer.load(m)
    compiled = compiler.compile(all_on(graph, "cuda"), simulate=True, progress=False, precision="cuda=bf16")
    with Session(compiled) as s:
        got = s.run(feeds)["y"]
    want = onnxruntime_outputs(m, feeds)[0]
    assert float(np.abs(got - want).max() / np.abs(want).max()) < 2e-2
