"""CPU softmax / element-wise kernel benchmark front end: hetpart's CPU kernels vs ONNX Runtime CPU.

The benchmark is :mod:`hetpart.bench.cpu_softmax` (its docstring says what it measures);
this script only runs it from a checkout:

    python bench/cpu_softmax.py                      # issue 18's shapes, Softmax and LogSoftmax
    python bench/cpu_softmax.py --ops Softmax --shapes 1x12x128x128 --quick
    python bench/cpu_softmax.py --ops Sigmoid,SiLU --shapes 1x96x112x112,1x1280x7x7
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hetpart.bench.cpu_softmax import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
