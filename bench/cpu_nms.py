"""CPU NonMaxSuppression benchmark front end: the zoo detector all-CPU vs ONNX Runtime CPU, and NMS alone.

The benchmark is :mod:`hetpart.bench.cpu_nms` (its docstring says what it measures);
this script only runs it from a checkout:

    python bench/cpu_nms.py               # full detector (80 classes x 1200 boxes), batch 1
    python bench/cpu_nms.py --small --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hetpart.bench.cpu_nms import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
