"""BucketedSession: run a model compiled per shape bucket on feeds of any size up to the largest.

The runner interface (what a server or dynamic batcher needs)::

    runner = hetpart.Session(hetpart.load_compiled("out/"))   # a BucketedSession
    runner.buckets     # [{"batch": 1}, {"batch": 2}, ...]: every bucket, smallest first
    runner.max_batch   # the largest batch bucket (None when the batch dim is not bucketed)
    runner.run(feeds)  # {ONNX output name: numpy array}, rows = the feed's rows
    runner.submit(feeds)  # the same as a concurrent.futures.Future (MultiSession.run uses it)
    runner.close()     # or `with`; also what a plain Session offers (thread-safe run)

``run`` reads the feed's size along every bucketed dim, takes the smallest bucket
holding it (:meth:`~hetpart.contracts.buckets.BucketSpec.choose`), pads each input
with zeros along the bucketed dims up to the bucket's sizes, runs that bucket's
:class:`~.session.Session`, and slices back every output axis that follows a
bucketed dim (``BucketSpec.output_axes``, from ONNX's symbolic output shapes) to the
feed's size.  Exact along the batch dim of an inference model (rows independent);
along a sequence dim only if the model masks padded positions (which is why such a
dim is bucketed only when asked for).  A feed larger than the largest bucket is a
:class:`~hetpart.errors.ShapeError` naming the dim and the sizes built: it is not
split (a batcher sends at most ``max_batch`` rows).

Each bucket's Session opens on first use (worker threads and buffers only for the
shapes that are run) and stays open until ``close()``; ``run`` may be called from
many threads, as a Session's.  Feeds are host arrays (anything ``numpy.asarray``
takes).  Opening a bucket loads its code and, on a GPU, captures its CUDA graphs on
the first run: tens of milliseconds a server must not spend on a live request, so
:meth:`BucketedSession.warm_up` opens and runs every bucket once up front (a
:class:`~hetpart.serving.Server` calls it when the model is added).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from ..compiler.bucketed import Bucket, BucketedModel
from ..contracts.buckets import bucket_label, rows_of_batch
from ..errors import RuntimeFailure
from .feeds import check_feeds, zero_feeds
from .session import Session


class BucketedSession:
    """A :class:`BucketedModel` ready to run; see the module docstring.  Keyword
    arguments (``slots``, ``handoff``, ...) go to every bucket's :class:`Session`."""

    def __init__(self, model: BucketedModel, **session_kwargs):
        self.model = model
        self.spec = model.spec
        self._kwargs = session_kwargs
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.last_bucket: dict[str, int] | None = None  # the bucket of the last run (tests, logs)

    @property
    def buckets(self) -> list[dict[str, int]]:
        return [dict(b.sizes) for b in self.model.buckets]

    @property
    def max_batch(self) -> int | None:
        return self.spec.max_batch

    @property
    def compiled(self) -> BucketedModel:
        return self.model

    def run(self, feeds) -> dict[str, np.ndarray]:
        """The outputs for ``feeds``, computed on the smallest bucket that holds them."""
        session, padded, actual, sizes = self._prepare(feeds)
        return self._unpadded(session.run(padded), actual, sizes)

    def submit(self, feeds) -> Future:
        """Start a run (see :meth:`Session.submit`); a Future of its unpadded outputs,
        with ``.stats`` (the bucket's run's RunStats) once done."""
        session, padded, actual, sizes = self._prepare(feeds)
        inner, outer = session.submit(padded), Future()

        def finish(done: Future) -> None:
            try:
                outer.stats = getattr(done, "stats", None)
                outer.set_result(self._unpadded(done.result(), actual, sizes))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                outer.set_exception(exc)

        inner.add_done_callback(finish)
        return outer

    def warm_up(self) -> list[dict[str, int]]:
        """Open every bucket's Session and run it once on zeros of the bucket's input
        shapes (zeros are in range for index inputs); returns the buckets run, smallest
        first.  A bucket with an input of symbolic shape (a dim left free, not
        bucketed) is only opened: no size to run it at is known.  Afterwards no bucket
        pays for opening, and a static one not for its first run, on a request."""
        warmed = []
        for bucket in self.model.buckets:
            session = self._session(bucket)
            zeros = zero_feeds(bucket.compiled.inputs)
            if zeros is not None:
                session.run(zeros)
                warmed.append(dict(bucket.sizes))
        return warmed

    @property
    def open_buckets(self) -> list[dict[str, int]]:
        """The buckets whose Session is open (run at least once, or warmed)."""
        with self._lock:
            return [dict(b.sizes) for b in self.model.buckets if b.directory in self._sessions]

    def _prepare(self, feeds):
        """(the bucket's session, the padded feeds, the feed's sizes, the bucket's sizes)."""
        arrays = self._arrays(feeds)
        # names, ranks, fixed dims and dtypes checked against the model's symbolic inputs, so a
        # mistake is reported as the caller fed it, not as the bucket's padded feed
        check_feeds(arrays, self.model.inputs, gpu=True)
        actual = self._actual_sizes(arrays)
        sizes = self.spec.choose(actual)
        self.last_bucket = dict(sizes)
        return self._session(self.model.bucket(sizes)), self._padded(arrays, sizes), actual, sizes

    @property
    def batch_columns(self) -> dict[str, int]:
        """Outputs whose rows name their batch row in a column (see BucketSpec): a
        server splits them by it (the runner interface's optional ``batch_columns``)."""
        return dict(self.spec.batch_columns)

    def _unpadded(self, outputs: dict, actual: dict[str, int], sizes: dict[str, int]) -> dict[str, np.ndarray]:
        if actual == sizes:
            return outputs
        rows = actual.get(self.spec.batch, 0)
        return {name: rows_of_batch(y, self.spec.batch_columns[name], 0, rows)
                if name in self.spec.batch_columns else self._sliced(name, y, actual, sizes)
                for name, y in outputs.items()}

    # --- one run ---------------------------------------------------------------------
    def _arrays(self, feeds) -> dict:
        if not hasattr(feeds, "items"):
            raise RuntimeFailure(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        return {name: np.asarray(v) if name in self.spec.input_axes else v for name, v in feeds.items()}

    def _actual_sizes(self, arrays: dict) -> dict[str, int]:
        """Dim name -> the feeds' size along it; RuntimeFailure when a feed lacks an
        axis or two feeds disagree on one dim."""
        actual: dict[str, int] = {}
        for name, axes in self.spec.input_axes.items():
            if name not in arrays:
                continue  # the bucket's Session names every missing input
            shape = arrays[name].shape
            for axis, dim in axes.items():
                if axis >= len(shape):
                    raise RuntimeFailure(f"bad feeds: input '{name}' has shape {list(shape)}; the model's is "
                                         f"{self._declared(name)}")
                if actual.setdefault(dim, shape[axis]) != shape[axis]:
                    raise RuntimeFailure(f"bad feeds: dim '{dim}' is {actual[dim]} in one input and {shape[axis]} "
                                         f"in input '{name}'; inputs sharing a dim must agree")
        missing = [d for d in self.spec.sizes if d not in actual]
        if missing:
            raise RuntimeFailure(f"bad feeds: no input gives the size of dim(s) {', '.join(missing)}; the model's "
                                 f"inputs are {', '.join(self.spec.input_axes)}")
        if any(n == 0 for n in actual.values()):
            raise RuntimeFailure(f"bad feeds: an empty dim ({bucket_label(actual)}); send at least one row")
        return actual

    def _padded(self, arrays: dict, sizes: dict[str, int]) -> dict:
        """Each bucketed input zero-padded along its bucketed axes to ``sizes``."""
        out = dict(arrays)
        for name, axes in self.spec.input_axes.items():
            a = arrays.get(name)
            if a is None:
                continue
            target = tuple(sizes[axes[i]] if i in axes else n for i, n in enumerate(a.shape))
            if target != a.shape:
                padded = np.zeros(target, dtype=a.dtype)
                padded[tuple(slice(0, n) for n in a.shape)] = a
                out[name] = padded
        return out

    def _sliced(self, name: str, y: np.ndarray, actual: dict[str, int], sizes: dict[str, int]) -> np.ndarray:
        axes = self.spec.output_axes.get(name, {})
        if not any(actual[d] != sizes[d] for d in axes.values()):
            return y
        index = tuple(slice(0, actual[axes[i]]) if i in axes else slice(None) for i in range(y.ndim))
        return np.ascontiguousarray(y[index])

    def _declared(self, name: str) -> list:
        return next((list(t.shape) for t in self.model.inputs if t.name == name), [])

    def _session(self, bucket: Bucket) -> Session:
        with self._lock:
            if self._closed:
                raise RuntimeFailure("this session is closed; create a new Session to run again")
            session = self._sessions.get(bucket.directory)
            if session is None:
                session = self._sessions[bucket.directory] = Session(bucket.compiled, **self._kwargs)
            return session

    # --- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Close every bucket's Session (runs in flight finish first); idempotent."""
        with self._lock:
            self._closed = True
            sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            s.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "BucketedSession":
        if self._closed:  # `with` after close() fails here, not at its first run
            raise RuntimeFailure("this session is closed; create a new Session to run again")
        return self

    def __exit__(self, *exc) -> None:
        self.close()
