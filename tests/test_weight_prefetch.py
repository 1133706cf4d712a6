"""kernels.weight_prefetch: a channel-blocked conv whose weight is 256 KiB or more (a 3x3 256->256,
a pixel-tiled 1x1 1024->512 on 7x7) prefetches the next block group's weights inside its
reduction, and the module built with the prefetches matches the module built unscheduled; with
the switch off no prefetch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_cases import run_vm  # noqa: E402


def _model(ci: int, co: int, k: int, hw: int, stride: int = 1):
    """x[1, ci, hw, hw] -> k x k conv (pad k // 2, ``stride``) ci->co + bias + relu."""
    rng = np.random.default_rng(ci + co + k)
    w = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.standard_normal(co).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[stride, stride]),
             helper.make_node("Relu", ["c"], ["y"])]
    out = -(-hw // stride)
    g = helper.make_graph(nodes, "prefetch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, out, out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _conv_script(graph, target) -> str:
    from tvm import tirx

    from hetpart import kernels

    (f,) = [f for gv, f in kernels.schedule(graph.module, target).functions_items()
            if isinstance(f, tirx.PrimFunc) and "conv2d_NCHWc" in gv.name_hint]
    return f.script()


@pytest.mark.parametrize("ci,co,k,hw,stride", [(256, 256, 3, 7, 1), (1024, 512, 1, 7, 1), (256, 256, 3, 14, 2)])
def test_large_weights_prefetch_the_next_group_and_match_the_unscheduled_build(ci, co, k, hw, stride, monkeypatch):
    import tvm

    from hetpart import kernels, load
    from hetpart.kernels import weight_prefetch
    from hetpart.targets import cpu_tvm_target

    graph = load(_model(ci, co, k, hw, stride), conv_block=16)
    # Two cores, not the host's: on 16 (the GPU machine's Xeon) a core's share of these tile loops
    # holds less than MIN_GROUPS_PER_CORE groups and no prefetch is placed (test below).
    target = cpu_tvm_target(cores=2)
    script = _conv_script(graph, target)
    assert "T.prefetch" in script and weight_prefetch.STEP_KEY not in script and weight_prefetch.TILE_KEY not in script
    x = np.random.default_rng(7).standard_normal((1, ci, hw, hw)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    got = run_vm(kernels.build(graph.module, target), [x])
    want = run_vm(tvm.compile(graph.module, target), [x])
    assert (want == 0).any() and (want > 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    monkeypatch.setattr(weight_prefetch, "WEIGHT_PREFETCH", False)
    assert "T.prefetch" not in _conv_script(graph, target)


def test_small_weights_do_not_prefetch():
    from hetpart import load
    from hetpart.targets import cpu_tvm_target

    assert "T.prefetch" not in _conv_script(load(_model(64, 64, 3, 7), conv_block=16), cpu_tvm_target())  # 144 KiB


def test_one_group_a_core_does_not_prefetch():
    """weight_prefetch.MIN_GROUPS_PER_CORE: the 3x3 256->256 on 7x7 (8 groups of 7 tiles) built
    for 16 cores gives each core 4 tiles, no whole group: no prefetch; for 2 cores, 28 tiles."""
    from hetpart import load
    from hetpart.targets import cpu_tvm_target

    graph = load(_model(256, 256, 3, 7), conv_block=16)
    assert "T.prefetch" not in _conv_script(graph, cpu_tvm_target(cores=16))
    assert "T.prefetch" in _conv_script(graph, cpu_tvm_target(cores=2))


def test_a_weight_of_a_symbolic_dim_does_not_prefetch():
    """mark sizes the weight by analysis.buffer_bytes, which counts a symbolic dim as 1: such a
    weight (never a conv's in practice) is refused before it is sized, not prefetched by a
    wrong count; one of 1 MiB is sized as the constant shape says (bool / int4: 1 byte each)."""
    from tvm import tirx

    from hetpart.kernels import weight_prefetch
    from hetpart.kernels.analysis import buffer_bytes

    n = tirx.Var("n", "int64")
    weight = tirx.decl_buffer((n, 64, 3, 3, 16, 16), "float32", "w")
    assert weight_prefetch.mark(None, None, [object()], weight, groups=4, tiles=2) is False
    for dtype, size in (("float32", 4), ("bool", 1), ("int4", 1), ("float16", 2)):
        assert buffer_bytes(tirx.decl_buffer((64, 16, 16, 16), dtype, "w")) == 64 * 16 ** 3 * size
