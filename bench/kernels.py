"""Kernel benchmark front end: hetpart's schedules vs TVM's defaults vs PyTorch.

The benchmark itself is :mod:`hetpart.bench.kernels` (its docstring lists what it
measures); this script only runs it from a checkout:

    python bench/kernels.py --models resnet50,bert --batches 1,32 --out out/bench
    python bench/kernels.py --quick --targets cpu --no-torch --models tiny
    python bench/kernels.py --ops conv --batches 1 --out out/bench
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hetpart.bench.kernels import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
