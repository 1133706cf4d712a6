"""Fake runners for the serving tests (``from serving_runners import ...``):

* ``Doubler``: y = 2x + 1 and a per-row sum, recording every row and batch size it ran;
* ``Blocking``: a Doubler whose first run waits for ``release`` (deterministic batching);
* ``row(i)`` / ``expect_own(result, i)``: one request's feeds of payload id ``i`` / its answer checked;
* ``queue_behind_busy(server, model, runner, queued)``: rows queued behind a busy runner, each
  answer its own.
"""

from __future__ import annotations

import threading

import numpy as np

import hetpart


class Doubler:
    """y = 2x + 1 and a per-row sum; records every row it ran (by payload id, column 0)."""

    def __init__(self, max_batch=8, inputs=None):
        self.max_batch = max_batch
        self.rows_seen: list[float] = []
        self.batch_sizes: list[int] = []
        self.lock = threading.Lock()
        if inputs is not None:
            self.inputs = inputs

    def run(self, feeds):
        x = feeds["x"]
        assert 1 <= len(x) <= self.max_batch
        with self.lock:
            self.rows_seen.extend(x[:, 0].tolist())
            self.batch_sizes.append(len(x))
        return {"y": 2 * x + 1, "s": x.sum(axis=1)}


class Blocking(Doubler):
    """A Doubler whose first run waits for ``release`` (``started`` is set when it begins)."""

    def __init__(self, max_batch=8, poison=None):
        super().__init__(max_batch)
        self.started, self.release = threading.Event(), threading.Event()
        self.poison = poison

    def run(self, feeds):
        self.started.set()
        assert self.release.wait(30)
        if self.poison is not None and (feeds["x"][:, 0] == self.poison).any():
            raise hetpart.RuntimeFailure("poisoned row", partition="p0")
        return super().run(feeds)


def row(i, width=3):
    """One request's feeds: ``x [1, width]`` of the value ``i`` (its payload id)."""
    return {"x": np.full((1, width), float(i), np.float32)}


def expect_own(result, i, width=3, rows=1):
    """``result`` is a :class:`Doubler`'s answer to its own ``rows`` rows of the value ``i``."""
    x = np.full((rows, width), float(i), np.float32)
    np.testing.assert_array_equal(result["y"], 2 * x + 1)
    np.testing.assert_array_equal(result["s"], x.sum(axis=1))


def queue_behind_busy(server, model: str, runner, queued: int) -> None:
    """Submit row 0, wait until ``runner`` (a :class:`Blocking`) is busy with it, queue
    rows 1..``queued`` behind it, release the runner, and check each answer is its own."""
    first = server.submit(model, row(0))
    assert runner.started.wait(30)
    rest = [server.submit(model, row(i)) for i in range(1, queued + 1)]
    runner.release.set()
    for i, fut in enumerate([first, *rest]):
        expect_own(fut.result(30), i)
