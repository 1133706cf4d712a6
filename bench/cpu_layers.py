"""CPU layer benchmark front end: single corpus layers (ViT-B/16, inception_v3, whisper),
hetpart's CPU kernels vs ONNX Runtime CPU on the same threads (issue 18).

The benchmark is :mod:`hetpart.bench.cpu_layers` (its docstring says what it measures);
this script only runs it from a checkout:

    python bench/cpu_layers.py --threads 2
    python bench/cpu_layers.py vit_attn inc_1x7_192 --runs 20
    python bench/cpu_layers.py --save /tmp/layers        # the ONNX files, for kernel_table
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hetpart.bench.cpu_layers import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
