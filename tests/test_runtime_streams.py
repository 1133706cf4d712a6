"""hetpart.runtime.streams: the CUDA event pool behind every marker (CPU-side, a stand-in API),
and on a real GPU that a session's runs stop creating events once warm."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hetpart.runtime.streams import EventPool
from hetpart.targets import cuda_available


class FakeEvents:
    """Stands in for :mod:`hetpart.runtime.cuda_api`'s event calls: counts them."""

    def __init__(self):
        self.next = 1
        self.live: set[int] = set()
        self.created = 0
        self.flags: list[tuple[bool, bool]] = []
        self._lock = threading.Lock()

    def event_create(self, timing: bool = True, blocking: bool = False) -> int:
        with self._lock:
            event, self.next = self.next, self.next + 1
            self.live.add(event)
            self.created += 1
            self.flags.append((timing, blocking))
            return event

    def event_destroy(self, event: int) -> None:
        with self._lock:
            self.live.remove(event)  # KeyError: destroyed twice, or never made


def test_released_events_are_reused_not_created_again():
    api = FakeEvents()
    pool = EventPool(timing=True, blocking=False, api=api)
    first = [pool.take() for _ in range(3)]
    for e in first:
        pool.give(e)
    again = [pool.take() for _ in range(3)]
    assert sorted(again) == sorted(first) and api.created == 3
    assert api.flags == [(True, False)] * 3


def test_no_event_is_handed_out_twice_at_once_across_threads():
    api = FakeEvents()
    pool = EventPool(timing=True, blocking=True, api=api)
    held: list[int] = []
    lock = threading.Lock()

    def hammer():
        for _ in range(300):
            e = pool.take()
            with lock:
                assert e not in held
                held.append(e)
            with lock:
                held.remove(e)
            pool.give(e)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.created <= 8  # at most one per thread in flight at once
    pool.close()
    assert not api.live  # every event destroyed exactly once


def test_close_destroys_the_free_events_and_any_given_back_later():
    api = FakeEvents()
    pool = EventPool(timing=True, blocking=False, api=api)
    kept, freed = pool.take(), pool.take()
    pool.give(freed)
    pool.close()
    assert api.live == {kept}
    pool.give(kept)  # a marker released after its stream closed
    assert not api.live


def test_free_list_is_bounded():
    api = FakeEvents()
    pool = EventPool(timing=True, blocking=False, api=api)
    events = [pool.take() for _ in range(EventPool.MAX_FREE + 5)]
    for e in events:
        pool.give(e)
    assert len(api.live) == EventPool.MAX_FREE


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU")
def test_warm_gpu_runs_create_no_events(monkeypatch):
    import hetpart
    from hetpart.backend import forced_plan
    from hetpart.bench.dispatch import chain_model
    from hetpart.runtime import cuda_api

    graph = hetpart.load(chain_model(3, 8))
    compiled = hetpart.compile(forced_plan(graph, "cuda"), graph, progress=False)
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    with hetpart.Session(compiled) as s:
        first = s.run({"x": x})
        s.run({"x": x})
        made = []
        real = cuda_api.event_create
        monkeypatch.setattr(cuda_api, "event_create", lambda *a, **k: made.append(1) or real(*a, **k))
        for _ in range(5):
            out = s.run({"x": x})
    assert not made
    np.testing.assert_array_equal(next(iter(out.values())), next(iter(first.values())))
