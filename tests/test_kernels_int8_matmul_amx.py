"""The VNNI int8 matmul rule's AMX-INT8 schedule (:func:`hetpart.kernels.rules.cpu_int8_matmul._schedule_amx`,
switch :data:`~hetpart.kernels.rules.cpu_int8_matmul.AMX_INT8`).

* structure, on a fixed Sapphire Rapids target (built, not run; the tile permission
  taken as granted): ``tdpbusd`` and no ``vpdpbusd`` where the rows and columns are whole
  32-blocks and ``k`` a multiple of 64, ``vpdpbusd`` where not or with the switch off;
* values on the host where it has AMX (cpuinfo, LLVM and the kernel's permission):
  numpy's int64 product exactly, the largest products (255 x -128) included, a batch
  dimension included.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from hetpart import kernels
from hetpart.kernels.rules import cpu_int8_matmul as rule
from hetpart.targets import cpu_tvm_target, host_triple
from int8_cases import int8_matmul, scheduled_rule, x86_asm

RNG = np.random.default_rng(94)
SPR = {"kind": "llvm", "mtriple": host_triple(), "mcpu": "sapphirerapids", "num-cores": 4}


@pytest.fixture
def granted(monkeypatch):
    """The tile permission as granted (build-only tests on any host)."""
    monkeypatch.setattr(rule, "_tile_permission", lambda: True)  # the name the rule calls


@pytest.mark.parametrize("a_shape,n,amx", [((64, 256), 128, True), ((1, 32, 128), 64, True), ((48, 128), 64, True),
                                           ((77, 128), 64, True), ((16, 128), 64, False), ((64, 96), 64, False),
                                           ((64, 128), 48, False), ((1, 768), 256, False)])
def test_amx_where_whole_blocks(granted, a_shape, n, amx):
    """AMX for 32-column blocks with k % 64 == 0 and at least 32 rows (padded up to whole
    32-row blocks: 48, 77); VNNI otherwise (16 rows, k 96, 48 columns, one row)."""
    mod, _ = int8_matmul(a_shape, n)
    target = tvm.target.Target(SPR)
    assert scheduled_rule(mod, target) == "CpuInt8Matmul"
    asm = x86_asm(kernels.build(mod, target))
    assert ("tdpbusd" in asm.replace("vpdpbusd", "")) is amx
    assert ("vpdpbusd" in asm) is not amx


def test_switch_off_is_vnni(granted, monkeypatch):
    monkeypatch.setattr(rule, "AMX_INT8", False)
    mod, _ = int8_matmul((64, 256), 128)
    asm = x86_asm(kernels.build(mod, tvm.target.Target(SPR)))
    assert "vpdpbusd" in asm and "tdpbusd" not in asm.replace("vpdpbusd", "")


def test_row_padding_switch_off_is_vnni(granted, monkeypatch):
    monkeypatch.setattr(rule, "AMX_PAD_ROWS", False)
    mod, _ = int8_matmul((77, 128), 64)
    asm = x86_asm(kernels.build(mod, tvm.target.Target(SPR)))
    assert "vpdpbusd" in asm and "tdpbusd" not in asm.replace("vpdpbusd", "")


def test_no_amx_without_the_feature(granted):
    """Ice Lake: VNNI, no AMX."""
    assert not rule.amx_ready(tvm.target.Target({**SPR, "mcpu": "icelake-server"}))


@pytest.mark.skipif(not rule.amx_ready(cpu_tvm_target()), reason="the host has no AMX-INT8 (or no tile permission)")
@pytest.mark.parametrize("a_shape,n", [((64, 256), 128), ((1, 32, 128), 96), ((3, 64, 192), 64), ((128, 768), 64),
                                       ((77, 256), 64), ((1, 197, 128), 96), ((2, 40, 64), 32)])
def test_amx_matmul_is_exact_on_the_host(a_shape, n):
    mod, w = int8_matmul(a_shape, n)
    target = cpu_tvm_target()
    exe = kernels.build(mod, target)
    assert "tdpbusd" in x86_asm(exe).replace("vpdpbusd", "")
    a = RNG.integers(0, 256, a_shape).astype("uint8")
    a.flat[:64] = 255  # the largest products: 255 * -128
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(a)).numpy()
    np.testing.assert_array_equal(got, (a.astype(np.int64) @ w.astype(np.int64)).astype(np.float32) * np.float32(0.5))


def test_another_cpu_arch_drops_the_hosts_amx_features(monkeypatch):
    """``compile(cpu_arch=...)`` builds for another CPU: the host's AMX ``mattr`` must not follow."""
    from hetpart import targets
    from hetpart.compiler.build import with_cpu_arch

    monkeypatch.setattr(targets, "host_amx_mattr", lambda: ("+amx-tile", "+amx-int8"))
    host = tvm.target.Target({**SPR, "mcpu": "rocketlake", "mattr": ["+amx-tile", "+amx-int8"]})
    other = with_cpu_arch(host, "icelake-server")
    assert str(other.attrs["mcpu"]) == "icelake-server" and not list(other.attrs.get("mattr", []))
    assert not rule.amx_ready(other)
