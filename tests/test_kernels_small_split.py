"""One-vector channel panels where the tile loop splits unevenly over the target's cores
(issue 18, ``register_tile._split_panels``; bench/results/cpu-small-split.md).

A ``rows x 2``-vector tile whose loop has few iterations for the target's ``num-cores``
(densenet121's 128->32 3x3 conv on 7x7: 7 tiles for 16 threads) takes one-vector panels
where the modelled time (``ceil(E / cores)`` tiles a thread, a one-vector tile at
``ONE_VECTOR_TILE_COST`` of a two-vector one) falls to ``SMALL_SPLIT_MARGIN``; at 2 cores,
with many tiles, or with the switch off the tile is unchanged.  Decisions are read from
the TIR scheduled for ``sapphirerapids`` (built here, not run); results are checked on
this host, built for 16 cores so that the split applies, against ONNX Runtime and
onnx.reference, inputs with negatives and zeros.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm

from cpu_tile_cases import avx512_target, build_and_run, conv, matmul, random_feeds, tile_shape
from onnx_cases import assert_matches, onnxruntime_outputs, reference

from hetpart import kernels, load
from hetpart.kernels import register_tile, weight_prepack
from hetpart.kernels.analysis import cpu_shape
from hetpart.kernels.rules import cpu_matmul
from hetpart.targets import host_cpu_name, host_triple


def _host(cores: int) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": host_cpu_name(), "num-cores": cores})


def _vectors(m: onnx.ModelProto, target: tvm.target.Target) -> int:
    """Vectors of the tile of ``m``'s one conv or matmul kernel scheduled for ``target``."""
    mod = kernels.schedule(weight_prepack.mark_weights(load(m).module), target)
    (func,) = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)
               and str(f.attrs.get(kernels.RULE_ATTR, "")) in ("CpuMatmul", "CpuConv2d")]
    return tile_shape(func)[1]


def test_the_split_pays_only_with_few_tiles_a_core():
    """The model: 7 tiles on 16 cores (1 round of 1) against 14 (1 round at 0.6): split;
    28 (2 rounds) against 56 (4 at 0.6 = 2.4): kept; at 2 cores 7 -> 4 rounds against
    14 -> 7 x 0.6 = 4.2: kept."""
    assert register_tile.thread_efficiency(7, 16) == pytest.approx(7 / 16)
    assert 1 * register_tile.ONE_VECTOR_TILE_COST <= register_tile.SMALL_SPLIT_MARGIN * 1
    assert 4 * register_tile.ONE_VECTOR_TILE_COST > register_tile.SMALL_SPLIT_MARGIN * 2
    assert 7 * register_tile.ONE_VECTOR_TILE_COST > register_tile.SMALL_SPLIT_MARGIN * 4


@pytest.mark.parametrize("case,cores,vectors", [
    ((128, 32, 7, 3, 1), 16, 1),  # densenet121's 3x3 growth conv on 7x7: 7 tiles -> 14
    ((128, 32, 7, 3, 1), 2, 2),  # 2 cores: 4 rounds of the 7 tiles, the split would take 7 x 0.6
    ((128, 32, 14, 3, 1), 16, 2),  # 28 tiles: 2 rounds against 4 x 0.6
    ((992, 32, 7, 1, 0), 16, 1),  # a 1x1 of one panel on 7x7
    ((960, 160, 7, 1, 0), 16, 2),  # mobilenet_v2's 7x7 projection: 35 tiles, 3 rounds against 5 x 0.6
])
def test_one_vector_panels_where_the_loop_splits_unevenly(case, cores, vectors):
    ic, oc, hw, k, pad = case
    assert _vectors(conv(ic, oc, hw, k=k, pad=pad), avx512_target(cores)) == vectors


def test_the_switch_off_keeps_two_vectors(monkeypatch):
    """Fails without the rule: densenet121's 7x7 3x3 conv keeps 2 vectors."""
    m = conv(128, 32, 7, k=3, pad=1)
    assert _vectors(m, avx512_target(16)) == 1
    monkeypatch.setattr(register_tile, "SMALL_SPLIT", False)
    assert _vectors(m, avx512_target(16)) == 2


# One panel of two vectors with this host's lanes: 16 channels with AVX2's 8, 32 on an
# AVX-512 host; 3x3 convs on 6x6 outputs (rows of 6: 6 tiles for a 16-core target, split
# into 12; a 7-wide one takes ragged rows of 4 with AVX2's 16 registers, 14 tiles).
_OC = 2 * cpu_shape(_host(16)).lanes("float32")

CASES = {
    "3x3 128->2 vectors on 6x6 + relu": lambda: conv(128, _OC, 6, k=3, pad=1),
    "1x1 992->2 vectors on 7x7 + add": lambda: conv(992, _OC, 7, epilogue="add"),
    "3x3 64->2 vectors s2 on 12x12 -> 6x6": lambda: conv(64, _OC, 12, k=3, stride=2, pad=1, epilogue="none"),
    "[7, 256] @ [256, 2 vectors] + relu": lambda: matmul(7, 256, _OC),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_vector_panels_match_onnxruntime_and_the_reference(case, monkeypatch):
    # On AVX2 the 7x7 1x1's channels-inner plane (cpu_matmul.CHANNELS_INNER_ROWS) has 10 row
    # tiles, which split evenly enough: the one-vector tile is tested with it off.
    monkeypatch.setattr(cpu_matmul, "CHANNELS_INNER_ROWS", False)
    m = CASES[case]()
    target = _host(16)
    assert _vectors(m, target) == 1, "the one-vector tile is the one tested"
    feeds = random_feeds(m)
    (want,) = onnxruntime_outputs(m, feeds)
    if "relu" in case:
        assert (want == 0).any() and (want > 0).any(), "the clamp is exercised"
    got = build_and_run(m, feeds, target)
    tol = dict(rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
    assert_matches(got, want, what=f"{case} against ONNX Runtime", **tol)
    (ref,) = reference(m, feeds).values()
    assert_matches(got, ref, what=f"{case} against onnx.reference", **tol)
