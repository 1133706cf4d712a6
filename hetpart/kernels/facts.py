"""What the schedule rules decide, published for the cost model.

The cost model prices kernels it never measured from their features, and some of
those features are decisions the schedule rules make: whether a CPU kernel runs on
one thread or the pool, how wide its vectors are, which loads are strided.  It reads
them here and only here, never by copying a rule's constant or reaching into a
rule's module, so a rule that changes a threshold changes the prediction with it.

Each name below is defined by the rule (or the analysis it shares) that uses it;
this module re-exports them and adds nothing.

* :data:`PARALLEL_MIN_ELEMENTS`: element-wise / data-movement kernels with fewer
  outputs run on one thread (:mod:`.analysis`);
* :data:`STRIDED_PARALLEL_MIN_ELEMENTS`: the same for kernels that read an input
  strided (:mod:`.rules.cpu_injective`);
* :data:`PARALLEL_MIN_MACS`: contractions with fewer multiply-adds run on one
  thread (:mod:`.register_tile`);
* :func:`fitting_lanes`: the vector width a CPU contraction's output dim gets
  (:mod:`.analysis`); :func:`cpu_shape`: a CPU target's SIMD lanes and cores;
* :func:`read_strides`, :func:`is_one_of`, :func:`try_inline_spatial`: how the
  rules read a block's access pattern (:mod:`.access`, :mod:`.analysis`), for the
  cost model's access-pattern feature.
"""

from __future__ import annotations

from .access import is_one_of, read_strides
from .analysis import PARALLEL_MIN_ELEMENTS, cpu_shape, fitting_lanes, try_inline_spatial
from .register_tile import PARALLEL_MIN_MACS
from .rules.cpu_injective import STRIDED_PARALLEL_MIN_ELEMENTS

__all__ = [
    "PARALLEL_MIN_ELEMENTS", "PARALLEL_MIN_MACS", "STRIDED_PARALLEL_MIN_ELEMENTS", "cpu_shape", "fitting_lanes",
    "is_one_of", "read_strides", "try_inline_spatial",
]
