"""Server: several named models, requests from many threads, batched per model as load rises.

::

    with hetpart.Server({"resnet": session_b8, "bert": bucketed}, max_delay=0.002) as server:
        future = server.submit("resnet", {"input": x})      # x: (1, 3, 224, 224); any thread
        logits = future.result()["logits"]                  # (1, 1000): this request's own row
        outputs = server.infer("bert", {"input_ids": ids})  # the same, blocking

Each model has a :class:`~.batcher.Lane`: a queue and a batcher thread that forms
batches up to the runner's ``max_batch`` (see :mod:`.batcher` for when it waits),
runs them, and answers each request's future with its own rows.  Requests carry a
leading batch dim (:mod:`.request`).  Models run side by side; ``max_concurrent_batches``
(a :class:`~.gate.Gate`) caps how many batches run at once across models, handing a
freed slot to the model of highest ``priority`` first.

Errors: a bad request raises :class:`~hetpart.errors.BadRequestError` at submit (it
is never queued); a failed batch fails exactly its requests' futures with
:class:`~hetpart.errors.BatchError`; after ``close`` starts, submit raises
:class:`~hetpart.errors.ServerClosedError`.  ``close(timeout)`` answers what is queued
and running until ``timeout``, then fails whatever is left with ServerClosedError:
no future is ever left pending.  The server does not close the runners: sessions
stay the caller's.

Every future ``submit`` returns carries ``future.timing``, the request's
:class:`~.request.RequestTiming` (where its time went: queue, batch forming, run,
delivery), filled in as it moves.  When the server takes its first request it freezes
the Python heap (:func:`~.heap.freeze`: ``gc.freeze()``, once, cheap), so the cyclic
GC's full collections while serving walk only what serving allocates, not the models'
and libraries' long-lived objects (tens of ms per pause otherwise, landing on every
request in flight; see :mod:`.heap`); ``freeze_heap=False`` leaves the GC alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Mapping, Sequence

from ..errors import BadRequestError, ServerClosedError, ServingError
from . import heap
from .batcher import Lane
from .gate import Gate
from .policy import BatchingPolicy, explicit
from .request import Request, check_feeds, signature
from .runner import as_runner, input_specs_of, row_specs
from .stats import RunCount

DEFAULT_MAX_DELAY = 0.002


class Server:
    """See the module docstring.  ``models`` maps a name to a runner or a Session
    (options per model via :meth:`add_model`), or is a
    :class:`~hetpart.runtime.MultiSession` (each model by its name, at its priority:
    models of a joint plan, issue 20); ``max_delay`` (seconds) is the longest a request
    waits for others to join its batch; ``freeze_heap`` freezes the Python heap at the
    first request (see the module docstring); ``hold`` (seconds, None: the batcher's
    :data:`~.batcher.HOLD_WHILE_BUSY`) is how long a partial batch formed while another
    batch of its model runs may wait for company (:mod:`.batcher`; models with
    ``instances`` > 1 only)."""

    def __init__(self, models: Mapping[str, Any] | None = None, *, max_delay: float = DEFAULT_MAX_DELAY,
                 max_concurrent_batches: int | None = None, freeze_heap: bool = True,
                 hold: float | None = None):
        if max_delay < 0:
            raise ServingError(f"max_delay must be >= 0 seconds, got {max_delay}")
        if hold is not None and hold < 0:
            raise ServingError(f"hold must be >= 0 seconds, got {hold}")
        self.max_delay, self.hold = max_delay, hold
        self._gate = Gate(max_concurrent_batches) if max_concurrent_batches else None
        self._lanes: dict[str, Lane] = {}
        self._specs: dict[str, list | None] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._running = RunCount()  # batches running now, across the models
        self._freeze_pending = freeze_heap  # freeze at the first request (setup is done by then)
        try:
            if hasattr(models, "sessions") and hasattr(models, "names"):  # a MultiSession: its models and priorities
                for name, session in zip(models.names, models.sessions):
                    self.add_model(name, session, priority=models.priorities.get(name, 0))
            else:
                for name, runner in (models or {}).items():
                    self.add_model(name, runner)
        except BaseException:
            self.close(timeout=0)
            raise

    def add_model(self, name: str, runner: Any, *, max_batch: int | None = None, max_delay: float | None = None,
                  priority: int = 0, instances: int = 1, inputs=None, warm_up: bool = True,
                  batching: BatchingPolicy | Sequence[int] | None = None, hold: float | None = None) -> None:
        """Serve ``runner`` (a :class:`~.runner.Runner` or a Session) as ``name``.

        ``max_batch`` caps the batch below the runner's own; ``max_delay`` overrides the
        server's; ``priority`` (higher first) matters where ``max_concurrent_batches``
        makes models wait for each other; ``instances`` batches of this model may run
        at once (a Session overlaps up to its ``slots`` runs); ``inputs`` (specs with
        the batch dim first, e.g. ``compiled.inputs``) checks requests at submit when
        the runner states none; ``warm_up`` calls the runner's ``warm_up()`` (if it
        has one) before the model takes requests, so no request pays for loading code
        or capturing CUDA graphs (a bucketed model: every bucket).  ``batching``: the
        batch sizes this model runs at, a :class:`~.policy.BatchingPolicy` (e.g.
        :func:`~.policy.measure`: only the bucket builds that pay; ``(1,)``: unbatched,
        no ``max_delay`` wait) or the user's own list of sizes, which is used as given
        (:func:`~.policy.explicit`); None: any size up to ``max_batch``.  Shown in
        :meth:`stats` as ``batching``.  ``hold`` overrides the server's (see :class:`Server`).
        """
        if batching is not None and not isinstance(batching, BatchingPolicy):
            batching = explicit(batching)
        runner = as_runner(runner, max_batch)
        warm = getattr(runner, "warm_up", None)
        if warm_up and callable(warm):
            warm()
        if instances < 1:
            raise ServingError(f"model '{name}': instances must be >= 1, got {instances}")
        specs = inputs if inputs is not None else input_specs_of(runner)
        with self._lock:
            if self._closed:
                raise ServerClosedError("the server is closed; it takes no new model")
            if name in self._lanes:
                raise ServingError(f"a model named '{name}' is served already")
            self._specs[name] = row_specs(specs) if specs is not None else None
            self._lanes[name] = Lane(name, runner, max_delay=self.max_delay if max_delay is None else max_delay,
                                     priority=priority, instances=instances, gate=self._gate, policy=batching,
                                     running=self._running, hold=self.hold if hold is None else hold)

    @property
    def models(self) -> list[str]:
        return list(self._lanes)

    def max_batch(self, model: str) -> int:
        return self._lane(model).max_batch

    def inputs(self, model: str) -> list | None:
        """What one request row of ``model`` takes (:class:`~.runner.RowSpec`: name, shape
        after the batch dim, dtype), or None where the runner states nothing."""
        self._lane(model)
        specs = self._specs[model]
        return list(specs) if specs is not None else None

    # --- requests ----------------------------------------------------------------
    def submit(self, model: str, feeds: Mapping[str, Any]) -> Future:
        """Queue one request; a Future of ``{output name: its rows}``.  Never blocks on the model."""
        lane = self._lane(model)
        if self._closed:
            raise ServerClosedError(f"model '{model}': the server is closed; it accepts no request")
        if self._freeze_pending:
            self._freeze_heap()
        try:
            arrays, rows = check_feeds(model, feeds, self._specs[model], lane.max_batch)
        except BadRequestError:
            lane.stats.count("rejected")
            raise
        future: Future = Future()
        request = Request(arrays, rows, signature(arrays), future)
        future.timing = request.timing  # type: ignore[attr-defined]  # where its time goes (RequestTiming)
        lane.put(request)
        return future

    def _freeze_heap(self) -> None:
        """Freeze the heap once, at the first request (see the module docstring)."""
        with self._lock:
            if self._freeze_pending:
                self._freeze_pending = False
                heap.freeze()

    def infer(self, model: str, feeds: Mapping[str, Any], timeout: float | None = None) -> dict:
        """``submit(model, feeds).result(timeout)``."""
        return self.submit(model, feeds).result(timeout)

    def _lane(self, model: str) -> Lane:
        lane = self._lanes.get(model)
        if lane is None:
            raise BadRequestError(f"no model named '{model}' is served; served: {', '.join(self._lanes) or 'none'}",
                                  model)
        return lane

    # --- statistics --------------------------------------------------------------
    def stats(self) -> dict[str, dict]:
        """Per model: counts, batch-size histograms, queue wait and run time percentiles (ms),
        and ``batching``: its policy's record (:meth:`~.policy.BatchingPolicy.record`) or None."""
        out = {}
        for name, lane in self._lanes.items():
            out[name] = lane.stats.snapshot()
            out[name]["batching"] = lane.policy.record() if lane.policy is not None else None
        return out

    # --- lifetime ----------------------------------------------------------------
    def close(self, timeout: float | None = None, *, drain: bool = True) -> bool:
        """Stop accepting; answer queued and running requests for up to ``timeout`` seconds
        (None: as long as it takes; ``drain=False``: queued ones are rejected at once);
        then reject every request still unanswered with ServerClosedError.  True if all
        were answered by their runs.  Idempotent."""
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.stop_accepting()
        if not drain:
            for lane in lanes:
                lane.reject_rest("the server closed before this request ran", running=False)
        for lane in lanes:
            lane.drain()
        deadline = None if timeout is None else time.perf_counter() + timeout
        answered = all([lane.wait_idle(deadline) for lane in lanes])
        for lane in lanes:  # a run still going past the deadline: its callers stop waiting
            lane.reject_rest(f"the server closed (timeout {timeout} s) before this request was answered")
        return answered and drain

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(models: Mapping[str, Any], **options) -> Server:
    """A :class:`Server` for ``models`` (name -> runner or Session); see :class:`Server`."""
    return Server(models, **options)
