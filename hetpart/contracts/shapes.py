"""What a static shape is, for every stage (the importer's tensors, the compiler's fixed-address
builds, the runtime's buffers): one test, so the stages never disagree about a dim."""

from __future__ import annotations

import numpy as np


def static_shape(shape) -> bool:
    """True when every dim of ``shape`` is an integer (a Python ``int`` or a numpy integer,
    not a ``bool``).

    Any other dim is not static.  A string is a symbolic dim (the op graph's data-dependent
    dims, e.g. the boxes NonMaxSuppression keeps, and bucketed dims): its size is known only
    per call, so the runtime allocates the tensor at run time and the compiler must not build
    the partition with every parameter fixed.  Anything else (``None``, a float) has no size
    either and reads the same way: the safe side for every caller (an unneeded run-time
    allocation, a build without static I/O), never a buffer sized from a non-integer."""
    return all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape)
