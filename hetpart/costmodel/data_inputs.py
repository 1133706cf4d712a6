"""Representative inputs for kernels whose work depends on the values they read.

In: a single-kernel module's argument specs (:class:`.kernel_bench.ArgSpec`, inputs then
weights) and the name of the PrimFunc it calls.  Out: the arrays
:func:`.kernel_bench.random_inputs` times the kernel on, and the label the profile records
with the timing (:attr:`.profile_db.KernelRecord.inputs`).

Why: the microbenchmark feeds every kernel uniform random floats in ``[0.1, 1)``.  For a
convolution the values do not matter; for NonMaxSuppression they decide how many boxes
are candidates, how many are popped before ``max_output_boxes_per_class`` are kept and how
many kept boxes each is tested against: random boxes drawn per corner in ``[0.1, 1)``
all overlap one another, which is no detector's output.  A kernel whose PrimFunc name is
in :data:`REGISTRY` is timed on what its :class:`DataDependentOp` makes instead.

Extension point: :func:`register` a maker under the PrimFunc's name (the name the
lowering gives it; the op graph's ``kernel.func``).  A maker returns one array per spec,
in the specs' order, of the spec's shape and dtype (checked: :class:`~hetpart.errors.
InternalError` otherwise); integer constants (``spec.value``) should be passed through.

A plan whose profile never measured such a kernel prices it by the predictor, from static
features that cannot see its data-dependent loops (the shipped H200 profile: NMS at 9.9 us
where it runs ~0.27 ms): :func:`predicted_notes` names those kernels so ``partition`` says so.

Invariant: a kernel not in the registry gets exactly the random inputs it got before
(label :data:`RANDOM`); the label is recorded with every timing, so a profile says which
timings came from representative inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import InternalError

if TYPE_CHECKING:  # kernel_bench imports this module
    from .kernel_bench import ArgSpec

RANDOM = "random"
"""The label of the default inputs: uniform random floats (:func:`.kernel_bench.random_array`)."""

InputMaker = Callable[[Sequence["ArgSpec"], np.random.Generator], list]
"""``(specs, rng) -> [array per spec]``: representative values for one kernel's arguments."""


@dataclass(frozen=True)
class DataDependentOp:
    """A kernel whose run time depends on its input values: how to feed it for timing.

    ``func``: its PrimFunc's name; ``label``: what the profile records (e.g. ``"detections"``);
    ``make``: the :data:`InputMaker`."""

    func: str
    label: str
    make: InputMaker

    def inputs(self, specs: Sequence["ArgSpec"], rng: np.random.Generator) -> list[np.ndarray]:
        """The maker's arrays, checked against ``specs`` (count, shape, dtype)."""
        arrays = [np.asarray(a) for a in self.make(specs, rng)]
        if len(arrays) != len(specs):
            raise InternalError(f"input maker {self.label!r} for {self.func} gave {len(arrays)} arrays "
                                f"for {len(specs)} arguments")
        for i, (a, s) in enumerate(zip(arrays, specs)):
            if tuple(a.shape) != tuple(s.shape) or str(a.dtype) != s.dtype:
                raise InternalError(f"input maker {self.label!r} for {self.func}: argument {i} is "
                                    f"{a.dtype}{list(a.shape)}, the kernel takes {s.dtype}{list(s.shape)}")
        return arrays


REGISTRY: dict[str, DataDependentOp] = {}
"""PrimFunc name -> how to feed it for timing (see the module doc)."""


def register(func: str, label: str):
    """Decorator: register an :data:`InputMaker` for the PrimFunc named ``func``."""

    def deco(make: InputMaker) -> InputMaker:
        REGISTRY[func] = DataDependentOp(func, label, make)
        return make

    return deco


def op_for(func: str) -> DataDependentOp | None:
    """The registered :class:`DataDependentOp` of a PrimFunc name, or None (random inputs)."""
    return REGISTRY.get(func)


def predicted_notes(graph, assignment: dict, costs) -> list[str]:
    """One line per kernel of ``assignment`` (kernel id -> device) that is registered here and
    priced by prediction on its device (``costs.is_predicted``): its price, and how to measure it."""
    notes = []
    for kid, device in assignment.items():
        kernel = graph.kernels[kid]
        if op_for(kernel.func) is not None and costs.is_predicted(kernel, device):
            notes.append(f"note: {kid} ({kernel.func}) on {device} is priced {costs.kernel_cost(kernel, device) * 1e6:.1f} us "
                         f"by prediction: its work depends on its values, which static features do not see, "
                         f"and the profile never timed it; `partition profile` times it on representative inputs")
    return notes


# --- NonMaxSuppression -----------------------------------------------------------
DETECTION_IMAGE = 320.0
"""Side of the image the made boxes lie in (only ratios matter to NMS: IoU is scale-free)."""
BOX_SIDE = (0.03, 0.3)
"""Made boxes' sides, as fractions of :data:`DETECTION_IMAGE` (log-uniform in between)."""
SCORE_LOGIT_SD = 2.0
"""Made scores are ``sigmoid(normal(0, SCORE_LOGIT_SD))``: spread over (0, 1) as a detector
head's are, so a score threshold anywhere in it keeps some boxes and drops others."""


@register("all_class_non_max_suppression", "detections")
def _nms_inputs(specs: Sequence["ArgSpec"], rng: np.random.Generator) -> list[np.ndarray]:
    """Detector-like ``boxes [B, N, 4]`` (corners ``[y1, x1, y2, x2]``: centres uniform over
    the image, sides log-uniform in :data:`BOX_SIDE`, so neighbours overlap in part, as
    anchors do) and ``scores [B, C, N]`` (:data:`SCORE_LOGIT_SD`).  hetpart's kernel
    (:mod:`hetpart.importer.non_max_suppression`) takes exactly these two; TVM's own
    lowering takes more (its limits as tensors): those get their real values or random ones."""
    boxes_spec, scores_spec = specs[0], specs[1]
    b, n, _ = boxes_spec.shape
    centre = rng.uniform(0, DETECTION_IMAGE, size=(b, n, 2))
    side = DETECTION_IMAGE * np.exp(rng.uniform(np.log(BOX_SIDE[0]), np.log(BOX_SIDE[1]), size=(b, n, 2)))
    boxes = np.concatenate([centre - side / 2, centre + side / 2], axis=-1).astype(boxes_spec.dtype)
    logits = rng.normal(0.0, SCORE_LOGIT_SD, size=scores_spec.shape)
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(scores_spec.dtype)
    from .kernel_bench import random_array

    return [boxes, scores, *(random_array(s, rng) for s in specs[2:])]
