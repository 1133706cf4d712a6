"""Where a model's batch dim sits in its inputs and outputs: what a data-parallel split cuts.

A model run data-parallel (:mod:`hetpart.data_parallel`) gets the first ``b_gpu``
rows of a batch on one build and the rest on another; :class:`BatchAxes` says, per
input, along which axis to cut (None: the input has no batch axis and both builds
get it whole) and, per output, along which axis to put the two halves back together.

It is found by comparing the model's shapes at two batch sizes
(:func:`batch_axes`): the batch axis of a tensor is the one axis whose size is the
batch in both.  Invariant: at least one input has a batch axis; every output has one
(an output without one, e.g. a detector's kept boxes, cannot be merged by rows).
The split is exact when the model's rows are independent (an inference model's
batch), as padding a batch bucket is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NoBatchDimError


@dataclass(frozen=True)
class BatchAxes:
    """``inputs``: input name -> its batch axis, or None (fed whole to each side);
    ``outputs``: output name (the model's) -> its batch axis."""

    inputs: dict[str, int | None]
    outputs: dict[str, int] = field(default_factory=dict)

    @property
    def split_inputs(self) -> dict[str, int]:
        """The inputs cut by rows, with their axes."""
        return {n: a for n, a in self.inputs.items() if a is not None}

    def to_json(self) -> dict:
        return {"inputs": dict(self.inputs), "outputs": dict(self.outputs)}

    @classmethod
    def from_json(cls, d: dict) -> "BatchAxes":
        return cls(inputs={str(n): None if a is None else int(a) for n, a in d["inputs"].items()},
                   outputs={str(n): int(a) for n, a in d["outputs"].items()})


def batch_axes(inputs_a: dict[str, tuple], outputs_a: dict[str, tuple], a: int,
               inputs_b: dict[str, tuple], outputs_b: dict[str, tuple], b: int, origin: str = "model") -> BatchAxes:
    """The batch axes of a model whose inputs/outputs (name -> shape) are given at batch
    ``a`` and at batch ``b`` (``a != b``).

    Raises NoBatchDimError naming the tensor when an input's shapes differ other than
    along one axis of size ``a`` then ``b``, when no input has a batch axis, or when an
    output has none.
    """
    if a == b:
        raise ValueError("batch_axes needs the shapes at two different batch sizes")
    ins = {n: _axis(n, s, inputs_b.get(n), a, b, origin, "input") for n, s in inputs_a.items()}
    if not any(x is not None for x in ins.values()):
        raise NoBatchDimError(f"{origin}: no input changes with the batch (built at {a} and {b}: the same shapes), "
                              "so there are no rows to split between the devices")
    outs = {}
    for n, s in outputs_a.items():
        axis = _axis(n, s, outputs_b.get(n), a, b, origin, "output")
        if axis is None:
            raise NoBatchDimError(f"{origin}: output '{n}' has no batch axis (shape {list(s)} at batch {a} and at "
                                  f"{b}), so the two devices' results cannot be merged by rows; run the model on one "
                                  "device plan (drop the data-parallel split)")
        outs[n] = axis
    return BatchAxes(ins, outs)


def _axis(name: str, sa, sb, a: int, b: int, origin: str, what: str) -> int | None:
    if sb is None or len(sa) != len(sb):
        raise NoBatchDimError(f"{origin}: {what} '{name}' has shape {list(sa)} at batch {a} but "
                              f"{None if sb is None else list(sb)} at batch {b}; its rank must not follow the batch")
    differ = [i for i, (x, y) in enumerate(zip(sa, sb)) if x != y]
    if not differ:
        return None
    if len(differ) == 1 and sa[differ[0]] == a and sb[differ[0]] == b:
        return differ[0]
    raise NoBatchDimError(f"{origin}: {what} '{name}' has shape {list(sa)} at batch {a} and {list(sb)} at batch {b}: "
                          "not one axis of the batch's size, so its rows cannot be split")
