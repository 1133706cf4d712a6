"""One model's lane: its queue, its dynamic batcher thread(s), and the split of answers.

A batcher takes the oldest request, adds every queued request of the same
:func:`~.request.signature` that still fits (``max_batch`` rows, requests whole, in
arrival order), and then *may* wait for more, never past ``oldest.arrival +
max_delay``: only while more are expected by then (the recent gap between arrivals,
a moving average, is shorter than the time left).  So under low load a request goes
alone right away; as load rises, requests queue while the runner is busy and batches
grow with the load, and at high rates the batcher also waits up to ``max_delay`` to
fill a batch.

*Holding while busy* (``hold``, seconds; None: off, the default, :data:`HOLD_WHILE_BUSY`
sets it for lanes not given one): a model served by several instances (batchers) runs a
free instance's batch as soon as it is formed, so below saturation each instance takes
what one arrival gap left in the queue -- batches of ~1 while every instance's run is in
flight on the shared GPU and CPU lane (issue 20's detector+ResNet-50 at 469/s: mean
batch 1.28, four runs in flight).  With ``hold`` a batch that is not full, formed while
another batch of the same model is running, keeps waiting for company until it is full,
no batch of the model runs any more, or ``hold`` has passed since its oldest request
arrived: the queue then fills while the running batch ends and one larger run takes it
(Triton's dynamic batcher gets the same from its preferred batch sizes and queue
delay).  A batch formed while no batch of the model runs is not held (one lone request
still goes at once).

With a :class:`~.policy.BatchingPolicy` a batch fills up to the largest size the
policy keeps, and runs only on a bucket build the policy keeps
(:meth:`~.policy.BatchingPolicy.runs`): a batch whose rows would land on a dropped
build gives its last requests back to the head of the queue until it does not (never
below its first request: a request is never split).  A policy of ``(1,)`` serves the
model unbatched: every request runs alone, with no wait.

Behind the server's gate (``max_concurrent_batches``) a batch tops up once its slot is
granted: requests of its kind queued while it waited join it (:meth:`Lane._top_up`), so a
1-slot gate across models batches what arrived during the other models' runs.

A batch's feeds are concatenated along dim 0, run, and each output is cut back into
the requests' own rows (a single-request batch gets the runner's outputs as they
are); an output the runner names in ``batch_columns`` (NonMaxSuppression's rows of
(batch, class, box)) is split by that column instead, re-based to each request's
first row.  A failing run, or outputs without the batch's rows, fail exactly that
batch's futures with a :class:`~hetpart.errors.BatchError`.

Each request's :class:`~.request.RequestTiming` is stamped on the way: ``taken`` when
a batcher takes it into a batch (anew if :meth:`Lane._trim` gave it back), ``started``
when its batch's run starts (with the batch's rows and how many batches of the server,
counted by the shared :class:`~.stats.RunCount`, were running then), ``ran`` when the
run and split end, ``settled`` just before its future is answered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError

import numpy as np

from ..contracts.buckets import rows_of_batch
from ..errors import BatchError, HetpartError, RuntimeFailure, ServerClosedError, ServingError
from .gate import Gate
from .policy import BatchingPolicy
from .request import Request
from .stats import ModelStats, RunCount

_GAP_WEIGHT = 0.2  # weight of the newest inter-arrival gap in the moving average

HOLD_WHILE_BUSY: float | None = None
"""The ``hold`` (seconds) of every :class:`Lane` not given one: a partial batch formed while
another batch of its model runs waits up to this long (from its oldest arrival) for company
(see the module docstring).  None: off, what the batcher did before (issue 20, branch
serve-detector).  Off: device step 128 (H100, detector + ResNet-50) served 0.80x the rate
with a 10 ms hold (bench/results/serve-detector-nvidia-h100.md)."""


class Lane:
    """The queue and batcher(s) of one model; ``instances`` batches may run at once."""

    def __init__(self, name: str, runner, *, max_delay: float, priority: int = 0, instances: int = 1,
                 gate: Gate | None = None, policy: BatchingPolicy | None = None, running: RunCount | None = None,
                 hold: float | None = None):
        self.name, self.runner, self.policy = name, runner, policy
        self.running = running if running is not None else RunCount()  # the server's batches running
        self.max_batch = int(runner.max_batch)  # the most rows a request (and a run) may carry
        # the rows a batch of several requests fills up to
        self.fill = min(policy.max_batch, self.max_batch) if policy is not None else self.max_batch
        if self.fill == 1:
            max_delay = 0.0  # unbatched: nothing to wait for
        self.batch_columns = dict(getattr(runner, "batch_columns", None) or {})
        self.max_delay, self.priority, self.gate = max_delay, priority, gate
        hold = HOLD_WHILE_BUSY if hold is None else hold
        if hold is not None and hold < 0:
            raise ServingError(f"model '{name}': hold must be >= 0 seconds, got {hold}")
        # held only where another instance can be running and a batch can grow
        self.hold = hold if hold and instances > 1 and self.fill > 1 else 0.0
        self.stats = ModelStats()
        self._cond = threading.Condition()
        self._queue: deque[Request] = deque()
        self._accepting, self._stopping, self._forming = True, False, False
        self._gap = float("inf")  # moving average of the gap between arrivals (s)
        self._last_arrival: float | None = None
        self._in_flight: dict[int, list[Request]] = {}  # thread id -> its running batch
        self._threads = [threading.Thread(target=self._loop, name=f"hetpart-serve-{name}-{i}", daemon=True)
                         for i in range(instances)]
        for t in self._threads:
            t.start()

    # --- requests in -------------------------------------------------------------
    def put(self, request: Request) -> None:
        with self._cond:
            if not self._accepting:
                raise ServerClosedError(f"model '{self.name}': the server is closed; it accepts no request")
            now = request.arrival
            if self._last_arrival is not None:
                # one long idle spell must not hide a burst: gaps count at most 10 max_delays
                gap = min(now - self._last_arrival, 10 * self.max_delay)
                self._gap = gap if self._gap == float("inf") else (1 - _GAP_WEIGHT) * self._gap + _GAP_WEIGHT * gap
            self._last_arrival = now
            self._queue.append(request)
            self.stats.count("submitted")
            self._cond.notify_all()  # the batcher forming a batch, or an idle one

    # --- forming a batch ---------------------------------------------------------
    def _next_batch(self) -> list[Request] | None:
        """The next batch (requests already marked running), or None once stopping and empty."""
        with self._cond:
            # one batch forms at a time: a second instance would take the requests
            # the first one waits for, and both would run half-empty batches
            while self._forming or (not self._queue and not self._stopping):
                self._cond.wait()
            self._forming = True
            try:
                batch = self._form()
                if batch is not None:  # in flight from here, under the lock: a batch forming next sees it (hold)
                    self._in_flight[threading.get_ident()] = batch
                return batch
            finally:
                self._forming = False
                self._cond.notify_all()

    def _form(self) -> list[Request] | None:
        """Under ``_cond``: the oldest request and its company (see the module docstring)."""
        while True:
            if not self._queue:
                return None  # stopping, and nothing left
            first = self._queue.popleft()
            if first.future.set_running_or_notify_cancel():
                first.timing.taken = time.perf_counter()
                break
            self.stats.count("cancelled")
        batch, rows = [first], first.rows
        rows = self._take(batch, rows)
        deadline = first.arrival + self.max_delay
        held = first.arrival + self.hold  # the hold's end (self.hold 0: none)
        while rows < self.fill and not self._stopping:
            now = time.perf_counter()
            if self._in_flight and now < held:  # another batch of this model runs: wait for it or company
                self._cond.wait(held - now)
                rows = self._take(batch, rows)
                continue
            expected = (self._last_arrival or now) + self._gap
            if now >= deadline or expected > deadline:
                break
            self._cond.wait(deadline - now)
            rows = self._take(batch, rows)
        self._trim(batch, rows)
        return [first] + [r for r in batch[1:] if self._start(r)]

    def _take(self, batch: list[Request], rows: int) -> int:
        """Move queued requests that match ``batch[0]`` and fit into ``batch`` (up to
        ``fill`` rows; not yet marked running); the rows it then has."""
        keep: deque[Request] = deque()
        sig, now = batch[0].signature, time.perf_counter()
        while self._queue:
            r = self._queue.popleft()
            if r.signature != sig or rows + r.rows > self.fill:
                keep.append(r)
            elif r.future.cancelled():
                r.future.set_running_or_notify_cancel()  # its waiters learn it is cancelled
                self.stats.count("cancelled")
            else:
                r.timing.taken = now
                batch.append(r)
                rows += r.rows
            if rows == self.fill:
                break
        keep.extend(self._queue)
        self._queue = keep
        return rows

    def _trim(self, batch: list[Request], rows: int) -> None:
        """Give the tail of ``batch`` back to the head of the queue until its rows land on
        a build the policy keeps (or only its first request is left)."""
        back = []
        while self.policy is not None and not self.policy.runs(rows) and len(batch) > 1:
            r = batch.pop()
            rows -= r.rows
            back.append(r)
        self._queue.extendleft(back)  # popped last-first: extendleft restores arrival order

    def _start(self, r: Request) -> bool:
        """Mark a taken request running; False (counted) if its caller cancelled it meanwhile."""
        if r.future.set_running_or_notify_cancel():
            return True
        self.stats.count("cancelled")
        return False

    def _top_up(self, batch: list[Request], rows: int) -> int:
        """After the gate's wait: requests of ``batch``'s kind queued meanwhile join it (up
        to ``fill`` rows, trimmed to a build the policy keeps, marked running), unless
        another batch of this model is forming (its company).  ``batch`` (the in-flight
        list) grows in place; returns its rows.  Why: behind a 1-slot gate a batch formed
        at once waits out the other models' runs while its queue fills; without this the
        requests that arrived meanwhile went into the next batch, one more run behind."""
        with self._cond:
            if self._forming or rows >= self.fill or not self._queue:
                return rows
            had = len(batch)
            rows = self._take(batch, rows)
            self._trim(batch, rows)
            joined = [r for r in batch[had:] if self._start(r)]
            del batch[had:]
            batch.extend(joined)
            return sum(r.rows for r in batch)

    # --- running it --------------------------------------------------------------
    def _loop(self) -> None:
        me = threading.get_ident()
        while True:
            batch = self._next_batch()  # registered in _in_flight already
            if batch is None:
                return
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._in_flight.pop(me, None)
                    self._cond.notify_all()

    def _run(self, batch: list[Request]) -> None:
        rows = sum(r.rows for r in batch)
        if self.gate is not None:
            self.gate.acquire(self.priority, batch[0].arrival)
            rows = self._top_up(batch, rows)
        concurrent = self.running.enter()
        start = time.perf_counter()
        for r in batch:
            r.timing.started, r.timing.batch_rows, r.timing.concurrent = start, rows, concurrent
        try:
            outputs = self.runner.run(_concat(batch))
            results = _split(outputs, batch, rows, self.batch_columns)
        except BaseException as exc:  # noqa: BLE001 - every error reaches exactly this batch's callers
            error = self._batch_error(exc, batch, rows)
            self._ran(batch, rows, start)
            for r in batch:
                r.timing.settled = time.perf_counter()
                if _settle(r.future, exc=error):
                    self.stats.count("failed")
            return
        finally:
            self.running.leave()
            if self.gate is not None:
                self.gate.release()
        self._ran(batch, rows, start)
        for r, result in zip(batch, results):
            r.timing.settled = time.perf_counter()
            if _settle(r.future, result=result):
                self.stats.count("completed")

    def _ran(self, batch: list[Request], rows: int, start: float) -> None:
        """Stamp the end of ``batch``'s run on its requests and count it in the stats."""
        end = time.perf_counter()
        for r in batch:
            r.timing.ran = end
        self.stats.batch(rows, len(batch), [start - r.arrival for r in batch], end - start)

    def _batch_error(self, exc: BaseException, batch: list[Request], rows: int) -> BatchError:
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, HetpartError) else str(exc)
        error = BatchError(f"model '{self.name}': its batch of {len(batch)} request(s), {rows} row(s), "
                           f"failed: {what}", self.name, getattr(exc, "partition", None))
        error.__cause__ = exc
        return error

    # --- shutting down -----------------------------------------------------------
    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def drain(self) -> None:
        """Stop waiting for company: batchers run what is queued, then exit."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wait_idle(self, deadline: float | None) -> bool:
        """Wait (until ``deadline``, perf_counter time) for the queue to empty and every batch to end."""
        with self._cond:
            while self._queue or self._in_flight:
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.perf_counter()))
        return True

    def reject_rest(self, reason: str, *, running: bool = True) -> None:
        """Fail every queued request, and (``running``) every one in a batch still
        running, with ServerClosedError."""
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
            running = [r for b in self._in_flight.values() for r in b] if running else []
            self._cond.notify_all()
        for r in queued:
            r.future.set_running_or_notify_cancel()
        for r in queued + running:
            if _settle(r.future, exc=ServerClosedError(f"model '{self.name}': {reason}")):
                self.stats.count("shut_down")


def _concat(batch: list[Request]) -> dict[str, np.ndarray]:
    if len(batch) == 1:
        return batch[0].feeds
    return {n: np.concatenate([r.feeds[n] for r in batch]) for n in batch[0].feeds}


def _split(outputs, batch: list[Request], rows: int, batch_columns: dict[str, int] | None = None
           ) -> list[dict[str, np.ndarray]]:
    """Each request's own rows of every output (in batch order): dim 0 cut, or for an
    output in ``batch_columns`` the rows whose batch column falls in the request's rows."""
    if not hasattr(outputs, "items"):
        raise RuntimeFailure(f"the runner returned {type(outputs).__name__}, not a dict of output name -> array")
    if len(batch) == 1:
        return [dict(outputs)]
    columns = batch_columns or {}
    for name, y in outputs.items():
        if name not in columns and (np.ndim(y) == 0 or np.shape(y)[0] != rows):
            raise RuntimeFailure(f"output '{name}' {list(np.shape(y))} does not have the batch's {rows} rows "
                                 "in dim 0; serve this model with max_batch=1")
    results, start = [], 0
    for r in batch:
        results.append({n: rows_of_batch(y, columns[n], start, start + r.rows) if n in columns
                        else y[start:start + r.rows] for n, y in outputs.items()})
        start += r.rows
    return results


def _settle(future: Future, result=None, exc: BaseException | None = None) -> bool:
    """Answer ``future`` unless it is answered already (close() may have rejected it); True if this did."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return True
    except InvalidStateError:
        return False
