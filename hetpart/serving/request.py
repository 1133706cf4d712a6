"""One request: its feeds checked at submit, and the future its answer goes to.

A request's feeds are ``{input name: host array}`` **with a leading batch dim**: one row is
an array of shape ``(1, *row_shape)``, as a batch-1 ``Session.run`` takes it; a request
may carry up to ``max_batch`` rows (``(n, *row_shape)``) and is never split across
batches.  Its answer has the same number of rows in every output.

:func:`check_feeds` refuses a bad request before it is queued, with a
:class:`~hetpart.errors.BadRequestError` naming each input at fault, so a bad request
never reaches (and never fails) a batch.  Requests whose feeds differ in a dim the
model leaves open (or, with no specs, in anything but the batch dim) are batched
separately: their :func:`signature` differs.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import BadRequestError
from .runner import RowSpec


PHASES = ("queue", "form", "run", "deliver")
"""A request's time at the server, in order: ``queue`` (submit -> a batcher takes it
into a batch), ``form`` (taken -> its batch's run starts: waiting for company, for the
priority gate, and concatenating the feeds), ``run`` (the runner's run and the split of
its outputs), ``deliver`` (run ended -> its caller saw the answer: the futures of the
requests before it in the batch answered first, with their callbacks, then its own)."""


@dataclass
class RequestTiming:
    """Where one request's time went: ``time.perf_counter()`` stamps set by the server
    as the request moves (None: not reached yet), the rows of the batch it ran in, and
    how many batches of the server were running when its batch started (itself
    included).  A :class:`~.server.Server`'s futures carry theirs as ``future.timing``.

    Invariant: ``submitted <= taken <= started <= ran <= settled`` once set, so
    :meth:`phases_ms` of an answered request sums to ``answered - submitted``
    (telescoping; ``lag`` adds ``submitted - scheduled`` in front where given)."""

    submitted: float
    taken: float | None = None
    started: float | None = None
    ran: float | None = None
    settled: float | None = None
    batch_rows: int = 0
    concurrent: int = 0

    def phases_ms(self, answered: float, scheduled: float | None = None) -> dict[str, float] | None:
        """``{phase: ms}`` of :data:`PHASES` (``lag`` first where ``scheduled``, the time the
        caller meant to submit, is given) up to ``answered`` (when the caller saw the
        answer); None if the request never reached its run's end."""
        if self.taken is None or self.started is None or self.ran is None:
            return None
        out = {"lag": (self.submitted - scheduled) * 1e3} if scheduled is not None else {}
        out.update(queue=(self.taken - self.submitted) * 1e3, form=(self.started - self.taken) * 1e3,
                   run=(self.ran - self.started) * 1e3, deliver=(answered - self.ran) * 1e3)
        return out


@dataclass
class Request:
    """A queued request.  ``arrival`` is ``time.perf_counter()`` at submit; ``timing``
    its :class:`RequestTiming` (made from ``arrival`` when not given)."""

    feeds: dict[str, np.ndarray]
    rows: int
    signature: tuple
    future: Future
    arrival: float = field(default_factory=time.perf_counter)
    timing: RequestTiming | None = None

    def __post_init__(self):
        if self.timing is None:
            self.timing = RequestTiming(self.arrival)


def signature(feeds: Mapping[str, np.ndarray]) -> tuple:
    """What requests batched together must share: input names, row shapes, dtypes."""
    return tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in feeds.items()))


def check_feeds(model: str, feeds: Any, specs: list[RowSpec] | None, max_batch: int) -> tuple[dict, int]:
    """``(feeds as arrays, rows)``, or BadRequestError naming every input at fault."""
    if not isinstance(feeds, Mapping) or not feeds:
        raise BadRequestError(f"model '{model}': feeds must be a non-empty dict of input name -> array, "
                              f"got {type(feeds).__name__}", model)
    problems: list[str] = []
    bad: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    by_name = {s.name: s for s in specs} if specs is not None else None
    if by_name is not None:
        missing = [n for n in by_name if n not in feeds]
        unknown = [n for n in feeds if n not in by_name]
        for n in missing:
            problems.append(f"input '{n}' is missing")
        for n in unknown:
            problems.append(f"'{n}' is not an input of this model")
        bad += missing + [str(n) for n in unknown]
    for name, value in feeds.items():
        spec = by_name.get(name) if by_name is not None else None
        if by_name is not None and spec is None:
            continue
        problem = _check_one(name, value, spec)
        if isinstance(problem, str):
            problems.append(problem)
            bad.append(name)
        else:
            arrays[name] = problem
    rows = _rows(arrays, problems, bad, max_batch) if not problems else 0
    if problems:
        expected = ("; the model's inputs (per row, after the batch dim) are: " +
                    ", ".join(f"'{s.name}' {list(s.shape)} {s.dtype}" for s in specs)) if specs else ""
        raise BadRequestError(f"model '{model}': bad feeds: " + "; ".join(problems) + expected, model, bad)
    return arrays, rows


def _check_one(name: str, value: Any, spec: RowSpec | None) -> np.ndarray | str:
    """The feed as an array, or a sentence saying what is wrong with it."""
    if not isinstance(value, np.ndarray):
        if not hasattr(value, "__array__") and not isinstance(value, (list, tuple)):
            return f"input '{name}' must be a numpy array, got {type(value).__name__}"
        try:
            value = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - e.g. a GPU tensor: the caller's input, told back to them
            return f"input '{name}' cannot be read as a host numpy array ({type(exc).__name__}: {exc})"
    if value.dtype == object:
        return f"input '{name}' is an object array; give numbers"
    if value.ndim == 0:
        return f"input '{name}' has no batch dim (a row is shape (1, ...))"
    if spec is None:
        return value
    row = value.shape[1:]
    if len(row) != len(spec.shape) or any(not isinstance(e, str) and int(e) != d for e, d in zip(spec.shape, row)):
        return (f"input '{name}' has shape {list(value.shape)}, expected [n, {', '.join(map(str, spec.shape))}]"
                .replace("[n, ]", "[n]"))
    if not _same_dtype(value.dtype, spec.dtype):
        return f"input '{name}' is {value.dtype}, expected {spec.dtype}"
    return value


def _same_dtype(dtype: np.dtype, expected: str) -> bool:
    if str(dtype) == expected:
        return True
    try:
        return dtype == np.dtype(expected)
    except TypeError:  # a dtype numpy does not know by that name (e.g. bfloat16)
        return False


def _rows(arrays: dict, problems: list, bad: list, max_batch: int) -> int:
    counts = {n: a.shape[0] for n, a in arrays.items()}
    distinct = set(counts.values())
    if len(distinct) != 1:
        problems.append("inputs disagree on the batch dim: " + ", ".join(f"'{n}' {c}" for n, c in counts.items()))
        bad.extend(counts)
        return 0
    rows = distinct.pop()
    if not 1 <= rows <= max_batch:
        problems.append(f"a request carries 1..{max_batch} rows (dim 0), got {rows}")
        bad.extend(counts)
    return rows
