"""What the server runs: any object with ``run(feeds) -> dict`` over a leading batch dim and ``max_batch``.

The :class:`Runner` protocol is all :class:`~hetpart.serving.Server` needs from a model:

* ``max_batch: int`` -- the most rows one ``run`` call may carry;
* ``run(feeds) -> {output name: array}`` -- ``feeds`` maps input name to an array whose
  dim 0 is the batch (1..max_batch rows); every output the server splits back has
  that many rows in dim 0, row ``i`` computed from input row ``i`` only.

A bucketed session (compiled once per batch bucket, padding up to the next bucket)
satisfies it as it is.  Today's :class:`~hetpart.runtime.Session`, compiled for one
fixed batch ``B``, is wrapped by :class:`SessionRunner`: ``max_batch = B``, and a
smaller batch is padded to ``B`` by repeating its first row (a real input, so index
inputs stay in range), and the outputs cut back to the rows asked for.

A runner may offer ``warm_up()``: the server calls it when the model is added, so
code loading and CUDA-graph capture happen before the first request, not on it
(a bucketed session opens and runs every bucket; :class:`SessionRunner` runs its
session once on zeros when its input shapes are static).

A runner may name ``batch_columns`` (output name -> column): outputs without a batch
axis whose rows carry the batch row they came from (NonMaxSuppression's (batch,
class, box) rows); the server splits them by that column.  A bucketed session built
with them (:func:`hetpart.bucket_batches`, :func:`hetpart.nms_batch_columns`) does.

A runner may also say what a request must look like (``inputs``: specs with ``name``,
``shape`` whose dim 0 is the batch, ``dtype``, as ``CompiledModel.inputs``); the
server then checks every request's feeds against them at submit.  A runner that can
tell it cannot be served (e.g. a data-parallel session whose batch is not on axis 0)
offers ``check_servable()``, raising :class:`~hetpart.errors.ServingError`;
:func:`as_runner` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from ..errors import RuntimeFailure, ServingError


@runtime_checkable
class Runner(Protocol):
    """A model the server can batch for (see the module docstring)."""

    max_batch: int

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True)
class RowSpec:
    """One input as a single request row sees it: ``shape`` without the batch dim
    (a string dim accepts any size), ``dtype`` numpy's name (``float32``)."""

    name: str
    shape: tuple
    dtype: str


def row_specs(specs) -> list[RowSpec]:
    """Batched input specs (``name``, ``shape`` with the batch first, ``dtype``) as row specs."""
    out = []
    for s in specs:
        shape = tuple(s.shape)
        if not shape:
            raise ServingError(f"input '{s.name}' is a scalar: a served model's inputs need a batch dim")
        out.append(RowSpec(s.name, shape[1:], str(s.dtype)))
    return out


def input_specs_of(runner: Any):
    """The runner's batched input specs, if it states them (``inputs`` or ``compiled.inputs``); else None."""
    specs = getattr(runner, "inputs", None)
    if specs is None and getattr(runner, "compiled", None) is not None:
        specs = getattr(runner.compiled, "inputs", None)
    return list(specs) if specs is not None else None


class SessionRunner:
    """A fixed-batch :class:`~hetpart.runtime.Session` as a :class:`Runner`.

    ``max_batch`` is the batch the model was compiled for (the leading dim every input
    shares); a model whose batch dim is symbolic takes any batch, so ``max_batch`` must
    be given.  Runs of fewer rows are padded (first row repeated) and cut back.  The
    session stays the caller's: closing the runner does not close it.
    """

    def __init__(self, session, max_batch: int | None = None):
        self.session = session
        self.inputs = list(session.compiled.inputs)
        leading = {s.shape[0] if len(s.shape) else None for s in self.inputs}
        if len(leading) != 1 or None in leading:
            raise ServingError(f"model '{_name(session)}' has no batch dim shared by every input "
                               f"(leading dims {sorted(map(str, leading))}); it cannot be batched")
        dim = leading.pop()
        self.fixed_batch = int(dim) if not isinstance(dim, str) else None
        if self.fixed_batch is None and max_batch is None:
            raise ServingError(f"model '{_name(session)}' has a symbolic batch dim '{dim}': "
                               "give max_batch for it")
        self.max_batch = int(max_batch if max_batch is not None else self.fixed_batch)
        if self.max_batch < 1 or (self.fixed_batch is not None and self.max_batch > self.fixed_batch):
            raise ServingError(f"model '{_name(session)}': max_batch must be 1..{self.fixed_batch or 'any'}, "
                               f"got {self.max_batch}")

    def warm_up(self) -> bool:
        """Run the session once on zeros (its first run loads code and captures CUDA
        graphs); False, nothing run, where an input's shape is symbolic."""
        from ..runtime.feeds import zero_feeds  # here: importing the server loads no TVM

        zeros = zero_feeds(self.inputs)
        if zeros is None:
            return False
        self.session.run(zeros)
        return True

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _rows(feeds)
        if rows > self.max_batch:
            raise RuntimeFailure(f"model '{_name(self.session)}': {rows} rows, at most {self.max_batch}")
        pad = 0 if self.fixed_batch is None else self.fixed_batch - rows
        if pad:
            feeds = {n: np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) for n, a in feeds.items()}
        outputs = self.session.run(feeds)
        if not pad:
            return outputs
        return {n: _cut(n, y, rows + pad, rows, self.session) for n, y in outputs.items()}


def _cut(name: str, y: np.ndarray, padded: int, rows: int, session) -> np.ndarray:
    if y.ndim == 0 or y.shape[0] != padded:
        raise RuntimeFailure(f"model '{_name(session)}': output '{name}' {list(y.shape)} has no batch dim of "
                             f"{padded}; a padded batch cannot be cut back (serve it with max_batch=1)")
    return y[:rows]


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


def _name(session) -> str:
    plan = getattr(session.compiled, "plan", None)
    return getattr(plan, "model", None) or "model"


class _Capped:
    """A runner served with a smaller ``max_batch`` than it allows."""

    def __init__(self, runner, max_batch: int):
        self.runner = runner
        self.max_batch = max_batch
        self.inputs = input_specs_of(runner)

    def run(self, feeds):
        return self.runner.run(feeds)

    @property
    def batch_columns(self):
        return getattr(self.runner, "batch_columns", None)

    def warm_up(self):
        warm = getattr(self.runner, "warm_up", None)
        return warm() if callable(warm) else None


def as_runner(obj: Any, max_batch: int | None = None) -> Runner:
    """``obj`` as a :class:`Runner`: a Session (or anything with ``compiled`` and ``run``
    but no ``max_batch``) is wrapped in :class:`SessionRunner`; a runner is used as is,
    or capped at ``max_batch`` when that is smaller than its own."""
    if not callable(getattr(obj, "run", None)):
        raise ServingError(f"a served model needs a run(feeds) method; got {type(obj).__name__}")
    check = getattr(obj, "check_servable", None)
    if callable(check):  # a runner that knows when it cannot be served (ServingError saying why)
        check()
    own = getattr(obj, "max_batch", None)
    if own is None:
        if getattr(obj, "compiled", None) is None:
            raise ServingError(f"{type(obj).__name__} has run() but no max_batch: give it one "
                               "(the most rows one run may carry)")
        return SessionRunner(obj, max_batch)
    if max_batch is None or max_batch == own:
        return obj
    if not 1 <= max_batch <= own:
        raise ServingError(f"max_batch must be 1..{own} for this runner, got {max_batch}")
    return _Capped(obj, max_batch)
