"""The VNNI int8 matmul rule (:mod:`hetpart.kernels.rules.cpu_int8_matmul`): which
functions it takes, and exact results against numpy's int64 product.

Built for fixed CPUs (the host may lack VNNI): Cascade Lake has AVX-512 VNNI, Skylake
AVX-512 without it (the generic matmul rule then takes the function); their code is
inspected (``vpdpbusd`` in Cascade Lake's), never run.  Run on the host where it has
VNNI; on a host without it (read from /proc/cpuinfo, not from LLVM) hetpart's host
target must not take the VNNI rule -- its code would die of SIGILL for the user -- and
the generic rule's build is exact there.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from host_isa import host_has, is_x86
from int8_cases import RNG, check_exact_on_host, int8_matmul, scheduled_rule, target_4_cores, x86_asm

from hetpart import kernels
from hetpart.kernels.rules.cpu_int8_matmul import has_vnni
from hetpart.targets import cpu_tvm_target

SHAPES = [((64, 256), 128), ((5, 64), 48), ((2, 7, 32), 32), ((1, 768), 256)]


@pytest.mark.parametrize("a_shape,n", SHAPES)
def test_vnni_rule_takes_uint8_by_int8_matmuls_and_builds(a_shape, n):
    mod, _ = int8_matmul(a_shape, n)
    assert scheduled_rule(mod, target_4_cores("cascadelake")) == "CpuInt8Matmul"
    assert "vpdpbusd" in x86_asm(kernels.build(mod, target_4_cores("cascadelake")))
    assert scheduled_rule(mod, target_4_cores("skylake-avx512")) == "CpuMatmul"  # no VNNI
    assert "vpdpbusd" not in x86_asm(kernels.build(mod, target_4_cores("skylake-avx512")))


@pytest.mark.parametrize("a_shape,n,atype", [((8, 30), 32, "uint8"), ((8, 32), 40, "uint8"), ((8, 32), 32, "int8")])
def test_vnni_rule_declines_other_shapes_and_types(a_shape, n, atype):
    """k not a multiple of 4, n not of 16, a signed activation: the generic rule."""
    mod, _ = int8_matmul(a_shape, n, atype=atype)
    assert scheduled_rule(mod, target_4_cores("cascadelake")) == "CpuMatmul"


@pytest.mark.skipif(not has_vnni(cpu_tvm_target()), reason="the host has no AVX-512 VNNI (or LLVM < 21)")
@pytest.mark.parametrize("a_shape,n", SHAPES)
def test_vnni_matmul_is_exact_on_the_host(a_shape, n):
    check_exact_on_host(a_shape, n, RNG)


@pytest.mark.skipif(not is_x86(), reason="VNNI is an x86 extension: the host is not x86")
@pytest.mark.parametrize("a_shape,n", SHAPES[:2])
def test_host_target_takes_the_vnni_rule_only_where_the_host_has_vnni(a_shape, n):
    """hetpart's host target (``cpu_tvm_target``) takes the VNNI rule and emits
    ``vpdpbusd`` exactly where /proc/cpuinfo lists ``avx512_vnni`` (and LLVM is new enough
    for the rule, :func:`has_vnni`) -- AMX's ``tdpbusd`` instead for whole 32-blocks where the
    host has AMX-INT8 (:func:`~hetpart.kernels.rules.cpu_int8_matmul.amx_ready`); elsewhere the generic rule, no VNNI and no AVX-512
    instruction where the host lacks them, and the result numpy's int64 product."""
    from tvm.target import codegen

    target = cpu_tvm_target()
    vnni = host_has("avx512_vnni") and codegen.llvm_version_major() >= 21
    assert has_vnni(target) is vnni
    mod, w = int8_matmul(a_shape, n)
    assert scheduled_rule(mod, target) == ("CpuInt8Matmul" if vnni else "CpuMatmul")
    exe = kernels.build(mod, target)
    asm = x86_asm(exe)
    from hetpart.kernels.rules.cpu_int8_matmul import _amx_shape_fits, amx_ready

    amx = vnni and amx_ready(target) and _amx_shape_fits(a_shape, n)
    assert ("vpdpbusd" in asm) is (vnni and not amx)
    assert ("tdpbusd" in asm.replace("vpdpbusd", "")) is amx
    if not host_has("avx512f"):
        assert "zmm" not in asm
    a = RNG.integers(0, 256, a_shape).astype("uint8")
    a.flat[:4] = 255  # the largest products: 255 * -128
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(a)).numpy()
    np.testing.assert_array_equal(got, (a.astype(np.int64) @ w.astype(np.int64)).astype(np.float32) * np.float32(0.5))


