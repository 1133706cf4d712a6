"""The VNNI int8 matmul rule's register tile (:data:`~hetpart.kernels.rules.cpu_int8_matmul.ROWS`
x :data:`~hetpart.kernels.rules.cpu_int8_matmul.VECS`): 8 rows x 3 vectors where they divide
the extents, smaller where not, and exact results for each choice (against numpy's int64
product)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from hetpart import kernels
from hetpart.kernels.rules.cpu_int8_matmul import has_vnni
from hetpart.targets import cpu_tvm_target
from int8_cases import check_exact_on_host, int8_matmul, scheduled_rule, target_4_cores

RNG = np.random.default_rng(31)


def _tile(mod, target) -> tuple[int, int]:
    """(rows, vecs) of the scheduled kernel's register tile (its unrolled loops, unit ones too)."""
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    text = kernels.schedule_primfunc(func, target).script()
    update = text[text.index('T.sblock("matmul_init")'):text.index('T.sblock("matmul_update_o")')]  # its loops
    unrolled = [int(u) for u in re.findall(r"T\.unroll\(T\.int64\((\d+)\)\)", update)]
    return tuple(unrolled)


# (A shape, n) -> (rows, vecs): 8 x 3 where 8 divides the rows and 3 the 16-lane vectors;
# 4 rows, 2 vectors, 1 otherwise.
TILES = [(((128, 768), 768), (8, 3)), (((24, 96), 96), (8, 3)), (((12, 64), 80), (4, 1)),
         (((16, 64), 32), (8, 2)), (((5, 64), 48), (1, 3))]


@pytest.mark.parametrize("case,tile", TILES, ids=str)
def test_register_tile(case, tile):
    mod, _ = int8_matmul(*case)
    target = target_4_cores("cascadelake")
    assert scheduled_rule(mod, target) == "CpuInt8Matmul"
    assert _tile(mod, target) == tile


@pytest.mark.skipif(not has_vnni(cpu_tvm_target()), reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("case,tile", TILES, ids=str)
def test_each_tile_is_exact_on_the_host(case, tile):
    check_exact_on_host(*case, RNG)


def test_odd_rows_are_padded_to_the_full_tile(monkeypatch):
    """77 rows (no tile height divides them): padded to 80 and the 8-row tile (VNNI_PAD_ROWS);
    with the switch off the 1-row tile (about 11x slower on [77, 768] x [768, 768])."""
    from hetpart.kernels.rules import cpu_int8_matmul as rule

    mod, _ = int8_matmul((77, 64), 48)
    target = target_4_cores("cascadelake")
    assert scheduled_rule(mod, target) == "CpuInt8Matmul"
    assert _tile(mod, target) == (8, 3)
    monkeypatch.setattr(rule, "VNNI_PAD_ROWS", False)
    assert _tile(mod, target) == (1, 3)


@pytest.mark.skipif(not has_vnni(cpu_tvm_target()), reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("case", [((77, 64), 48), ((1, 13, 128), 32), ((2, 21, 64), 64)], ids=str)
def test_padded_rows_are_exact_on_the_host(case, monkeypatch):
    from hetpart.kernels.rules import cpu_int8_matmul as rule

    monkeypatch.setattr(rule, "AMX_INT8", False)  # the VNNI schedule, also on an AMX host
    check_exact_on_host(*case, RNG)
