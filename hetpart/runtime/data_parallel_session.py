"""DataParallelSession: one batch run on the GPU build and the CPU build at once, rows merged in order.

::

    with hetpart.DataParallelSession(hetpart.compile_data_parallel(dp)) as s:
        outputs = s.run(feeds)            # {ONNX output name: array}, all B rows
        future = s.submit(feeds)          # the same without waiting: a Future of it
        s.last_side_seconds               # {"cuda": s, "cpu": s}: each side's run, measured

``run`` cuts every input with a batch axis (:class:`~hetpart.contracts.batch_axes.BatchAxes`)
into the first ``b_gpu`` rows and the other ``b_cpu``, submits the GPU side to its
:class:`~.session.Session` (worker threads, its own CUDA stream -- or its simulation),
runs the CPU side on the calling thread meanwhile, waits for both, and concatenates
each output along its batch axis, GPU rows first.  Inputs without a batch axis go whole
to both sides.  The GPU side's Session sleeps while it waits for the GPU
(``spin_wait=False``), so the CPU side keeps every core.

A feed carries 1..``B`` rows (the plan's batch; ``max_batch``): ``B`` rows go to
the sides as planned.  Fewer rows are not split proportionally -- each side is
compiled for a fixed share and costs the same however few real rows it gets -- but
placed where they finish first (:meth:`DataParallelSession.rows_per_side`): all on
one side when they fit there, the side the plan predicts faster first, so the other
side does not run; else the GPU side full and the rest on the CPU side.  A side given
fewer rows than its share is padded by repeating its first row (a real input, so index
inputs stay in range) and its outputs cut back, as
:class:`~hetpart.serving.SessionRunner` does; rows are independent, so the real rows'
outputs are those of the whole model.  More than ``B`` rows, or inputs carrying
different counts, is a :class:`~hetpart.errors.RuntimeFailure` that says so.

So the session is a serving :class:`~hetpart.serving.Runner` as it is:
``hetpart.Server({"m": dp_session})`` batches requests up to ``B`` rows and runs them
here (:meth:`check_servable`: every input and output must have its batch on axis 0;
``inputs`` states what a request takes).  A side that fails raises its RuntimeFailure
once the other side has finished; the session stays usable.  ``run`` may be called
from several threads (each Session is).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np

from ..compiler.artifact import TensorSpec
from ..errors import RuntimeFailure, ServingError
from .session import Session


class DataParallelSession:
    """A :class:`~hetpart.compiler.data_parallel.DataParallelModel` ready to run; see the
    module docstring.  Keyword arguments (``slots``, ``handoff``, ...) go to both Sessions."""

    def __init__(self, model, **session_kwargs):
        self.model = model
        self.axes = model.axes
        self.batch = model.batch
        self.last_side_seconds: dict[str, float] = {}
        self._sessions: list[tuple[str, int, Session]] = []
        self._lock = threading.Lock()
        try:
            for device, rows, compiled in model.sides():
                kwargs = dict(session_kwargs)
                if device == "cuda" and len(model.sides()) > 1:
                    kwargs.setdefault("spin_wait", False)  # leave the cores to the CPU side
                self._sessions.append((device, rows, Session(compiled, **kwargs)))
        except BaseException:
            self.close()
            raise

    @property
    def max_batch(self) -> int:
        """The most rows one :meth:`run` takes: the plan's batch ``B`` (a serving Runner's ``max_batch``)."""
        return self.batch

    @property
    def split(self) -> list[tuple[str, int]]:
        """(device, rows) of each side, in row order."""
        return [(d, n) for d, n, _ in self._sessions]

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs at batch ``B`` (name, shape, dtype; a side's shapes with its
        batch axis set to ``B``): what a serving Server checks requests against."""
        _, _, compiled = self.model.sides()[0]
        out = []
        for spec in compiled.inputs:
            axis = self.axes.inputs.get(spec.name)
            shape = tuple(self.batch if i == axis else d for i, d in enumerate(spec.shape))
            out.append(TensorSpec(spec.name, shape, spec.dtype))
        return out

    def check_servable(self) -> None:
        """Raise ServingError unless every input and output has its batch on axis 0 (what
        :class:`~hetpart.serving.Server` concatenates requests along and cuts answers by)."""
        shared = [n for n, a in self.axes.inputs.items() if a is None]
        moved = {n: a for n, a in {**self.axes.split_inputs, **self.axes.outputs}.items() if a != 0}
        if shared or moved:
            what = [f"input '{n}' has no batch axis" for n in shared]
            what += [f"'{n}' has its batch on axis {a}" for n, a in moved.items()]
            raise ServingError(f"data-parallel model '{self.model.plan.model}' cannot be served: "
                               f"{'; '.join(what)}; a served model takes and returns its batch on axis 0 "
                               "(run it with DataParallelSession.run instead)")

    def rows_per_side(self, rows: int) -> list[int]:
        """How ``rows`` (1..B) real rows are shared out, per side in row order (0: that side
        does not run).  ``B`` rows: each side its compiled share.  Fewer: all on one side
        where they fit, the side predicted faster first (``plan.predicted``: ``gpu_s``,
        ``cpu_s``); else the GPU side full and the rest on the CPU side."""
        if not 1 <= rows <= self.batch:
            raise RuntimeFailure(f"this data-parallel build runs 1..{self.batch} rows, got {rows}")
        sizes = [n for _, n, _ in self._sessions]
        if rows == self.batch:
            return sizes
        predicted = self.model.plan.predicted or {}
        seconds = {"cuda": predicted.get("gpu_s"), "cpu": predicted.get("cpu_s")}
        order = sorted(range(len(sizes)), key=lambda i: (seconds.get(self._sessions[i][0]) or 0.0, i))
        for i in order:
            if rows <= sizes[i]:
                return [rows if j == i else 0 for j in range(len(sizes))]
        first = min(rows, sizes[0])
        return [first, rows - first]

    def run(self, feeds) -> dict[str, np.ndarray]:
        """The outputs of the feeds' rows (1..B along each input's batch axis), each side's
        rows computed by its build; a side given fewer rows than it was compiled for is
        padded (its first row repeated) and its outputs cut back."""
        shares, running = self._prepare(feeds)
        start = time.perf_counter()
        seconds: dict[str, float] = {}
        if len(running) == 1:
            dev, session, part = running[0]
            outs = [session.run(part)]
            seconds[dev] = time.perf_counter() - start
        else:
            (first_dev, first, first_part), (second_dev, second, second_part) = running
            future = first.submit(first_part)
            future.add_done_callback(lambda _: seconds.__setitem__(first_dev, time.perf_counter() - start))
            try:
                second_out = second.run(second_part)
                seconds[second_dev] = time.perf_counter() - start
            except BaseException:
                future.exception()  # wait for the GPU side: nothing of this run is left in flight
                raise
            outs = [future.result(), second_out]
        self.last_side_seconds = seconds
        return self._joined(outs, shares)

    def submit(self, feeds) -> Future:
        """Start a run without waiting: each side running submitted to its Session (both
        on their worker threads); a Future of what :meth:`run` returns.  Bad feeds and a
        closed session raise here; a side's failure is the Future's exception, set once
        every side of the run has finished."""
        shares, running = self._prepare(feeds)
        futures = []
        try:
            for _, session, part in running:
                futures.append(session.submit(part))
        except BaseException:
            for f in futures:
                f.exception()  # nothing of this run is left in flight
            raise
        outer, lock, left = Future(), threading.Lock(), [len(futures)]

        def finish(_: Future) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            failed = [f.exception() for f in futures if f.exception() is not None]
            try:
                if failed:
                    raise failed[0]
                outer.set_result(self._joined([f.result() for f in futures], shares))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                outer.set_exception(exc)

        for f in futures:
            f.add_done_callback(finish)
        return outer

    def _prepare(self, feeds) -> tuple[list[int], list[tuple[str, Session, dict]]]:
        """(real rows per side, (device, session, padded feeds) of each side that runs)."""
        if not self._sessions:
            raise RuntimeFailure("this session is closed; create a new DataParallelSession to run again")
        arrays = self._arrays(feeds)
        shares = self.rows_per_side(self._rows(arrays))
        parts = self.split_feeds(arrays, shares)
        running = [(dev, session, part) for (dev, _, session), part in zip(self._sessions, parts)
                   if part is not None]
        return shares, running

    def _joined(self, outs: list[dict], shares: list[int]) -> dict[str, np.ndarray]:
        """The running sides' outputs cut back to their real rows and merged in row order."""
        real = [n for n in shares if n]
        compiled = [n for (_, n, _), share in zip(self._sessions, shares) if share]
        return self.merge([self._cut(o, n, full) for o, n, full in zip(outs, real, compiled)])

    def _arrays(self, feeds) -> dict[str, np.ndarray]:
        if not hasattr(feeds, "items"):
            raise RuntimeFailure(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        return {n: np.asarray(v) for n, v in feeds.items()}

    def _rows(self, arrays: dict[str, np.ndarray]) -> int:
        """The rows every split input carries along its batch axis (one count, 1..B)."""
        counts = {}
        for name, axis in self.axes.split_inputs.items():
            a = arrays.get(name)
            if a is None:
                raise RuntimeFailure(f"bad feeds: input '{name}' is missing; the model takes "
                                     f"{', '.join(self.axes.inputs)}")
            if a.ndim <= axis or not 1 <= a.shape[axis] <= self.batch:
                raise RuntimeFailure(f"bad feeds: input '{name}' has shape {list(a.shape)}, but this data-parallel "
                                     f"build takes 1..{self.batch} rows along axis {axis}; send at most "
                                     f"{self.batch} rows per run (or build the split for a larger batch)")
            counts[name] = a.shape[axis]
        if len(set(counts.values())) > 1:
            raise RuntimeFailure(f"bad feeds: the inputs carry different numbers of rows {counts}")
        return next(iter(counts.values()))

    def split_feeds(self, feeds, shares: list[int] | None = None) -> list[dict | None]:
        """``feeds`` cut into each side's rows, in row order (``shares``: the real rows
        per side, default :meth:`rows_per_side`), each side's part padded to the rows it
        was compiled for by repeating its first row; None for a side given no rows."""
        arrays = self._arrays(feeds)
        if shares is None:
            shares = self.rows_per_side(self._rows(arrays))
        parts, begin = [], 0
        for (_, size, _), rows in zip(self._sessions, shares):
            if not rows:
                parts.append(None)
                continue
            part = {}
            for name, a in arrays.items():
                axis = self.axes.inputs.get(name)
                part[name] = a if axis is None else _pad(_rows_of(a, axis, begin, begin + rows), axis, size)
            parts.append(part)
            begin += rows
        return parts

    def _cut(self, outputs: dict, rows: int, size: int) -> dict:
        """A side's outputs cut back from its compiled ``size`` rows to the ``rows`` real ones."""
        if rows == size:
            return outputs
        return {n: _rows_of(y, self.axes.outputs[n], 0, rows) for n, y in outputs.items()}

    def merge(self, outputs: list[dict]) -> dict[str, np.ndarray]:
        """Each output's sides concatenated along its batch axis, in row order."""
        if len(outputs) == 1:
            return outputs[0]
        return {name: np.concatenate([o[name] for o in outputs], axis=self.axes.outputs[name])
                for name in outputs[0]}

    # --- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Close both Sessions (runs in flight finish first); idempotent."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for _, _, s in sessions:
            s.close()

    def __enter__(self) -> "DataParallelSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rows_of(a: np.ndarray, axis: int, begin: int, end: int) -> np.ndarray:
    """Rows ``begin:end`` of ``a`` along ``axis``, contiguous."""
    index = tuple(slice(begin, end) if i == axis else slice(None) for i in range(a.ndim))
    return np.ascontiguousarray(a[index])


def _pad(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``a`` grown to ``size`` rows along ``axis`` by repeating its first row (a real
    input, so index inputs stay in range)."""
    missing = size - a.shape[axis]
    if not missing:
        return a
    return np.concatenate([a, np.repeat(_rows_of(a, axis, 0, 1), missing, axis=axis)], axis=axis)
