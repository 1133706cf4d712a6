"""DataParallelSession: one batch run on the GPU build and the CPU build at once, rows merged in order.

::

    with hetpart.DataParallelSession(hetpart.compile_data_parallel(dp)) as s:
        outputs = s.run(feeds)            # {ONNX output name: array}, all B rows
        s.last_side_seconds               # {"cuda": s, "cpu": s}: each side's run, measured

``run`` cuts every input with a batch axis (:class:`~hetpart.contracts.batch_axes.BatchAxes`)
into the first ``b_gpu`` rows and the other ``b_cpu``, submits the GPU side to its
:class:`~.session.Session` (worker threads, its own CUDA stream -- or its simulation),
runs the CPU side on the calling thread meanwhile, waits for both, and concatenates
each output along its batch axis, GPU rows first.  Inputs without a batch axis go whole
to both sides.  The GPU side's Session sleeps while it waits for the GPU
(``spin_wait=False``), so the CPU side keeps every core.

A feed must have exactly the plan's ``B`` rows (each side is compiled for its share);
a different count is a :class:`~hetpart.errors.RuntimeFailure` that says so.  A side
that fails raises its RuntimeFailure once the other side has finished; the session
stays usable.  ``run`` may be called from several threads (each Session is).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ..errors import RuntimeFailure
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
        return self.batch

    @property
    def split(self) -> list[tuple[str, int]]:
        """(device, rows) of each side, in row order."""
        return [(d, n) for d, n, _ in self._sessions]

    def run(self, feeds) -> dict[str, np.ndarray]:
        """All ``B`` rows' outputs, each side's rows computed by its build."""
        if not self._sessions:
            raise RuntimeFailure("this session is closed; create a new DataParallelSession to run again")
        parts = self.split_feeds(feeds)
        start = time.perf_counter()
        seconds: dict[str, float] = {}
        (first_dev, _, first), rest = self._sessions[0], self._sessions[1:]
        if not rest:
            out = first.run(parts[0])
            self.last_side_seconds = {first_dev: time.perf_counter() - start}
            return out
        (second_dev, _, second), = rest
        future = first.submit(parts[0])
        future.add_done_callback(lambda _: seconds.__setitem__(first_dev, time.perf_counter() - start))
        try:
            second_out = second.run(parts[1])
            seconds[second_dev] = time.perf_counter() - start
        except BaseException:
            future.exception()  # wait for the GPU side: nothing of this run is left in flight
            raise
        first_out = future.result()
        self.last_side_seconds = seconds
        return self.merge([first_out, second_out])

    def split_feeds(self, feeds) -> list[dict]:
        """``feeds`` cut into each side's rows, in row order; RuntimeFailure when a feed
        with a batch axis does not have exactly ``B`` rows along it."""
        if not hasattr(feeds, "items"):
            raise RuntimeFailure(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        arrays = {n: np.asarray(v) for n, v in feeds.items()}
        for name, axis in self.axes.split_inputs.items():
            a = arrays.get(name)
            if a is not None and (a.ndim <= axis or a.shape[axis] != self.batch):
                raise RuntimeFailure(f"bad feeds: input '{name}' has shape {list(a.shape)}, but this data-parallel "
                                     f"build splits exactly {self.batch} rows along axis {axis}; send {self.batch} "
                                     "rows (pad a smaller batch, or build the split for its size)")
        parts, begin = [], 0
        for _, rows, _ in self._sessions:
            part = {}
            for name, a in arrays.items():
                axis = self.axes.inputs.get(name)
                if axis is None:
                    part[name] = a
                else:
                    index = tuple(slice(begin, begin + rows) if i == axis else slice(None) for i in range(a.ndim))
                    part[name] = np.ascontiguousarray(a[index])
            parts.append(part)
            begin += rows
        return parts

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
