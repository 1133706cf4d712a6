"""The ``wgmma`` GEMM's residual epilogue (issue 17): ``(acc + bias) + r`` and ``acc + r``, ``r`` an
activation of the output's shape read at the store's own indices -- ViT's fc2, BERT's attention
output and fc2 -- matched, generated and substituted behind ``wgmma_match.WGMMA_GEMM`` (off).

Without a GPU:

* :func:`wgmma_match.match` on fused kernels of small ONNX graphs: ``MatMul + Add(bias) +
  Add(residual)`` (either operand order, TF32 and bf16 builds) and ``MatMul + Add(residual)``
  match, with the residual's parameter position; near-misses do not: the residual read
  transposed or broadcast (over rows or columns: a ``[1, 1, N]`` input, or the output-shaped one
  read at a fixed row), a second residual, a GELU before the residual, a scaled residual;
* the generated CUDA C, evaluated (numpy, every thread of several CTAs): in the GEMM's store
  (unsplit) the residual is read at exactly the element the accumulator is stored to -- for
  every tile layout, :func:`wgmma_layout.cta_fragment`'s element -- and the stored value is
  ``(acc + bias) + R`` there; in split-K's reduction kernel every output element reads its
  residual once, after the slices are summed (the GEMM kernel of a split reads none), and the
  emulated reduction is ``sum P + bias + R``; nvcc sm_90a compiles both without spills;
* :func:`wgmma_substitute.substitute` on a torchvision-like ViT encoder block (bf16 build):
  fc2 (the kernel fused with its residual add) calls the wgmma GEMM and its reduction with the
  residual viewed ``[M, N]``; switch off: the module itself; through ``compiler.compile`` a
  fc2-with-residual partition output calls the reduction with its residual, ``main_dps`` in place.

With a GPU (``cuda`` mark, device step 152): the ViT block and a fc2-with-residual layer,
switch on, against ONNX Runtime.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import tirx

from onnx_cases import erf_gelu, model, torchvision_attention

from hetpart import importer, kernels
from hetpart.importer import low_precision as lp
from hetpart.kernels import weight_prepack, wgmma_gemm as wg, wgmma_layout as lay, wgmma_match as wm
from hetpart.kernels import wgmma_splitk as sk, wgmma_substitute as ws, wgmma_variant as wv
from gemm_runs import run_on_gpu
from hetpart.kernels.options import DEFAULT, KernelOptions
from hetpart.targets import cuda_available, cuda_tvm_target

SM90 = cuda_tvm_target("sm_90")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
TOKENS, K, N = 197, 3072, 768  # ViT-B/16's fc2


@pytest.fixture
def wgmma_on(monkeypatch):
    monkeypatch.setattr(wm, "WGMMA_GEMM", True)
    options = KernelOptions()
    assert options.wgmma and not DEFAULT.wgmma
    return options


def _residual_layer(tokens=TOKENS, k=K, n=N, *, bias=True, kind="plain", seed=0):
    """``y = (x @ w + b) + r`` on ``[1, tokens, k]`` with ``r`` an input of ``y``'s shape; ``kind``:
    ``plain``, ``swapped`` (``r + (x @ w + b)``), ``transposed`` (``r`` given ``[1, n, tokens]``,
    transposed in the graph; tokens == n), ``rows`` (``r [1, 1, n]``, broadcast over rows),
    ``two`` (a second residual ``r2`` added), ``gelu`` (``gelu(x @ w + b) + r``), ``scaled``
    (``+ 2 r``)."""
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", "w"], ["mm"])]
    acc = "mm"
    if bias:
        nodes.append(mk("Add", ["mm", "b"], ["c"]))
        acc = "c"
    else:
        inits.pop("b")
    r_shape = {"transposed": (1, n, tokens), "rows": (1, 1, n)}.get(kind, (1, tokens, n))
    inputs = [("x", (1, tokens, k), np.float32), ("r", r_shape, np.float32)]
    r = "r"
    if kind == "transposed":
        nodes.append(mk("Transpose", ["r"], ["rt"], perm=[0, 2, 1]))
        r = "rt"
    if kind == "gelu":
        nodes += erf_gelu(acc, "g", inits)
        acc = "g"
    if kind == "scaled":
        inits["two"] = np.array(2, np.float32)
        nodes.append(mk("Mul", ["r", "two"], ["r2x"]))
        r = "r2x"
    if kind == "two":
        inputs.append(("r2", (1, tokens, n), np.float32))
        nodes += [mk("Add", [acc, r], ["s"]), mk("Add", ["s", "r2"], ["y"])]
    elif kind == "swapped":
        nodes.append(mk("Add", [r, acc], ["y"]))
    else:
        nodes.append(mk("Add", [acc, r], ["y"]))
    return model(nodes, inputs, [("y", (1, tokens, n), np.float32)], inits)


def _funcs(m, dtype=None) -> list:
    graph = importer.load(m)
    if dtype is not None:
        graph = lp.lower_weights(graph, list(graph.kernels), dtype)
    mod = weight_prepack.mark_weights(graph.module)
    return [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


def _matches(m, dtype=None) -> list:
    return [g for g in (wm.match(f, SM90) for f in _funcs(m, dtype)) if g is not None]


# --- the match -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "swapped"])
def test_bias_and_residual_match_with_the_residual(kind):
    (func,) = _funcs(_residual_layer(kind=kind))
    got = wm.match(func, SM90)
    assert got == wm.WgmmaGemm(TOKENS, N, K, "tf32r", "bias_residual", "KN", activation=0, weight=1, bias=2,
                               weight_dtype="float32", bias_dtype="float32", residual=3)
    assert list(func.params[3].shape) == list(func.params[-1].shape)


def test_a_bf16_build_matches_f32a_with_the_residual():
    (got,) = _matches(_residual_layer(), "bfloat16")
    assert (got.precision, got.epilogue, got.bias, got.residual) == ("f32a", "bias_residual", 2, 3)


def test_a_residual_without_bias_matches():
    (got,) = _matches(_residual_layer(bias=False))
    assert (got.epilogue, got.bias, got.residual) == ("residual", None, 2)


def test_a_bert_layer_matches_the_attention_output_and_fc2_with_their_residuals():
    """``zoo:bert`` at DistilBERT's shapes (128 tokens, 768, 3072), bf16 build: besides the bias
    and bias + GELU layers, the attention output projection (768 x 768) and fc2 (768 x 3072) match
    with the residual (they did not before)."""
    graph = importer.load("zoo:bert:small:layers=1,hidden=768,heads=12,intermediate=3072,seq_len=128,batch=1")
    graph = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    mod = weight_prepack.mark_weights(graph.module)
    got = sorted((g.n, g.k, g.epilogue) for g in (wm.match(f, SM90) for _, f in mod.functions_items()
                                                  if isinstance(f, tirx.PrimFunc)) if g is not None)
    assert (768, 768, "bias_residual") in got and (768, 3072, "bias_residual") in got, got
    assert (3072, 768, "bias_gelu") in got, got


@pytest.mark.parametrize("kind", ["rows", "two", "gelu", "scaled"])
def test_near_misses_are_not_matched(kind):
    """Broadcast over rows (``r [1, 1, N]``), two residuals, a GELU before the residual add, a
    scaled residual: the fused kernel is not matched."""
    (func,) = _funcs(_residual_layer(kind=kind))
    assert wm.match(func, SM90) is None


def _edited(func, old: str, new: str):
    """``func`` with its TVMScript text's ``old`` (the load and the block's read region) replaced
    by ``new``, parsed back."""
    text = func.script()
    assert text.count(old) == 2, old
    return tvm.script.from_source(text.replace(old, new))


@pytest.mark.parametrize("index", ["v_ax0, v_ax2, v_ax1", "v_ax0, T.int64(0), v_ax2", "v_ax0, v_ax1, T.int64(0)"])
def test_a_residual_read_elsewhere_than_the_store_is_not_matched(index):
    """The square layer's fused kernel (an ONNX Transpose of the residual is its own kernel, so the
    kernel is edited): its residual read transposed, or broadcast over rows or columns, at the
    output's shape -- not matched; the unedited kernel (reparsed) is."""
    (func,) = [f for f in _funcs(_residual_layer(256, 256, 256)) if len(f.params) == 5]
    res = func.params[3].name
    read = f"{res}[v_ax0, v_ax1, v_ax2]"
    assert wm.match(_edited(func, read, read), SM90).residual == 3
    assert wm.match(_edited(func, read, f"{res}[{index}]"), SM90) is None


def test_epilogue_of_returns_the_residual_buffer():
    (func,) = _funcs(_residual_layer())
    got = wm.match(func, SM90)
    assert got is not None and func.params[got.residual].name == "r"


# --- the generated code ---------------------------------------------------------------------------
_NAMES = {"((int)threadIdx.x)": "tx", "((int)blockIdx.x)": "bx", "((int)blockIdx.y)": "by", "pad_ptr[0]": "pad"}


def _source(m, n, k, bn, stages, precision, swizzle, consumers, split=1, epilogue="bias_residual") -> str:
    try:
        return wg.cuda_source(sk.build(m, n, k, bn, stages=stages, precision=precision, split=split,
                                       epilogue=epilogue, swizzle=swizzle, consumers=consumers))
    except tvm.error.TVMError as e:
        if "cuda" in str(e).lower() and "not enabled" in str(e).lower():
            pytest.skip(f"TVM has no CUDA codegen here: {e}")
        raise


def _kernel(src: str, name: str) -> str:
    """The body of the ``__global__`` function ``name`` (the definition, not the declaration)."""
    heads = [mt.end() for mt in re.finditer(rf"{name}\([^)]*\) {{", src)]
    assert len(heads) == 1, name
    body = src[heads[0]:]
    nxt = body.find('extern "C" __global__')
    return body if nxt < 0 else body[:nxt]


def _args(text: str, start: int) -> str:
    """The balanced expression of ``text`` from ``start`` (just after an opening bracket) to its
    matching close."""
    depth, i = 1, start
    while depth:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(text[i], 0)
        i += 1
    return text[start:i - 1]


def _evaluator(kernel: str):
    """A function evaluating an index expression of ``kernel`` (CUDA C of TVM's codegen) at numpy
    integer arrays ``tx``, ``bx``, ``by``: the ``cse_v`` temporaries it defines substituted."""
    cse = dict(re.findall(r"int (cse_v\d+) = (.*);", kernel))

    def clean(expr: str) -> str:
        for c_name, name in _NAMES.items():
            expr = expr.replace(c_name, name)
        expr = re.sub(r"cse_v\d+", lambda mt: f"({clean(cse[mt.group(0)])})", expr)
        names = set(re.findall(r"[a-z_]\w*", expr))
        assert re.fullmatch(r"[\w ()+*&^%<>]*", expr) and names <= {"tx", "bx", "by"}, expr
        return expr

    def ev(expr: str, **env):
        return eval(clean(expr), {"__builtins__": {}}, env)  # noqa: S307 - checked in clean

    return ev


STORES = [  # (precision, bn, stages, swizzle, consumers): fc2's bf16 variant, the first spike's, plain, tf32r
    ("f32a", 128, 4, "128b", 2), ("bf16", 128, 3, "none", 1), ("bf16", 64, 1, "none", 1), ("tf32r", 256, 2, "128b", 2),
]


@pytest.mark.parametrize("precision,bn,stages,swizzle,consumers", STORES)
def test_the_store_reads_the_residual_at_its_own_element(precision, bn, stages, swizzle, consumers):
    """Unsplit: each accumulator's store ``C[x] = (acc[i] + bias[c]) + R[y]`` has y == x, the
    fragment's element (row, col) = ``cta_fragment`` of the tile, c == col; the emulated epilogue
    (every thread of the CTAs of one tile row and column, rows past M not stored) writes
    ``acc + bias + R`` to every element once."""
    m, n, k = 197, 512, 768
    src = _source(m, n, k, bn, stages, precision, swizzle, consumers)
    gemm = _kernel(src, "wgmma_gemm_kernel")
    ev = _evaluator(gemm)
    stores = re.findall(r"C_ptr\[(.*?)\] = \(\(acc_ptr\[(\d+)\] \+ bias_ptr\[(.*?)\]\) \+ R_ptr\[(.*)\]\);", gemm)
    assert sorted(int(i) for _, i, _, _ in stores) == list(range(bn // 2))
    assert gemm.count("R_ptr[") == bn // 2  # the residual read nowhere else
    plan = lay.PipelinePlan(lay.precision(precision), bn, max(stages, 1), swizzle, consumers)
    tile_m, threads = plan.a_rows, plan.threads
    rng = np.random.default_rng(0)
    acc_full, bias, res = rng.standard_normal((m, n)), rng.standard_normal(n), rng.standard_normal((m, n))
    out, written = np.full(m * n, np.nan), np.zeros(m * n, int)
    tx = np.arange(threads)
    for by in range(-(-m // tile_m)):
        for bx in range(n // bn):
            for c_idx, i, b_idx, r_idx in stores:
                i = int(i)
                row = by * tile_m + np.array([lay.cta_fragment(t, i, consumers)[0] for t in tx])
                col = bx * bn + np.array([lay.cta_fragment(t, i, consumers)[1] for t in tx])
                x, y = ev(c_idx, tx=tx, bx=bx, by=by), ev(r_idx, tx=tx, bx=bx, by=by)
                bc = ev(b_idx, tx=tx, bx=bx, by=by) + np.zeros_like(tx)
                live = row < m  # the kernel's guard
                np.testing.assert_array_equal(y[live], x[live])
                np.testing.assert_array_equal(x[live], row[live] * n + col[live])
                np.testing.assert_array_equal(bc[live], col[live])
                rr, cc = row[live], col[live]
                out[x[live]] = (acc_full[rr, cc] + bias[bc[live]]) + res.reshape(-1)[y[live]]
                np.add.at(written, x[live], 1)
    assert (written == 1).all()
    np.testing.assert_array_equal(out.reshape(m, n), (acc_full + bias) + res)


@pytest.mark.parametrize("epilogue", ["bias_residual", "residual"])
def test_the_split_k_reduction_adds_the_residual_once_after_the_sum(epilogue):
    """Split 8 (fc2's bf16 variant): the partial GEMM reads no residual; the reduction reads each
    element's residual once, after its last slice, at the element it stores: emulated over every
    thread, ``C = sum_s P_s (+ bias) + R``."""
    m, n, k, split = TOKENS, N, K, 8
    src = _source(m, n, k, 128, 4, "f32a", "128b", 2, split=split, epilogue=epilogue)
    assert "R_ptr" not in _kernel(src, "wgmma_gemm_kernel")
    red = _kernel(src, "wgmma_splitk_reduce_kernel")
    ev = _evaluator(red)
    p_at = [mt.end() for mt in re.finditer(r"\(float4\*\)\(P_ptr \+ ", red)]
    r_at = [mt.end() for mt in re.finditer(r"R_ptr\[", red)]
    c_at = [mt.end() for mt in re.finditer(r"\(float4\*\)\(C_ptr \+ ", red)]
    assert len(p_at) == split and len(r_at) == sk.REDUCE_VEC and len(c_at) == 1
    assert min(r_at) > max(p_at) and max(r_at) < c_at[0]  # after every slice, before the store
    rng = np.random.default_rng(1)
    parts, bias, res = rng.standard_normal((split, m, n)), rng.standard_normal(n), rng.standard_normal((m, n))
    items = m * n // sk.REDUCE_VEC
    t = np.arange(-(-items // sk.REDUCE_THREADS) * sk.REDUCE_THREADS)
    bx, tx = t // sk.REDUCE_THREADS, t % sk.REDUCE_THREADS
    live = t < items
    bx, tx = bx[live], tx[live]
    acc = [sum(parts.reshape(-1)[ev(_args(red, at), tx=tx, bx=bx) + v] for at in p_at)
           for v in range(sk.REDUCE_VEC)]
    lines = re.findall(r"acc_ptr\[(\d)\] = \(*acc_ptr\[\d\] \+ (?:bias_ptr\[(.*?)\]\) \+ )?R_ptr\[(.*)\]\);", red)
    assert sorted(int(v) for v, _, _ in lines) == list(range(sk.REDUCE_VEC))
    out, reads = np.full(m * n, np.nan), np.zeros(m * n, int)
    c0 = ev(_args(red, c_at[0]), tx=tx, bx=bx)
    for v, b_idx, r_idx in lines:
        v = int(v)
        y = ev(r_idx, tx=tx, bx=bx)
        np.testing.assert_array_equal(y, c0 + v)  # the stored element's own residual
        np.add.at(reads, y, 1)
        val = acc[v] + (bias[ev(b_idx, tx=tx, bx=bx)] if b_idx else 0.0)
        out[c0 + v] = val + res.reshape(-1)[y]
    assert (reads == 1).all()
    want = parts.sum(0) + (bias if epilogue == "bias_residual" else 0.0) + res
    np.testing.assert_allclose(out.reshape(m, n), want, rtol=1e-12, atol=1e-12)


def test_residual_epilogues_have_the_residual_parameter_after_the_bias():
    f = wg.wgmma_gemm(64, 128, 64, 128, stages=2, epilogue="bias_residual")
    assert [p.name for p in f.params] == ["A", "B", "bias", "R", "C"]
    f = wg.wgmma_gemm(64, 128, 64, 128, stages=2, epilogue="residual")
    assert [p.name for p in f.params] == ["A", "B", "R", "C"]
    assert [p.name for p in sk.reduce(64, 128, 2, "bias_residual").params] == ["P", "bias", "R", "C"]
    with pytest.raises(ValueError):
        wg.wgmma_gemm(64, 128, 128, 128, stages=2, split=2, epilogue="bias_residual")


@needs_nvcc
@pytest.mark.parametrize("split", [1, 8])
def test_nvcc_compiles_the_residual_kernels_without_spilling(split, tmp_path):
    from hetpart.kernels import cuda_compile

    cu = tmp_path / "k.cu"
    cu.write_text(_source(TOKENS, N, K, 128, 4, "f32a", "128b", 2, split=split))
    cmd = cuda_compile.nvcc_command("90a", "cubin", str(cu), str(tmp_path / "k.cubin"))
    done = subprocess.run([*cmd, "-Xptxas", "-v"], capture_output=True, text=True, check=True)
    spills = re.findall(r"(\d+) bytes spill stores", done.stderr)
    assert spills and set(spills) == {"0"}, done.stderr
    assert "serialized" not in done.stderr


# --- the substitution ----------------------------------------------------------------------------
def _vit_block():
    return torchvision_attention(197, 768, 12, block=True)


def _bf16_module(m):
    graph = importer.load(m)
    graph = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    return weight_prepack.mark_weights(graph.module)


def test_a_vit_block_has_fc2_replaced_with_the_residual(wgmma_on, without_wgmma):
    """ViT's encoder block in a bf16 build: fc2 (fused with the second residual add) calls the
    wgmma GEMM (split 8) and its reduction with (partials, bias, residual viewed [197, 768]);
    no call of the fused kernel is left; switches off, the module itself."""
    mod = _bf16_module(_vit_block())
    found = {gv.name_hint: wm.match(f, SM90, wgmma_on) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    fc2 = [name for name, g in found.items() if g is not None and g.residual is not None]
    assert len(fc2) == 1
    assert wv.choose(TOKENS, N, K, "f32a").split == 8
    assert ws.substitute(mod, SM90, KernelOptions(wgmma=False)) is mod
    out = ws.substitute(mod, SM90, wgmma_on)
    names = {gv.name_hint for gv, _ in out.functions_items()}
    assert fc2[0] not in names and {fc2[0] + "_wgmma", fc2[0] + "_wgmma_reduce"} <= names
    assert f"{fc2[0]}_wgmma_reduce" in names
    reduce = out[fc2[0] + "_wgmma_reduce"]
    assert [p.name for p in reduce.params] == ["P", "bias", "R", "C"]
    text = out["main"].script(show_meta=False)
    calls = [line for line in text.splitlines() if f"{fc2[0]}_wgmma_reduce, (" in line]
    assert len(calls) == 1 and calls[0].count(",") >= 3, calls
    assert 'R.call_pure_packed("vm.builtin.reshape"' in text and "R.shape([197, 768])" in text


@needs_nvcc
def test_a_fc2_layer_builds_with_the_residual_in_the_reduction(wgmma_on):
    """Through ``kernels.build`` (bf16, sm_90, no GPU): the fc2-with-residual kernel is the wgmma
    GEMM and a reduction reading ``R``; no ``mma.sync`` left."""
    from onnx_cases import cuda_source

    graph = importer.load(_residual_layer())
    graph = lp.lower_weights(graph, list(graph.kernels), "bfloat16")
    src = cuda_source(kernels.build(graph.module, SM90, cuda_graph=False, options=wgmma_on))
    assert "wgmma.mma_async" in src and "mma.sync" not in src
    assert re.search(r"_wgmma_reduce_kernel\([^)]*float\* __restrict__ R_ptr", src)


@needs_nvcc
def test_a_partition_output_with_a_residual_is_substituted_in_place(wgmma_on, monkeypatch):
    """Through ``compiler.compile`` (TF32, sm_90, no GPU): the fc2-with-residual layer is the
    partition's output; ``main`` and ``main_dps`` call the reduction (split 6) with the residual
    input viewed ``[197, 768]``, ``main_dps`` in place on its destination; no ``mma.sync`` left."""
    from tensor_core_cases import compiled_cuda_library

    data, scripts = compiled_cuda_library(_residual_layer(), monkeypatch, wgmma_on)
    assert b"wgmma.mma_async" in data and b"mma.sync" not in data
    for name in ("main", "main_dps"):
        text = scripts[name]
        view = re.search(r"(\w+): R.Tensor\(\(197, 768\), dtype=\"float32\"\) = "
                         r"R.call_pure_packed\(\"vm.builtin.reshape\", r, R.shape\(\[197, 768\]\)", text)
        assert view, text
        calls = [line for line in text.splitlines() if "_wgmma_reduce, (" in line]
        assert len(calls) == 1 and f", {view.group(1)}" in calls[0], calls
        assert ("R.call_tir_inplace(" in calls[0]) == (name == "main_dps")
        assert all("_wgmma" in line for line in text.splitlines() if "R.call_tir" in line)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("fmt", [None, "bf16"])
@pytest.mark.parametrize("make", [_vit_block, _residual_layer])
def test_residual_layers_match_onnxruntime_on_gpu(wgmma_on, make, fmt):
    """On the GPU with the switch on: the build holds the substituted kernels (fc2 with its
    residual) and its output is within 1e-2 (TF32) / 2e-2 (bf16 weights) of ONNX Runtime."""
    from onnx_cases import wgmma_error_on_gpu

    err = wgmma_error_on_gpu(make(), f"cuda={fmt}" if fmt else None, wgmma_on)
    assert err <= (2e-2 if fmt else 1e-2), f"{make.__name__} {fmt}: max error {err:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("split,epilogue", [(1, "bias_residual"), (8, "bias_residual"), (1, "residual"),
                                            (8, "residual")])
def test_residual_kernels_match_numpy_on_gpu(split, epilogue):
    """fc2's bf16 variant (f32a, bn 128, 4 stages, 128B swizzle, 2 consumers) at ViT's fc2 shape,
    C pre-filled with NaN: within 1e-4 of max |C| of float64 numpy (the swizzle tests' tolerance)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from gpu_wgmma_probe import variant_inputs

    m, n, k = TOKENS, N, K
    (a, b, bias), (a64, b64) = variant_inputs(m, n, k, "f32a")
    res = np.random.default_rng(2).standard_normal((m, n)).astype(np.float32)
    dev = tvm.cuda(0)
    ex = sk.build(m, n, k, 128, stages=4, precision="f32a", split=split, epilogue=epilogue, swizzle="128b",
                  consumers=2)
    ta, tb, tbias, tres = (tvm.runtime.tensor(x, dev) for x in (a, b, bias, res))
    extra = [tbias, tres] if epilogue == "bias_residual" else [tres]
    got, _ = run_on_gpu(ex, dev, ta, tb, extra, m, n, split)
    want = a64 @ b64.T + (bias.astype(np.float64) if epilogue == "bias_residual" else 0.0) + res
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= 1e-4, f"split {split} {epilogue}: max rel err {err:.2e}"
