"""``hetpart.kernels.fast_exp``: the vectorisable float32 exp against float64 ``exp``.

Tolerance (the module's contract): relative error at most 4 float32 ulps
(``4 * 2**-23``) wherever ``exp(x)`` is a normal float32; within 2 subnormal steps
(``2 * 2**-149``) where it is subnormal; exactly 0, +inf and NaN for -inf, +inf and
NaN, +inf beyond ``ln(FLT_MAX)``.  The kernel is built vectorised (16 lanes), as the
CPU reduction rule builds it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx

from hetpart.kernels import fast_exp as fast_exp_module
from hetpart.kernels.fast_exp import fast_exp, fast_sigmoid, fast_tanh, has_exp, replace_exp
from hetpart.targets import cpu_tvm_target

ULP_REL = 4 * 2.0 ** -23
SUBNORMAL_ABS = 2 * 2.0 ** -149


def _exp_kernel(n: int, fast: bool):
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: tirx.exp(a[i]), name="b")
    func = te.create_prim_func([a, b])
    if fast:
        func = replace_exp(func)
    sch = s_tir.Schedule(func)
    (i,) = sch.get_loops(sch.get_sblock("b"))
    sch.vectorize(sch.split(i, [None, 16])[1])
    lib = tvm.compile(sch.mod, cpu_tvm_target())

    def run(x):
        out = tvm.runtime.empty((n,), "float32")
        lib(tvm.runtime.tensor(x), out)
        return out.numpy()

    return run


SPECIAL = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 1.0, -1.0, 80.0, -80.0, 1e4, -1e4, 88.72, 88.7229,
                    -87.33, -87.34, -103.9, -104.5, -150.0, 1e-30, -1e-30], np.float32)


@pytest.fixture(scope="module")
def fast():
    return _exp_kernel(1 << 16, fast=True)


def _inputs(n: int = 1 << 16) -> np.ndarray:
    grid = np.linspace(-110.0, 90.0, n - SPECIAL.size, dtype=np.float32)
    return np.concatenate([SPECIAL, grid]).astype(np.float32)


def test_fast_exp_within_4_ulps_of_exp(fast):
    x = _inputs()
    got = fast(x)
    with np.errstate(all="ignore"):
        want = np.exp(x.astype(np.float64))
    f32 = np.finfo(np.float32)
    normal = np.isfinite(x) & (want >= f32.tiny) & (want <= float(f32.max))
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    assert rel.max() <= ULP_REL, f"max relative error {rel.max():.3g} at x={x[normal][rel.argmax()]}"
    sub = np.isfinite(x) & (want < f32.tiny)
    assert np.abs(got[sub] - want[sub]).max() <= SUBNORMAL_ABS
    over = np.isfinite(x) & (want > float(f32.max))
    assert np.all(np.isposinf(got[over]))


def test_fast_exp_special_values(fast):
    x = _inputs()
    got = fast(x)
    assert got[0] == 0.0 and np.isposinf(got[1]) and np.isnan(got[2])
    assert got[3] == 1.0 and got[4] == 1.0
    assert not np.isnan(got[3:]).any(), "NaN only for a NaN input"


def test_fast_exp_matches_the_kernel_it_replaces(fast):
    """Against TVM's own (libm) exp built the same way: within the same tolerance."""
    x = _inputs()
    want = _exp_kernel(x.size, fast=False)(x)
    got = fast(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want))
    ok = np.isfinite(want) & (want >= np.finfo(np.float32).tiny)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2 * ULP_REL, atol=0)


def test_replace_exp_rewrites_every_float32_exp_and_only_those():
    a = te.placeholder((8,), "float32", name="a")
    b = te.compute((8,), lambda i: tirx.exp(a[i]) + tirx.exp(a[i] * 2.0), name="b")
    func = te.create_prim_func([a, b])
    assert has_exp(func)
    assert not has_exp(replace_exp(func))
    c = te.compute((8,), lambda i: a[i] + 1.0, name="c")
    plain = te.create_prim_func([a, c])
    assert replace_exp(plain).same_as(plain)
    d = te.placeholder((8,), "float64", name="d")
    e = te.compute((8,), lambda i: tirx.exp(d[i]), name="e")
    wide = te.create_prim_func([d, e])
    assert replace_exp(wide).same_as(wide), "float64 exp is left to libm"


def _run_replaced(op, x: np.ndarray) -> np.ndarray:
    """``op`` element-wise over float32 ``x`` after :func:`replace_exp` (which must remove
    every exp call), vectorised by 16 and compiled for this CPU."""
    a = te.placeholder((x.size,), "float32", name="a")
    b = te.compute((x.size,), lambda i: op(a[i]), name="b")
    func = te.create_prim_func([a, b])
    assert has_exp(func)
    fast = replace_exp(func)
    assert not has_exp(fast)
    sch = s_tir.Schedule(fast)
    (i,) = sch.get_loops(sch.get_sblock("b"))
    sch.vectorize(sch.split(i, [None, 16])[1])
    lib = tvm.compile(sch.mod, cpu_tvm_target())
    out = tvm.runtime.empty((x.size,), "float32")
    lib(tvm.runtime.tensor(x), out)
    return out.numpy()


@pytest.mark.parametrize("short", [True, False], ids=["short", "full"])
def test_replace_exp_rewrites_float32_sigmoid_within_6_ulps(short, monkeypatch):
    """``T.sigmoid`` (LLVM: ``1 / (1 + expf(-x))``, a libm call) becomes
    ``1 / (1 + fast_exp(-x))`` (or, :data:`~hetpart.kernels.fast_exp.SHORT_SIGMOID`, the form
    from ``exp(-|x|)``): within 6 ulps of the float64 sigmoid where that is a normal float32;
    0, 1 and NaN for -inf, +inf and NaN."""
    import hetpart.kernels.fast_exp as fe

    monkeypatch.setattr(fe, "SHORT_SIGMOID", short)
    n = 1 << 12
    x = np.concatenate([SPECIAL, np.linspace(-90.0, 90.0, n - SPECIAL.size, dtype=np.float32)]).astype(np.float32)
    got = _run_replaced(tirx.sigmoid, x)
    with np.errstate(all="ignore"):
        want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert got[0] == 0.0 and got[1] == 1.0 and np.isnan(got[2]) and not np.isnan(got[3:]).any()
    normal = np.isfinite(x) & (want >= np.finfo(np.float32).tiny) & (x > -88.0)
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    assert rel.max() <= 6 * 2.0 ** -23, f"max relative error {rel.max():.3g} at x={x[normal][rel.argmax()]}"


def test_fast_tanh_within_16_ulps():
    """``T.tanh`` (LLVM: two libm ``expf`` calls) becomes :func:`fast_tanh`: within 16
    ulps of the float64 tanh (exact where TOPI's small-x polynomial applies); +-1 for
    +-inf, NaN for NaN, -0 for -0."""
    grid = np.concatenate([np.linspace(-12.0, 12.0, 3072), np.geomspace(1e-8, 0.5, 1024 - SPECIAL.size)])
    x = np.concatenate([SPECIAL, grid.astype(np.float32) * np.where(np.arange(grid.size) % 2, 1, -1)]).astype(np.float32)
    got = _run_replaced(tirx.tanh, x)
    want = np.tanh(x.astype(np.float64))
    assert got[0] == -1.0 and got[1] == 1.0 and np.isnan(got[2]) and not np.isnan(got[3:]).any()
    assert np.signbit(got[4]) and got[4] == 0.0, "tanh(-0) = -0"
    ok = np.isfinite(x) & (x != 0)
    rel = np.abs(got[ok] - want[ok]) / np.abs(want[ok])
    assert rel.max() <= 16 * 2.0 ** -23, f"max relative error {rel.max():.3g} at x={x[ok][rel.argmax()]}"


def _loads(expr) -> int:
    found = []
    tvm_ffi.structural_walk(expr, (tvm.ir.TensorLoad, found.append))
    return len(found)


@pytest.mark.parametrize("fn", [fast_exp, fast_sigmoid, fast_tanh], ids=["exp", "sigmoid", "tanh"])
def test_fast_functions_read_their_argument_once(fn):
    """The argument is bound once (a ``Let``), not copied into each of its ~30 uses: in a
    conv tile's write-back the argument ``acc[w, oc] + bias[oc]`` is a gather, and a
    1x1 conv + SiLU ran 4-12x slower than without the SiLU with the copies."""
    a = tvm.tirx.decl_buffer((8,), "float32", name="a")
    expr = fn(tvm.tirx.BufferLoad(a, [tvm.tirx.IntImm("int32", 3)]) + tvm.tirx.const(1.0, "float32"))
    assert _loads(expr) == 1, expr


def test_replace_exp_of_a_shared_call_is_well_formed():
    """One ``T.exp`` object used twice in a block becomes two ``Let`` bindings, each
    with its own variable: one ``Let`` object at two places would define its variable
    twice, which TVM refuses (as it did for ``fast_tanh``'s ``exp``, used twice before
    it was bound once)."""
    a = te.placeholder((8,), "float32", name="a")
    b = te.compute((8,), lambda i: (lambda e: e * e + e)(tirx.exp(a[i] * 2.0)), name="b")
    fast = replace_exp(te.create_prim_func([a, b]))
    s_tir.Schedule(fast)  # checks the function is well-formed: raises on a variable defined twice
    x = np.linspace(-3, 3, 8, dtype=np.float32)
    lib = tvm.compile(tvm.IRModule({"main": fast}), cpu_tvm_target())
    out = tvm.runtime.empty((8,), "float32")
    lib(tvm.runtime.tensor(x), out)
    e = np.exp(x.astype(np.float64) * 2)
    np.testing.assert_allclose(out.numpy(), e * e + e, rtol=2e-6)


def test_fast_tanh_of_a_bfloat16_read_matches_tanh():
    """A bf16 weight or activation read, cast to float32, under tanh (BERT's pooler in a
    bf16 build): bound by a Let, the built kernel returned 1.0 for every element (CI's
    bf16 precision tests against ONNX Runtime, 2026-12-03)."""
    n = 256
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-3, 3, n - 4), [0.0, -0.0, 0.03, -5.0]]).astype(np.float32)
    a = te.placeholder((n,), "bfloat16", name="a")
    b = te.compute((n,), lambda i: tirx.tanh(a[i].astype("float32") * tirx.const(0.5, "float32")), name="b")
    fast = replace_exp(te.create_prim_func([a, b]))
    assert not has_exp(fast)
    sch = s_tir.Schedule(fast)
    (i,) = sch.get_loops(sch.get_sblock("b"))
    sch.vectorize(sch.split(i, [None, 16])[1])
    lib = tvm.compile(sch.mod, cpu_tvm_target())
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # float32 -> bfloat16 by truncation
    rounded = (bits.astype(np.uint32) << 16).view(np.float32)
    src = tvm.runtime.empty((n,), "bfloat16")
    src.copyfrom(bits)
    out = tvm.runtime.empty((n,), "float32")
    lib(src, out)
    np.testing.assert_allclose(out.numpy(), np.tanh(rounded * 0.5), rtol=1e-5, atol=1e-6)


def _const_in(func, value: float) -> bool:
    found = []
    tvm_ffi.structural_walk(func.body, (tirx.FloatImm, lambda c: found.append(c)
                                        if float(c.value) == float(np.float32(value)) else None))
    return bool(found)


def test_nonpositive_exp_is_bitwise_fast_exp_where_it_applies(fast, monkeypatch):
    """``fast_exp(x, nonpositive=True)`` without :data:`SHORT_NONPOSITIVE` (softmax's
    ``exp(x - max(row))``) leaves out the upper clamp and the overflow select: for
    ``x <= 0`` and NaN the very same bits."""
    monkeypatch.setattr(fast_exp_module, "SHORT_NONPOSITIVE", False)
    n = 1 << 16
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: tirx.exp(a[i]), name="b")
    func = replace_exp(te.create_prim_func([a, b]), nonpositive=lambda arg: True)
    assert not _const_in(func, 88.72283935546875), func.script()
    sch = s_tir.Schedule(func)
    (i,) = sch.get_loops(sch.get_sblock("b"))
    sch.vectorize(sch.split(i, [None, 16])[1])
    lib = tvm.compile(sch.mod, cpu_tvm_target())
    special = SPECIAL[(SPECIAL <= 0) | np.isnan(SPECIAL)]
    x = np.concatenate([special, np.linspace(-110.0, 0.0, n - special.size, dtype=np.float32)]).astype(np.float32)
    out = tvm.runtime.empty((n,), "float32")
    lib(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy().view(np.uint32), fast(x).view(np.uint32))


def _short_exp(x: np.ndarray, lanes: int = 8) -> np.ndarray:
    """``fast_exp(x, nonpositive=True)`` (``_below_max_exp``) of ``x``, built vectorised."""
    n = x.size
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: tirx.exp(a[i]), name="b")
    func = replace_exp(te.create_prim_func([a, b]), nonpositive=lambda arg: True)
    assert _const_in(func, 12583039.0) and not _const_in(func, 88.72283935546875), func.script()
    sch = s_tir.Schedule(func)
    (i,) = sch.get_loops(sch.get_sblock("b"))
    sch.vectorize(sch.split(i, [None, lanes])[1])
    lib = tvm.compile(sch.mod, cpu_tvm_target())
    out = tvm.runtime.empty((n,), "float32")
    lib(tvm.runtime.tensor(x), out)
    return out.numpy()


def test_below_max_exp_within_one_ulp_where_normal():
    """The short exp of softmax's ``x - max(row) <= 0``: relative error at most ``2**-23``
    where ``exp(x) >= 2**-126`` (over every float32 in [-88, 0] the largest is 7.71e-8, at
    -26.737: bench/results/cpu-softmax-exp-2core.md); below, a result in ``[0, 2**-126)``;
    exactly 1 at +-0, 0 at -inf and below -88, NaN for NaN.  Inputs: random bit patterns of
    the whole range, a grid, the worst point, the special values."""
    rng = np.random.default_rng(0)
    lo, hi = np.array([-0.0, -88.0], np.float32).view(np.uint32)
    bits = rng.integers(int(lo), int(hi) + 1, 1 << 18, dtype=np.uint64).astype(np.uint32)
    special = np.array([-np.inf, np.nan, -0.0, 0.0, -1e30, -1e4, -104.0, -88.0, -87.68, -87.5, -87.34, -87.33,
                        -26.737, -1e-30, -1e-45, -0.34657359, -0.34657362, -1.0, -2.0], np.float32)
    grid = np.linspace(-90.0, 0.0, 1 << 16, dtype=np.float32)
    x = np.concatenate([special, grid, bits.view(np.float32)])
    got = _short_exp(x)
    with np.errstate(all="ignore"):
        want = np.exp(x.astype(np.float64))
    tiny = float(np.finfo(np.float32).tiny)
    normal = np.isfinite(x) & (want >= tiny)
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    assert rel.max() <= 2.0 ** -23, f"max relative error {rel.max():.3g} at x={x[normal][rel.argmax()]}"
    small = ~np.isnan(x) & (want < tiny)
    assert ((got[small] >= 0) & (got[small] < tiny)).all(), x[small][~((got[small] >= 0) & (got[small] < tiny))]
    assert got[0] == 0.0 and np.isnan(got[1]) and got[2] == 1.0 and got[3] == 1.0
    assert got[4] == 0.0 and got[5] == 0.0 and got[6] == 0.0 and got[7] == 0.0
    assert not np.isnan(got[2:]).any(), "NaN only for a NaN input"


def _pow_kernel(n: int, exponent: float):
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: tirx.pow(a[i], tirx.const(exponent, "float32")), name="b")
    func = replace_exp(te.create_prim_func([a, b]))
    sch = s_tir.Schedule(func)
    (i,) = sch.get_loops(sch.get_sblock("b"))
    sch.vectorize(sch.split(i, [None, 8])[1])
    return func, tvm.compile(sch.mod, cpu_tvm_target())


def _pow_calls(func) -> int:
    op, found = tvm.ir.Op.get("tirx.pow"), []
    tvm_ffi.structural_walk(func.body, (tvm.ir.Call, lambda c: found.append(c) if c.op.same_as(op) else None))
    return len(found)


@pytest.mark.parametrize("exponent", [3.0, 4.0])
def test_small_integer_power_is_products(exponent):
    """``T.pow(x, 3.0)`` (GPT-2's ``gelu_new``) and ``T.pow(x, 4.0)`` become products of ``x``
    (before: a libm ``powf`` call per element, 14.5 -> 9.4 ms for GPT-2's 128 x 768 x 3072
    MLP input with its gelu_new, one thread): within 2 roundings (``3 * 2**-24`` relative) of
    the exact power, where it is a normal float32; the same signs, zeros, infinities and NaN
    as numpy's; past FLT_MAX +-inf.  Inputs: negatives, zeros, -0, large and tiny magnitudes."""
    n = 1 << 16
    func, lib = _pow_kernel(n, exponent)
    assert _pow_calls(func) == 0, func.script()
    special = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 3e12, -3e12, 1e-20, -1e-20, 6e12, -7e9,
                        2.5, -2.5, 1e-13], np.float32)
    grid = np.linspace(-100.0, 100.0, n - special.size, dtype=np.float32)
    x = np.concatenate([special, grid]).astype(np.float32)
    out = tvm.runtime.empty((n,), "float32")
    lib(tvm.runtime.tensor(x), out)
    got = out.numpy()
    with np.errstate(all="ignore"):
        want = np.power(x.astype(np.float64), exponent)
        want32 = np.power(x, np.float32(exponent))
    f32 = np.finfo(np.float32)
    normal = np.isfinite(want) & (np.abs(want) >= f32.tiny) & (np.abs(want) <= float(f32.max))
    rel = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    assert rel.max() <= 3 * 2.0 ** -24, f"max relative error {rel.max():.3g} at x={x[normal][rel.argmax()]}"
    other = ~normal
    np.testing.assert_array_equal(np.isnan(got[other]), np.isnan(want32[other]))
    finite = other & ~np.isnan(want32)
    np.testing.assert_array_equal(np.signbit(got[finite]), np.signbit(want32[finite]))
    np.testing.assert_array_equal(np.isinf(got[finite]), np.isinf(want32[finite]))
    assert np.abs(got[finite & ~np.isinf(want32)]).max() < 2 * f32.tiny


@pytest.mark.parametrize("exponent", [2.0, 2.5, 0.5, 5.0])
def test_other_powers_are_left_to_llvm(exponent):
    """``pow(x, 2.0)`` LLVM makes ``x * x`` itself; other exponents keep the call."""
    func, _ = _pow_kernel(64, exponent)
    assert _pow_calls(func) == 1, func.script()
