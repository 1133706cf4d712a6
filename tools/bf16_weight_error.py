"""How much of llama_decode's bf16 error is the weights' rounding alone (ONNX Runtime only).

Issue 19's capped bench measured ``hetpart bf16`` on llama_decode (22 layers) at
max|hetpart - ORT fp32| / max|ORT fp32| = 2.05e-2 on the logits, just over the 2e-2 the
benchmark accepts.  This runs ONNX Runtime twice on ``zoo:llama_decode:layers=N``: with the
float32 weights, and with every float32 initializer of 4096+ elements rounded to bfloat16
(round to nearest even, stored back as float32: compute stays float32), and prints the same
metric per output.  Random inputs (seed 0): caches N(0, 1), token ids < 100, positions < 2048.

    python tools/bf16_weight_error.py 1 2 4 8
    python tools/bf16_weight_error.py 22 --keep lm_head.weight   # that weight stays float32
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import onnx

import numpy as np
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hetpart.models.registry import build  # noqa: E402


def to_bf16(a: np.ndarray) -> np.ndarray:
    """``a`` rounded to bfloat16 (nearest even), as float32."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


def feeds_for(session, rng) -> dict:
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if "int" in i.type:
            feeds[i.name] = rng.integers(0, 100, size=shape).astype(np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def error_of(layers: int, keep: tuple[str, ...] = ()) -> dict[str, float]:
    """Per output: max|fp32 - bf16-weights| / max|fp32|; initializers named in ``keep`` stay float32."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        # Weights in an external file: the full model (4.4 GB) is past protobuf's 2 GB.
        path = str(Path(tmp) / "model.onnx")
        onnx.save_model(build("llama_decode", layers=layers), path, save_as_external_data=True,
                        all_tensors_to_one_file=True, location="weights.bin")
        ref = ort.InferenceSession(path, so)
        feeds = feeds_for(ref, np.random.default_rng(0))
        names = [o.name for o in ref.get_outputs()]
        want = ref.run(None, feeds)
        del ref  # one session's weights in memory at a time
        model = onnx.load_model(path)
        for t in model.graph.initializer:
            arr = numpy_helper.to_array(t)
            if arr.dtype == np.float32 and arr.size >= 4096 and t.name not in keep:
                t.CopyFrom(numpy_helper.from_array(to_bf16(arr), t.name))
        rounded = str(Path(tmp) / "bf16.onnx")
        onnx.save_model(model, rounded, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="bf16.bin")
        del model
        got = ort.InferenceSession(rounded, so).run(None, feeds)
    return {n: float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30)) for n, a, b in zip(names, want, got)}


def main() -> int:
    args = sys.argv[1:]
    keep: tuple[str, ...] = ()
    if "--keep" in args:
        i = args.index("--keep")
        keep, args = tuple(args[i + 1].split(",")), args[:i] + args[i + 2:]
    for layers in (int(a) for a in (args or ["1", "2", "4"])):
        errs = error_of(layers, keep)
        worst = max(errs, key=errs.get)
        print(f"layers={layers:<3} kept float32: {','.join(keep) or '-'}  worst output {worst} {errs[worst]:.3e}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
