"""Running a built :mod:`hetpart.kernels.wgmma_splitk` GEMM module on the GPU (the wgmma kernels' cuda tests)."""

from __future__ import annotations

import numpy as np
import tvm

from hetpart.kernels import wgmma_splitk as sk


def run_on_gpu(ex, dev, a, b, extra: list, m: int, n: int, split: int):
    """``(C, partials)`` of the built module ``ex`` on ``dev`` tensors ``a``, ``b`` and the epilogue's
    inputs ``extra`` (bias, residual): unsplit, its GEMM writes the ``m x n`` float32 C (partials None);
    split, the GEMM writes ``split * m`` rows of float32 partial sums and the reduction sums them through
    the epilogue into C.  Both start as NaN, so an element nothing wrote shows as NaN."""
    c = tvm.runtime.tensor(np.full((m, n), np.nan, np.float32), dev)
    if split == 1:
        ex[sk.GEMM_SYMBOL](a, b, *extra, c)
        return c.numpy(), None
    p = tvm.runtime.tensor(np.full((split * m, n), np.nan, np.float32), dev)
    ex[sk.GEMM_SYMBOL](a, b, p)
    ex[sk.REDUCE_SYMBOL](p, *extra, c)
    return c.numpy(), p.numpy()
