"""Tests of hetpart.kernels: every CPU rule is correct and actually applies; GPU rules
compile for sm_90 (and, on a GPU machine, are correct); build() wraps failures and
uses tuning records.

Each case is a tiny Relax program (built with relax op builders), fused exactly as the
importer fuses ONNX models, then built twice: with hetpart's schedules and with TVM's
unscheduled default pipeline -- the two must agree.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

from host_isa import host_has
from onnx_cases import fused_program, run_vm

from hetpart import kernels
from hetpart.errors import CompileError
from hetpart.importer.fusion import fuse
from hetpart.targets import cpu_tvm_target, cuda_available, cuda_tvm_target

op = relax.op
RNG = np.random.default_rng(7)


def _const(*shape):
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def _fused(inputs, body):
    """Fused module of ``main(*inputs) = body(bb, *vars)`` and random (non-zero) inputs."""
    args = [(RNG.uniform(0.5, 1.5, s) * RNG.choice([-1, 1], s)).astype("float32") for _, s in inputs]
    return fused_program(inputs, body), args


def _matmul_gelu(bb, a):
    return bb.emit(op.nn.gelu(bb.emit(op.add(bb.emit(op.matmul(a, _const(96, 80))), _const(80)))))


def _conv(shape_w, **kw):
    def body(bb, x):
        return bb.emit(op.nn.conv2d(x, _const(*shape_w), **kw))

    return body


def _conv_bias_relu(bb, x):
    y = bb.emit(op.nn.conv2d(x, _const(32, 16, 3, 3), padding=1))
    return bb.emit(op.nn.relu(bb.emit(op.add(y, _const(1, 32, 1, 1)))))


# name -> (inputs, body, rule expected on the heavy kernel)
CASES = {
    "matmul_gelu": ([("a", (24, 96))], _matmul_gelu, "CpuMatmul"),
    "matmul_odd": ([("a", (37, 100))], lambda bb, a: bb.emit(op.matmul(a, _const(100, 72))), "CpuMatmul"),
    "matmul_gemv": ([("a", (1, 64))], lambda bb, a: bb.emit(op.matmul(a, _const(64, 48))), "CpuMatmul"),
    "batch_matmul": (
        [("a", (3, 20, 32)), ("b", (3, 32, 24))],
        lambda bb, a, b: bb.emit(op.matmul(a, b)),
        "CpuMatmul",
    ),
    "matmul_bt": (  # Q @ K^T: the vector operand needs packing
        [("a", (2, 16, 8)), ("b", (2, 24, 8))],
        lambda bb, a, b: bb.emit(op.matmul(a, bb.emit(op.permute_dims(b, [0, 2, 1])))),
        "CpuMatmul",
    ),
    "conv3x3_bias_relu": ([("x", (1, 16, 14, 14))], _conv_bias_relu, "CpuConv2d"),
    "conv3x3_s2": ([("x", (2, 8, 15, 15))], _conv((16, 8, 3, 3), strides=2, padding=1), "CpuConv2d"),
    # an unpadded 1x1 convolution *is* a matmul (all indices plain): the matmul rule
    # takes it, packing the weight so output channels are the vector dim
    "conv1x1": ([("x", (1, 32, 7, 7))], _conv((64, 32, 1, 1)), "CpuMatmul"),
    "conv_depthwise": ([("x", (1, 16, 14, 14))], _conv((16, 1, 3, 3), padding=1, groups=16), "CpuConv2d"),
    "conv_depthwise_s2": ([("x", (1, 32, 32, 32))], _conv((32, 1, 3, 3), strides=2, padding=1, groups=32),
                          "CpuConv2d"),
    "conv_grouped": ([("x", (1, 16, 16, 16))], _conv((32, 4, 3, 3), padding=1, groups=4), "CpuConv2d"),
    "max_pool": (
        [("x", (1, 8, 16, 16))],
        lambda bb, x: bb.emit(op.nn.max_pool2d(x, (3, 3), (2, 2), padding=(1, 1))),
        "CpuReduction",
    ),
    "avg_pool": (
        [("x", (1, 8, 16, 16))],
        lambda bb, x: bb.emit(op.nn.avg_pool2d(x, (2, 2), (2, 2))),
        "CpuReduction",
    ),
    "global_avg_pool": (
        [("x", (2, 32, 7, 7))],
        lambda bb, x: bb.emit(op.nn.adaptive_avg_pool2d(x, (1, 1))),
        "CpuReduction",
    ),
    "softmax": ([("x", (4, 16, 40))], lambda bb, x: bb.emit(op.nn.softmax(x)), "CpuReduction"),
    "layernorm": (
        [("x", (16, 48))],
        lambda bb, x: bb.emit(op.nn.layer_norm(x, _const(48), _const(48), axes=[-1])),
        "CpuReduction",
    ),
    "eltwise_chain": (
        [("x", (2, 8, 12, 12))],
        lambda bb, x: bb.emit(op.nn.relu(bb.emit(op.multiply(bb.emit(op.add(x, _const(1, 8, 1, 1))), x)))),
        "CpuInjective",
    ),
    "transpose": ([("x", (2, 16, 4, 8))], lambda bb, x: bb.emit(op.permute_dims(x, [0, 2, 1, 3])), "CpuInjective"),
    "gather": (
        [("x", (50, 24))],
        lambda bb, x: bb.emit(op.take(x, relax.const(np.array([3, 1, 49, 7, 0], "int64")), axis=0)),
        "CpuInjective",
    ),
}

# Rules whose output must be parallel *and* vectorised for the shapes above.
PARALLEL_AND_VECTOR = {"CpuMatmul", "CpuConv2d"}
# Tiled cases below register_tile.PARALLEL_MIN_MACS: vectorised, on one thread.
SMALL_TILED = {"matmul_gemv", "batch_matmul", "matmul_bt"}
# Depthwise convolutions: the conv2d rule's channel-row nest (rules/cpu_depthwise.py),
# in parallel from register_tile.PARALLEL_MIN_MACS (the 16x14x14 one has 28 Ki MACs).
CHANNEL_ROWS = {"conv_depthwise": False, "conv_depthwise_s2": True}


@pytest.fixture(scope="module")
def cpu():
    return cpu_tvm_target()




def _heavy(mod):
    """The (only or most interesting) PrimFunc of a case: the one not a lone transpose
    feeding another kernel."""
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    if len(funcs) > 1:
        funcs.pop("transpose", None)
    assert len(funcs) == 1, list(funcs)
    return next(iter(funcs.items()))


_BUILDS: dict = {}
"""Per test process: a case's fused module and inputs, and its builds, shared by the three
tests below that build the same case for the same target (the host's unscheduled build is
both rule tests' reference; a fixed CPU's scheduled build is what the build-only test
inspects and the matching test runs)."""


def _case(case: str):
    """``(mod, args)`` of ``CASES[case]``, made once."""
    if case not in _BUILDS:
        _BUILDS[case] = _fused(*CASES[case][:2])
    return _BUILDS[case]


def _build(case: str, target, scheduled: bool = True):
    """``kernels.build`` (hetpart's schedules) or, not ``scheduled``, ``tvm.compile`` (TVM's
    unscheduled default pipeline) of the case's module for ``target``, built once."""
    key = (case, str(target), scheduled)
    if key not in _BUILDS:
        mod, _ = _case(case)
        _BUILDS[key] = kernels.build(mod, target) if scheduled else tvm.compile(mod, target)
    return _BUILDS[key]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_rule_matches_unscheduled(case, cpu):
    _, args = _case(case)
    want = run_vm(_build(case, cpu, scheduled=False), args)
    got = run_vm(_build(case, cpu), args)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


# Fixed CPUs of both vector widths: what a rule picks must not depend on the machine
# the tests happen to run on (8-lane AVX2 and 16-lane AVX-512 hosts both serve users).
FIXED_CPUS = ("haswell", "skylake-avx512")


@pytest.fixture(scope="module", params=FIXED_CPUS)
def any_cpu(request):
    from hetpart.targets import host_triple

    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": request.param, "num-cores": 4})


# /proc/cpuinfo flags a host needs to run code built for each of FIXED_CPUS.
_RUN_NEEDS = {"haswell": ("avx2", "fma"), "skylake-avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_rule_builds_for_either_vector_width(case, any_cpu):
    """Build only (the host may lack AVX-512): a 10-class softmax row once crashed TVM's
    lowering on 16-lane CPUs ("VectorizeLoop before LiftStorageAlloc").  Building must
    run nothing built for ``any_cpu`` (the weight packing did: SIGILL on AVX2 hosts);
    no AVX-512 register in a build for an AVX2 CPU."""
    exe = _build(case, any_cpu)
    asm = "".join(m.inspect_source("asm") for m in exe.mod._collect_dso_modules() if m.kind == "llvm")
    if "avx512f" not in _RUN_NEEDS[str(any_cpu.attrs["mcpu"])]:
        assert "zmm" not in asm  # (AVX-512 CPUs may still prefer 256-bit vectors: LLVM's prefer-256-bit)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_rule_for_either_vector_width_matches_unscheduled(case, any_cpu):
    """Where the host runs ``any_cpu``'s code (its ISA in /proc/cpuinfo), that build
    agrees with TVM's unscheduled build for the host; elsewhere skipped, naming the ISA
    missing (running it would kill the process with SIGILL)."""
    missing = [f for f in _RUN_NEEDS[str(any_cpu.attrs["mcpu"])] if not host_has(f)]
    if missing:
        pytest.skip(f"the host CPU lacks {', '.join(missing)}: code built for {any_cpu.attrs['mcpu']} "
                    "would die of SIGILL here")
    _, args = _case(case)
    want = run_vm(_build(case, cpu_tvm_target(), scheduled=False), args)
    got = run_vm(_build(case, any_cpu), args)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_ten_class_softmax_builds_on_avx512():
    mod, _ = _fused([("a", (1, 10))], lambda bb, a: bb.emit(op.nn.softmax(a, axis=-1)))
    from hetpart.targets import host_triple

    kernels.build(mod, tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": "skylake-avx512",
                                          "num-cores": 4}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_rule_selected_and_applied(case, any_cpu):
    cpu = any_cpu
    inputs, body, rule = CASES[case]
    mod, _ = _fused(inputs, body)
    name, func = _heavy(mod)
    scheduled = kernels.schedule_primfunc(func, cpu)
    assert str(scheduled.attrs[kernels.RULE_ATTR]) == rule, f"{name} scheduled by the wrong rule"
    text = scheduled.script()
    if case in CHANNEL_ROWS:
        assert ("T.parallel(" in text) == CHANNEL_ROWS[case], text
        assert not tvm_ffi.structural_equal(scheduled.body, func.body)
    elif case in SMALL_TILED:
        assert "T.vectorized(" in text and "T.parallel(" not in text, text
    elif case == "max_pool":  # the separable window (kernels/separable_pool.py): its row loops LLVM vectorises
        assert "T.parallel(" in text and 'T.sblock("separable_pool")' in text, text
    elif rule in PARALLEL_AND_VECTOR or case in {"softmax", "layernorm"}:
        assert "T.parallel(" in text, text
        assert "T.vectorized(" in text, text
    elif rule == "CpuInjective":  # these shapes are too small to be worth threads
        assert "T.vectorized(" in text, text
    else:
        assert "T.parallel(" in text, text


def test_matmul_rule_register_tiles(cpu):
    """The matmul rule keeps a rows x vectors tile: unrolled rows, vectorised lanes."""
    mod, _ = _fused(*CASES["matmul_gelu"][:2])
    _, func = _heavy(mod)
    text = kernels.schedule_primfunc(func, cpu).script()
    assert "T.unroll(" in text and "T.vectorized(" in text
    # the epilogue (bias + gelu) is fused into the tile's write-back: one root loop nest
    assert len(re.findall(r"^    for ", text, flags=re.M)) == 1, text


def _vector_loop_vars(func):
    found = []

    def visit(s):
        if s.kind == tirx.ForKind.VECTORIZED:
            found.append(s.loop_var)

    tvm_ffi.structural_walk(func.body, (tirx.For, visit))
    return found


def _uses(expr, var) -> bool:
    hits = []
    tvm_ffi.structural_walk(expr, (tirx.Var, lambda v: hits.append(v) if v.same_as(var) else None))
    return bool(hits)


def test_gather_vector_stays_within_a_row(cpu):
    """A gather's row index is loaded from memory: a vector spanning two rows would
    load it per lane (a scalar gather, measured 2-4x slower than unscheduled).  The
    vectorised loop must not reach the row index; the big gather stays vectorised."""
    mod, args = _fused([("x", (300, 64))],
                       lambda bb, x: bb.emit(op.take(x, relax.const(RNG.integers(0, 300, 40)), axis=0)))
    _, func = _heavy(mod)
    scheduled = kernels.schedule_primfunc(func, cpu)
    vecs = _vector_loop_vars(scheduled)
    assert vecs, scheduled.script()
    blocks = []
    tvm_ffi.structural_walk(scheduled.body, (s_tir.SBlockRealize, blocks.append))
    (take,) = [b for b in blocks if b.block.name_hint == "T_take"]
    row_binding = take.iter_values[0]  # the output row, whose index is loaded
    assert not any(_uses(row_binding, v) for v in vecs), scheduled.script()
    want = run_vm(tvm.compile(mod, cpu), args)
    np.testing.assert_array_equal(run_vm(kernels.build(mod, cpu), args), want)


def test_padding_vector_stays_within_a_row(cpu):
    """A padded conv's padding block (bounds test per element, 18-wide rows): no
    lane group may cross a row, so no vectorised loop at all here (18 % 8 != 0)."""
    mod, _ = _fused([("x", (1, 16, 16, 16))], _conv((32, 16, 3, 3), padding=1))
    _, func = _heavy(mod)
    scheduled = kernels.schedule_primfunc(func, cpu)
    blocks = []
    tvm_ffi.structural_walk(scheduled.body, (s_tir.SBlockRealize, blocks.append))
    (pad,) = [b for b in blocks if b.block.name_hint == "pad_temp"]
    vecs = _vector_loop_vars(scheduled)
    assert not any(_uses(e, v) for e in pad.iter_values for v in vecs), scheduled.script()


@pytest.mark.parametrize("case", ["softmax", "layernorm"])
def test_row_reductions_use_vector_partials(case, cpu):
    """Each row reduction (max/sum of softmax, sum/variance of layer norm) becomes a
    vectorised partial-sum block (rfactor) inside the parallel row loop."""
    mod, _ = _fused(*CASES[case][:2])
    _, func = _heavy(mod)
    scheduled = kernels.schedule_primfunc(func, cpu)
    blocks = []
    tvm_ffi.structural_walk(scheduled.body, (s_tir.SBlockRealize, blocks.append))
    rf_updates = [b.block.name_hint for b in blocks if b.block.name_hint.endswith("_rf_update")]
    assert len(rf_updates) == 2, scheduled.script()
    vecs = _vector_loop_vars(scheduled)
    for b in blocks:
        if b.block.name_hint in rf_updates:
            assert any(_uses(e, v) for e in b.iter_values for v in vecs), b.block.name_hint


def test_small_kernels_stay_on_one_thread(cpu):
    """Below a few microseconds of work a thread-pool launch costs more than it saves
    (a 28 Ki-MAC depthwise conv ran 9x slower in parallel on the dev box)."""
    for inputs, body in [
        ([("a", (8, 32))], lambda bb, a: bb.emit(op.matmul(a, _const(32, 16)))),  # 4 Ki MACs
        ([("x", (4, 8, 8, 8))], lambda bb, x: bb.emit(op.nn.relu(x))),  # 2 Ki elements
    ]:
        mod, _ = _fused(inputs, body)
        _, func = _heavy(mod)
        text = kernels.schedule_primfunc(func, cpu).script()
        assert "T.parallel(" not in text and "T.vectorized(" in text, text


def test_injective_rule_goes_parallel_on_large_tensors(cpu):
    mod, _ = _fused([("x", (4, 64, 64, 32))], lambda bb, x: bb.emit(op.nn.relu(bb.emit(op.add(x, x)))))
    _, func = _heavy(mod)
    text = kernels.schedule_primfunc(func, cpu).script()
    assert "T.parallel(" in text and "T.vectorized(" in text


def test_fallback_parallelises_unknown_kernels(cpu):
    """A function no specific rule takes (two chained reductions with a transpose in
    between) is still scheduled, at least in parallel, and stays correct."""
    from hetpart.kernels.rules import CpuFallback

    mod, args = _fused([("x", (6, 10, 12))], lambda bb, x: bb.emit(op.sum(bb.emit(op.cumsum(x, axis=2)), axis=[1])))
    for _, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            sch = CpuFallback().apply(func, cpu)
            assert sch is not None
    want = run_vm(tvm.compile(mod, cpu), args)
    np.testing.assert_allclose(run_vm(kernels.build(mod, cpu), args), want, rtol=1e-4, atol=1e-4)


def test_schedule_keeps_relax_and_marks_scheduled(cpu):
    mod, _ = _fused(*CASES["softmax"][:2])
    out = kernels.schedule(mod, cpu)
    assert "main" in [gv.name_hint for gv in out.get_global_vars()]
    assert kernels.rules_applied(out) == {"softmax": "CpuReduction"}
    again = kernels.schedule(out, cpu)  # already scheduled: unchanged
    assert kernels.rules_applied(again) == {"softmax": "CpuReduction"}


def _llvm_asm(executable) -> str:
    return "\n".join(m.inspect_source("asm") for m in executable.mod._collect_dso_modules()  # noqa: SLF001
                     if m.kind == "llvm")  # every LLVM module (kernels.parallel_build may make several)


def _unfused_gelu_module():
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((24, 96), "float32"))
    with bb.function("main", [a]):
        with bb.dataflow():
            out = bb.emit_output(_matmul_gelu(bb, a))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.slow
def test_fused_gelu_does_not_call_libm_erf(cpu):
    """GELU's erf must not reach libm's scalar, data-dependent erff on a CPU (it cost
    BERT ~5 ms a layer and made kernels timed on random data look cheap, see
    hetpart.importer.fast_erf); TVM's own lowering of the same module still calls it,
    so the check can fail."""
    raw = _unfused_gelu_module()
    exact = tvm.compile(raw, cpu)
    assert "erff" in _llvm_asm(exact)
    ex = kernels.build(fuse(raw), cpu)
    assert "erff" not in _llvm_asm(ex)
    x = (RNG.uniform(0.5, 1.5, (24, 96)) * RNG.choice([-1, 1], (24, 96))).astype("float32")
    want = run_vm(exact, [x])
    np.testing.assert_allclose(run_vm(ex, [x]), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_fast_erf_matches_erf_on_a_dense_grid(cpu):
    """The imported erf (TVM's fast_erf) against math.erf: below 5e-7 everywhere,
    odd, and exactly saturated far out."""
    import math

    from hetpart.importer.fast_erf import fast_erf

    n = 1 << 16
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((n,), "float32"))
    with bb.function("main", [a]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op.erf(a)))
        bb.emit_func_output(out)
    mod = fast_erf(bb.get())
    assert "relax.erf" not in mod.script()
    x = np.concatenate([np.linspace(-6, 6, n - 4), [0.0, 4.0, -40.0, np.inf]]).astype("float32")
    got = run_vm(tvm.compile(mod, cpu), [x])
    want = np.array([math.erf(float(v)) for v in x])
    assert np.abs(got - want).max() < 5e-7
    np.testing.assert_array_equal(got[-4:], np.float32([0.0, 1.0, -1.0, 1.0]))


def test_build_wraps_failures_in_compile_error(cpu, monkeypatch):
    mod, _ = _fused(*CASES["softmax"][:2])

    def broken(*a, **k):
        raise RuntimeError("InternalError: codegen exploded")

    monkeypatch.setattr(tvm, "compile", broken)
    monkeypatch.setattr(kernels.parallel_build, "compile", broken)  # a CPU build's own path
    with pytest.raises(CompileError, match="codegen exploded"):
        kernels.build(mod, cpu)


# --- GPU ------------------------------------------------------------------------
GPU_CASES = ["matmul_gelu", "batch_matmul", "conv3x3_bias_relu", "conv3x3_s2", "conv1x1", "conv_depthwise",
             "conv_grouped", "softmax", "layernorm", "max_pool", "eltwise_chain"]
# Cases the implicit-GEMM conv rule must take (depthwise/grouped stay with dlight).
GPU_IMPLICIT_GEMM = {"conv3x3_bias_relu", "conv3x3_s2"}


@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_conv_rule_selection(case):
    inputs, body, _ = CASES[case]
    mod, _ = _fused(inputs, body)
    name, func = _heavy(mod)
    rule = str(kernels.schedule_primfunc(func, cuda_tvm_target("sm_90")).attrs[kernels.RULE_ATTR])
    assert (rule == "GpuConv2dImplicitGemm") == (case in GPU_IMPLICIT_GEMM), f"{name}: {rule}"
    if case in GPU_IMPLICIT_GEMM:  # tiled through shared memory, im2col never stored globally
        text = kernels.schedule_primfunc(func, cuda_tvm_target("sm_90")).script()
        assert 'scope="shared"' in text and "threadIdx" in text
        assert not re.search(r'reindex = T\.sblock_alloc_buffer\([^)]*\)\n', text), text


@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_rules_cross_compile_for_sm90(case):
    """Every kernel scheduled by the GPU rule list compiles to CUDA C for sm_90."""
    inputs, body, _ = CASES[case]
    mod, _ = _fused(inputs, body)
    target = cuda_tvm_target("sm_90")
    scheduled = kernels.schedule(mod, target)
    assert kernels.rules_applied(scheduled), "no GPU rule applied"
    ex = kernels.build(mod, target, cuda_graph=False)
    assert ex is not None


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_rules_correct_on_gpu(case):
    inputs, body, _ = CASES[case]
    mod, args = _fused(inputs, body)
    want = run_vm(tvm.compile(mod, cpu_tvm_target()), args)
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(kernels.build(mod, cuda_tvm_target()), dev)
    got = vm["main"](*[tvm.runtime.tensor(a, dev) for a in args]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))


# --- tuning -----------------------------------------------------------------------
def test_tune_without_deps_says_what_to_install(monkeypatch, tmp_path):
    from hetpart.kernels import tuning

    monkeypatch.setattr(tuning, "missing_tune_deps", lambda: ["xgboost"])
    mod, _ = _fused(*CASES["matmul_odd"][:2])
    with pytest.raises(tuning.TuningDependencyError, match=r"hetpart\[tune\]"):
        tuning.tune(mod, cpu_tvm_target(), 2, str(tmp_path), progress=False)


def test_build_without_records_ignores_tuning_db(tmp_path, cpu):
    mod, args = _fused(*CASES["matmul_odd"][:2])
    got = run_vm(kernels.build(mod, cpu, tuning_db=str(tmp_path)), args)
    np.testing.assert_allclose(got, run_vm(tvm.compile(mod, cpu), args), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_build_uses_tuned_record(tmp_path, cpu):
    from hetpart.kernels import tuning

    if tuning.missing_tune_deps():
        pytest.skip(f"tuning deps missing: {tuning.missing_tune_deps()}")
    mod, args = _fused([("a", (16, 16))], lambda bb, a: bb.emit(op.matmul(a, _const(16, 16))))
    n = tuning.tune(mod, cpu, 4, str(tmp_path), progress=False)
    assert n > 0
    applied = tuning.apply_database(mod, cpu, str(tmp_path))
    assert kernels.rules_applied(applied) == {"matmul": "tuned"}
    got = run_vm(kernels.build(mod, cpu, tuning_db=str(tmp_path)), args)
    np.testing.assert_allclose(got, run_vm(tvm.compile(mod, cpu), args), rtol=1e-4, atol=1e-4)


# --- hetpart.bench.kernels (argument parsing and table; the GPU run is the lead's) --------
def _bench_module():
    from hetpart.bench import kernels as bench_kernels

    return bench_kernels


def test_bench_parses_args_and_formats_table():
    bench = _bench_module()
    args = bench.parse_args(["--models", "tiny", "--batches", "1,2", "--targets", "cpu", "--no-torch", "--quick"])
    assert args.models == "tiny" and args.targets == "cpu" and args.no_torch
    with pytest.raises(SystemExit):
        bench.parse_args(["--targets", "tpu"])
    text = bench.table([{"model": "tiny", "batch": 1, "tvm_cpu": 1.5, "torch_cpu": 1.0, "ratio_cpu": 1.5}])
    assert text.splitlines()[0] == "| model | batch | TVM CPU ms | torch CPU ms | CPU TVM/torch |"
    assert "| tiny | 1 | 1.5 | 1 | 1.5 |" in text


@pytest.mark.slow
def test_bench_conv_ops_mode_builds_resnet_convs_for_sm90():
    """--ops conv parses, and its modules are convs our GPU rules take (windowed ones:
    implicit GEMM, split-K where the grid is starved, TF32 tensor cores where a tile
    fills it) or dlight's Matmul (unpadded stride-1 1x1); without a GPU it returns no rows."""
    bench = _bench_module()
    assert bench.parse_args(["--ops", "conv", "--batches", "1"]).ops == "conv"
    with pytest.raises(SystemExit):
        bench.parse_args(["--ops", "pool"])
    target = cuda_tvm_target("sm_90")
    for spec in [(64, 56, 64, 3, 1), (64, 56, 256, 1, 1), (256, 56, 512, 1, 2)]:
        mod, _, _ = bench.conv_module(1, *spec)
        (rule,) = kernels.rules_applied(kernels.schedule(mod, target)).values()
        want = {"Matmul"} if spec[3] == 1 and spec[4] == 1 else {"GpuConv2dImplicitGemm", "GpuSplitKGemm"}
        want.add("GpuTensorCoreGemm")  # where a tile's grid fills the GPU (hetpart.kernels.tf32)
        want.add("GpuTensorCoreConvSplitK")  # batch 1 where none does: K split on the tensor cores
        assert rule in want, (spec, rule)
    if not cuda_available():
        assert bench.run_conv_ops(bench.parse_args(["--ops", "conv", "--batches", "1"])) == []


def test_bench_runs_tiny_model_on_cpu(tmp_path):
    bench = _bench_module()
    assert bench.main(["--models", "tiny", "--batches", "1", "--targets", "cpu", "--no-torch", "--quick",
                       "--baseline", "", "--out", str(tmp_path)]) == 0
    import json

    rows = json.loads((tmp_path / "kernels_bench.json").read_text())["rows"]
    assert rows[0]["model"] == "tiny" and rows[0]["tvm_cpu"] > 0
