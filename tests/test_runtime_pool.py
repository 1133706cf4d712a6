"""A model's GPU memory quota as one arena allocated up front (hetpart.runtime.pool).

The allocator is checked against an independent model of its state (the live
intervals); sessions opened with a quota are checked to carve every device buffer
from the arena, to refuse what does not fit with a QuotaExceededError naming the
model, and to give outputs equal to onnxruntime's (simulation: the CUDA partitions
run on the CPU).
"""

from __future__ import annotations

import gc

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hetpart
from hetpart import models
from hetpart.compiler.artifact import TensorSpec
from hetpart.errors import QuotaExceededError
from hetpart.runtime import Session
from hetpart.runtime.feeds import random_feeds
from hetpart.runtime.memory import SimulatedMemory
from hetpart.runtime.pool import Arena, PooledMemory, reserved_bytes
from hetpart.runtime.streams import cuda_priority

ALIGN = 64


def aligned(n: int) -> int:
    return -(-max(n, 1) // ALIGN) * ALIGN


def largest_gap(live: dict[int, int], capacity: int) -> int:
    """The largest free run of bytes between the live blocks (the reference's view)."""
    edges = sorted(live.items())
    gaps, at = [], 0
    for off, size in edges:
        gaps.append(off - at)
        at = off + size
    gaps.append(capacity - at)
    return max(gaps)


@settings(derandomize=True, deadline=None, database=None, max_examples=200)
@given(capacity=st.integers(0, 4096), ops=st.lists(st.tuples(st.booleans(), st.integers(1, 1500)), max_size=40))
def test_the_arena_never_overlaps_never_overflows_and_fails_only_without_room(capacity, ops):
    arena = Arena("m", capacity, simulated=True)
    cap = capacity - capacity % ALIGN
    live: dict[int, int] = {}
    tokens: dict[int, int] = {}
    token_of: dict[int, int] = {}
    for is_alloc, n in ops:
        if is_alloc or not live:
            try:
                off, tokens[len(tokens)] = arena.alloc(n, "a buffer")
            except QuotaExceededError as e:
                assert largest_gap(live, cap) < aligned(n)  # first fit fails only when no gap fits
                assert e.model == "m" and e.requested_bytes == n
                continue
            assert off % ALIGN == 0 and off + aligned(n) <= cap
            assert all(off + aligned(n) <= o or o + s <= off for o, s in live.items())
            live[off] = aligned(n)
            token_of[off] = tokens[len(tokens) - 1]
        else:
            off = sorted(live)[n % len(live)]
            if n % 2:
                arena.free(off, token_of[off])
            else:  # as a finaliser does: queued, done by the next call
                arena.release(off, token_of[off])
            arena.free(off, token_of[off])  # a second free of the same block frees nothing
            del live[off]
        assert arena.in_use == sum(live.values())
    for off in list(live):
        arena.free(off, token_of[off])
    if cap:  # freed blocks coalesce: the whole arena is one block again
        assert arena.alloc(cap, "everything")[0] == 0


def test_a_stale_free_never_frees_the_block_that_reuses_its_space():
    arena = Arena("m", 256, simulated=True)
    old = arena.alloc(100, "a")
    arena.release(*old)  # a finaliser's free, queued
    new = arena.alloc(100, "b")  # done first, so b gets the same space
    assert new[0] == old[0] and new[1] != old[1]
    arena.free(*old)
    arena.release(*old)
    assert arena.in_use == 128 and arena.size_of(*new) == 128


def test_a_transient_buffer_returns_its_block_when_dropped():
    memory = PooledMemory(SimulatedMemory(), "m", 1024)
    buf = memory.transient(TensorSpec("t", (64,), "float32"), "cuda")
    assert memory.in_use == 256 and memory.live_bytes == 0  # per-run: not held by the session
    with pytest.raises(QuotaExceededError, match="model 'm'.*quota of 1024 bytes"):
        memory.device(TensorSpec("big", (256,), "float32"))
    del buf
    gc.collect()
    assert memory.in_use == 0
    held = memory.device(TensorSpec("big", (256,), "float32"))
    assert memory.arena.ptr <= held.ptr < memory.arena.ptr + 1024 and memory.live_bytes == 1024
    memory.close()
    assert memory.live_bytes == 0


def test_cuda_priorities_count_down_from_the_least_and_stop_at_the_greatest():
    assert [cuda_priority(p, 0, -5) for p in (-1, 0, 1, 2, 5, 9)] == [0, 0, -1, -2, -5, -5]


# --- sessions ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_mlp(zoo_graph, plan_for):
    """zoo:mlp:small with its kernels alternating CPU and CUDA (simulated)."""
    graph = zoo_graph("mlp")
    order = graph.topological_order()
    plan = plan_for(graph, {k: ("cuda" if i % 2 == 0 else "cpu") for i, k in enumerate(order)})
    return graph, hetpart.compile(plan, graph, simulate=True, progress=False)


def reference(name: str, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(models.build(name, small=True).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_a_session_with_a_quota_carves_every_device_buffer_from_its_arena(split_mlp):
    graph, compiled = split_mlp
    feeds = random_feeds(compiled.inputs, seed=3)
    with Session(compiled, quota=1 << 16, handoff="copy", priority=2) as s:
        devices = [b for slot in s._slots for (name, side), b in slot.buffers.items() if side == "cuda"]
        assert devices, "the split plan has device buffers"
        arena = s.pool.arena
        assert all(arena.ptr <= b.ptr and b.ptr + b.nbytes <= arena.ptr + arena.capacity for b in devices)
        assert s.pool.in_use == sum(aligned(b.nbytes) for b in devices)
        out = s.run(feeds)
        assert s.quota == 1 << 16 and s.stream_priority == 2  # simulation: recorded
    np.testing.assert_allclose(out["logits"], reference("mlp", feeds)[0], rtol=1e-5, atol=1e-5)
    assert s.buffer_bytes == 0


def test_a_quota_too_small_for_the_sessions_buffers_is_refused_naming_the_model(split_mlp):
    _, compiled = split_mlp
    quota = 128 + reserved_bytes(compiled)
    with pytest.raises(QuotaExceededError, match=f"model 'mlp_small'.*quota of {quota} bytes") as e:
        Session(compiled, quota=quota, handoff="copy")
    assert e.value.model == "mlp_small" and e.value.quota_bytes == quota


def test_a_quota_below_the_resident_weights_is_refused(split_mlp):
    _, compiled = split_mlp
    weights = reserved_bytes(compiled)
    assert weights > 0
    with pytest.raises(QuotaExceededError, match="resident weights"):
        Session(compiled, quota=weights - 1)


def test_a_simulated_quota_the_size_of_a_real_gpu_costs_only_what_is_carved():
    """141 GB (an H200) of simulated arena on a CI machine with far less memory."""
    memory = PooledMemory(SimulatedMemory(), "big", 141 * 10**9)
    buf = memory.device(TensorSpec("x", (1024,), "float32"))
    buf.array[:] = 1.0
    assert memory.in_use == 4096 and float(buf.array.sum()) == 1024.0
    memory.close()


def test_multisession_refuses_a_quota_for_a_bucketed_model():
    class Bucketed:
        is_bucketed = True

    with pytest.raises(hetpart.RuntimeFailure, match="per shape bucket"):
        hetpart.MultiSession([Bucketed()], quotas=[1 << 20])
    with pytest.raises(hetpart.RuntimeFailure, match="1 models, 2 quotas"):
        hetpart.MultiSession([Bucketed()], quotas=[1, 2])


def test_call_leased_returns_the_value_and_raises_the_error_on_the_caller():
    """The benchmarks time kernels on a leased thread (its own TVM pool) and need its
    result, or its exception, back on the calling thread."""
    import threading

    from hetpart.runtime.threads import call_leased

    caller = threading.get_ident()
    assert call_leased("t", lambda: threading.get_ident() != caller, pool=1, role="cpu") is True

    def fails():
        raise ValueError("inside the lease")

    with pytest.raises(ValueError, match="inside the lease"):
        call_leased("t", fails, pool=1, role="cpu")
