"""A decode step's KV-cache write on the CPU (issue 19; bench/results/capped-predictions.md 2(c)).

``llama_decode`` writes the new token's key into its cache slot as
``Where(hit, rope(k), past)`` over ``[1, kv, cache_len, d]``.  The injective rule
inlined the rotary embedding (``k * cos + rotate_half(k) * sin``, one value per head and
lane: ``[1, kv, 1, d]``) into the ``Where``, so it was recomputed for every cache slot,
and the rotate-half concat's ``if_then_else`` then made the rule partition the whole
cache write along the head dim, serially (987 us alone on 2 cores at 2048 x 4 x 64).
Now the rotary is a block of its own (``analysis.try_inline_spatial(...,
keep_broadcast_arithmetic=True)``) and the cache write a plain select, vectorised along
the head dim and parallel over heads x slots.

The graphs use the zoo model's own ONNX ops (``hetpart.models.llama.apply_rotary``,
``Equal`` of the slot positions, ``Reshape``, ``Where``, the repeat-KV
``Unsqueeze`` -> ``Expand`` -> ``Reshape`` and the keys' ``Transpose``), checked
against ONNX Runtime with inputs holding negatives and zeros; the new slot first, in
the middle and last.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi

from host_isa import WIDTH_TARGETS, width_target
from onnx_cases import assert_matches, block_nests, onnxruntime_outputs, run_on

from hetpart import importer, kernels
from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.llama import apply_rotary
from hetpart.targets import cpu_tvm_target

ZOO = (4, 2048, 64, 8)  # kv heads, cache slots, head dim, query heads: llama_decode's full config


def _model(kv: int, slots: int, d: int, heads: int) -> onnx.ModelProto:
    """k, v ``[1, 1, kv*d]`` (projections), cos/sin ``[1, d]``, position ``[1]`` and the
    past caches in; the present caches and the repeated, transposed keys out -- as
    ``hetpart.models.llama_decode`` writes one layer's cache update."""
    b = GraphBuilder("decode_cache")
    k, v = b.input("k", (1, 1, kv * d)), b.input("v", (1, 1, kv * d))
    cos, sin = b.input("cos", (1, d)), b.input("sin", (1, d))
    position = b.input("position", (1,), dtype="int64")
    past_k, past_v = b.input("past_k", (1, kv, slots, d)), b.input("past_v", (1, kv, slots, d))

    def split_heads(t: str, kind: str) -> str:
        t = b.reshape(t, f"{kind}.split_heads", (1, 1, kv, d))
        return b.transpose(t, f"{kind}.transpose", (0, 2, 1, 3))

    hit = b.op("Equal", [b.const("slots", np.arange(slots)), position], "hit")
    hit = b.reshape(hit, "hit_slots", (1, 1, slots, 1))
    key = b.op("Where", [hit, apply_rotary(b, split_heads(k, "k"), "k.rope", cos, sin, d), past_k], "k.write")
    value = b.op("Where", [hit, split_heads(v, "v"), past_v], "v.write")
    keys = b.op("Unsqueeze", [key, b.const("axes_2", [2])], "k.unsqueeze")
    keys = b.op("Expand", [keys, b.const("repeat_shape", [1, kv, heads // kv, slots, d])], "k.expand")
    keys = b.reshape(keys, "k.repeat", (1, heads, slots, d))
    keys_t = b.transpose(keys, "k.transpose_t", (0, 1, 3, 2))
    return b.finish({"present_k": key, "present_v": value, "keys_t": keys_t})


def _feeds(kv: int, slots: int, d: int, position: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(position)

    def normal(*shape):
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        x.flat[::7] = 0.0
        return x

    angle = position * (1.0 / 10000.0 ** (np.arange(0, d, 2) / d))
    emb = np.concatenate([angle, angle])[None, :].astype(np.float32)
    return {"k": normal(1, 1, kv * d), "v": normal(1, 1, kv * d), "cos": np.cos(emb), "sin": np.sin(emb),
            "position": np.array([position], np.int64), "past_k": normal(1, kv, slots, d),
            "past_v": normal(1, kv, slots, d)}


@pytest.mark.parametrize("shape, position", [
    (ZOO, 0), (ZOO, 1000), (ZOO, 2047), ((2, 16, 64, 4), 5), ((1, 24, 32, 2), 23)])
def test_cache_write_matches_onnxruntime(shape, position):
    kv, slots, d, heads = shape
    m, feeds = _model(*shape), _feeds(kv, slots, d, position)
    got = run_on(m, "cpu", feeds)
    want = dict(zip([o.name for o in m.graph.output], onnxruntime_outputs(m, feeds)))
    assert (want["present_k"] < 0).any() and (want["present_k"] == 0).any()
    row = want["present_k"][:, :, position]
    assert not np.array_equal(row, feeds["past_k"][:, :, position]), "the new key is written"
    for name in want:
        assert_matches(got[name], want[name], rtol=1e-5, atol=1e-6, what=f"{name} {shape} @ {position}")


def _scheduled_kernel(m: onnx.ModelProto, *parts: str, target=None):
    """The one scheduled CPU kernel of ``m`` whose name holds every one of ``parts``
    (scheduled for ``target``, by default the host's with 2 cores)."""
    mod = kernels.schedule(importer.load(m).module, target or cpu_tvm_target(2))
    funcs = [f for gv, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and all(part in gv.name_hint for part in parts)]
    assert len(funcs) == 1, [gv.name_hint for gv in mod.functions]
    return funcs[0]


def _cache_write_kernel(m: onnx.ModelProto):
    """The scheduled kernel that writes the key cache (rotary + ``Where``)."""
    return _scheduled_kernel(m, "where", "concatenate")


def _nests(func):
    """``{block name: [loops around it, outermost first]}`` of ``func``'s blocks."""
    return {r.block.name_hint: loops for r, loops in block_nests(func)}


def _calls(expr, suffix: str) -> int:
    found = []
    tvm_ffi.structural_walk(
        expr, (tvm.ir.Call, lambda e: found.append(e) if str(getattr(e.op, "name", "")).endswith(suffix) else None),
        order="post")
    return len(found)


def test_rotary_computed_once_not_per_slot():
    """The rotary's multiply-adds and rotate-half ``if_then_else`` live in a block of
    ``kv x d`` points, not in the cache write's ``kv x slots x d`` (before: inlined,
    the cache write held them)."""
    func = _cache_write_kernel(_model(*ZOO))
    nests = _nests(func)
    write = nests["T_where"]
    assert write, func.script()
    store = _store_of(func, "T_where")
    assert _calls(store, "if_then_else") == 0, func.script()
    assert not isinstance(store.value.true_value, (tvm.tirx.Add, tvm.tirx.Mul)), func.script()
    rotary = [name for name in nests if name.startswith("T_add")]
    assert rotary, func.script()


def _store_of(func, name):
    found = []

    def visit(node):
        if node.name_hint == name:
            found.append(node.body)

    tvm_ffi.structural_walk(func.body, (tvm.s_tir.SBlock, visit), order="post")
    assert len(found) == 1, func.script()
    return found[0]


def test_cache_write_parallel_and_vectorised():
    """The 512 Ki-element cache write runs in parallel (outermost loop) and in SIMD
    vectors along the head dim (innermost); before it was partitioned along the head
    dim, serial and scalar."""
    func = _cache_write_kernel(_model(*ZOO))
    loops = _nests(func)["T_where"]
    assert loops[0].kind == tvm.tirx.ForKind.PARALLEL, func.script()
    assert loops[-1].kind == tvm.tirx.ForKind.VECTORIZED, func.script()


def _repeat_transpose_kernel(m: onnx.ModelProto, target=None):
    """The scheduled kernel that repeats the key heads and transposes them (``keys_t``)."""
    return _scheduled_kernel(m, "broadcast_to", "transpose", target=target)


@pytest.mark.parametrize("cpu", WIDTH_TARGETS)
def test_repeat_kv_transpose_tiled(cpu):
    """``[1, kv, slots, d] -> [1, heads, d, slots]``: each vector of ``lanes`` slots (16
    on AVX-512, 8 on AVX2; the host's from /proc/cpuinfo) sits under a loop over the
    head dim, inside one parallel chunk of ``lanes`` slots, so a tile reads ``lanes``
    cache rows whole while they are in L1 (before: all loops fused, the head dim
    outside the slots, each vector's reads from ``lanes`` rows of the whole cache)."""
    kv, slots, d, heads = ZOO
    target, lanes = width_target(cpu, cores=2)
    func = _repeat_transpose_kernel(_model(*ZOO), target)
    (loops,) = [nest for name, nest in _nests(func).items() if name.startswith("T_transpose")]
    assert [lp.kind for lp in loops] == [tvm.tirx.ForKind.PARALLEL, tvm.tirx.ForKind.SERIAL,
                                         tvm.tirx.ForKind.VECTORIZED], func.script()
    assert [int(lp.extent) for lp in loops] == [heads * slots // lanes, d, lanes], func.script()
