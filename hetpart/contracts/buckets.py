"""Shape buckets: which symbolic dims a model is built for, at which sizes.

A model with symbolic input dims (``batch``, ``seq``) is compiled once per *bucket*:
one size for every bucketed dim.  :class:`BucketSpec` is the plain data the
importer derives (:func:`hetpart.importer.symbolic.bucket_spec`), the compiler
records in the bucketed manifest, and the runtime reads to pick a bucket and pad:

* ``sizes``: dim name -> the sizes built, ascending (the buckets are every
  combination of them, :meth:`BucketSpec.grid`);
* ``input_axes``: input name -> {axis: dim name}, where each bucketed dim sits;
* ``output_axes``: ONNX output name -> {axis: dim name}, the output axes that follow
  a bucketed dim (sliced back to the feed's size after a padded run);
* ``batch``: the name of the dim that is the batch (axis 0 of the inputs; padding it
  is exact when rows are independent), or ``""``; ``padded_exactly``: the dims the
  user accepted padding for although it may change results (a sequence dim: exact only
  if the model masks the padded positions);
* ``batch_columns``: ONNX output name -> the column of its rows that holds the batch
  row each came from (``NonMaxSuppression``'s ``selected_indices``: rows of (batch,
  class, box), column 0): such an output has no batch axis, but a padded run's rows
  are told apart by that column (rows of padding dropped) and a batch's rows split
  back to its requests by it (:func:`rows_of_batch`).

Invariant: every dim in ``input_axes`` and ``output_axes`` has sizes; sizes are
positive and strictly increasing; ``batch_columns`` needs a ``batch`` dim, and an
output there has no ``output_axes``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ..errors import InternalError, ShapeError, option

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
"""The batch buckets built when none are asked for: powers of two up to 32 (six
builds; a larger batch is asked for with ``buckets={"batch": [...]}`` /
``--buckets batch=...``)."""

BATCH = "batch"
"""The bucket key that names a model's batch dim whatever its ``dim_param`` is."""


@dataclass(frozen=True)
class BucketSpec:
    sizes: dict[str, tuple[int, ...]]
    input_axes: dict[str, dict[int, str]]
    output_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    batch: str = ""
    batch_columns: dict[str, int] = field(default_factory=dict)

    @property
    def dims(self) -> list[str]:
        return list(self.sizes)

    def grid(self) -> list[dict[str, int]]:
        """Every bucket (one size per dim), smallest first (by padded volume)."""
        names = self.dims
        combos = [dict(zip(names, c)) for c in itertools.product(*(self.sizes[n] for n in names))]
        return sorted(combos, key=lambda b: (_volume(b), tuple(b.values())))

    def choose(self, actual: dict[str, int]) -> dict[str, int]:
        """The smallest bucket holding ``actual`` (dim name -> size); ShapeError naming
        the dim and the sizes built when ``actual`` exceeds the largest."""
        for dim, n in actual.items():
            if n > self.sizes[dim][-1]:
                raise ShapeError(f"dim '{dim}' is {n}, larger than the largest bucket built "
                                 f"({dim}={','.join(map(str, self.sizes[dim]))}); split the feed into "
                                 f"runs of at most {self.sizes[dim][-1]}, or rebuild with {dim} buckets up to "
                                 f"{_next_pow2(n)} ({option('buckets')})")
        for bucket in self.grid():
            if all(bucket[d] >= n for d, n in actual.items()):
                return bucket
        raise InternalError(f"no bucket of {self.sizes} holds {actual}, though none exceeds the largest")

    @property
    def max_batch(self) -> int | None:
        """The largest batch bucket, or None when the batch dim is not bucketed."""
        return self.sizes[self.batch][-1] if self.batch in self.sizes else None

    def to_json(self) -> dict:
        return {"sizes": {d: list(s) for d, s in self.sizes.items()},
                "input_axes": {i: {str(a): d for a, d in ax.items()} for i, ax in self.input_axes.items()},
                "output_axes": {o: {str(a): d for a, d in ax.items()} for o, ax in self.output_axes.items()},
                "batch": self.batch, "batch_columns": dict(self.batch_columns)}

    @classmethod
    def from_json(cls, d: dict) -> "BucketSpec":
        spec = cls(sizes={str(k): tuple(int(x) for x in v) for k, v in d["sizes"].items()},
                   input_axes={i: {int(a): str(n) for a, n in ax.items()} for i, ax in d["input_axes"].items()},
                   output_axes={o: {int(a): str(n) for a, n in ax.items()} for o, ax in d["output_axes"].items()},
                   batch=str(d.get("batch", "")),
                   batch_columns={str(o): int(c) for o, c in d.get("batch_columns", {}).items()})
        spec.check()
        return spec

    def check(self) -> None:
        """ValueError unless the invariant of the module docstring holds."""
        for dim, s in self.sizes.items():
            if not s or any(x <= 0 for x in s) or list(s) != sorted(set(s)):
                raise ValueError(f"bucket sizes of '{dim}' must be positive and increasing, got {list(s)}")
        for where in (*self.input_axes.values(), *self.output_axes.values()):
            unknown = set(where.values()) - set(self.sizes)
            if unknown:
                raise ValueError(f"dims {sorted(unknown)} have no bucket sizes")
        if self.batch_columns and not self.batch:
            raise ValueError("batch_columns need a batch dim")
        for name, column in self.batch_columns.items():
            if column < 0 or name in self.output_axes:
                raise ValueError(f"output '{name}': a batch column must be >= 0 (got {column}) on an output "
                                 "with no batched axis")


def rows_of_batch(y, column: int, start: int, stop: int):
    """The rows of ``y`` (2-D, a batch column) that came from batch rows ``start`` up
    to ``stop``, in their order, with that column re-based to count from ``start``:
    what a request of those rows would have got had it run alone."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim != 2 or column >= y.shape[1]:
        raise ShapeError(f"an output split by its batch column {column} must be 2-D with that column; "
                         f"got shape {list(y.shape)}")
    keep = (y[:, column] >= start) & (y[:, column] < stop)
    out = np.array(y[keep], copy=True)
    out[:, column] -= start
    return out


def bucket_label(bucket: dict[str, int]) -> str:
    """``batch=8,seq=128``: how a bucket is named in messages and directory names."""
    return ",".join(f"{d}={n}" for d, n in bucket.items())


def parse_buckets(items: list[str]) -> dict[str, list[int]]:
    """``["batch=1,8,32", "seq=128"]`` (the CLI's ``--buckets``) -> ``{"batch": [1, 8, 32], ...}``;
    ShapeError naming the item that is not ``DIM=N,N,...`` with positive integers."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, sizes = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = [int(s) for s in sizes.split(",")]
        except ValueError:
            raise ShapeError(f"--buckets '{item}' is not DIM=N,N,... (e.g. batch=1,8,32) with integer sizes") from None
        if any(s <= 0 for s in out[name.strip()]):
            raise ShapeError(f"--buckets '{item}': every size must be a positive integer")
    return out


def _volume(bucket: dict[str, int]) -> int:
    v = 1
    for n in bucket.values():
        v *= n
    return v


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p
