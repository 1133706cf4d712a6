"""On a GPU: is the fused attention kernel (:mod:`hetpart.kernels.flash_attention`, issue 17
spike 1) right, and how fast is it against PyTorch's ``scaled_dot_product_attention``?

    PYTHONPATH=. python3 tools/gpu_flash_probe.py --json OUT.json        # ~30 s on an H100
    PYTHONPATH=. python3 tools/gpu_flash_probe.py --dry --json OUT.json  # no GPU: builds only
    PYTHONPATH=. python3 tools/gpu_flash_probe.py --masked --json OUT.json  # the bias path
    PYTHONPATH=. python3 tools/gpu_flash_probe.py --key-split --json OUT.json  # + the key-split kernel

Per shape of :data:`SHAPES` (Whisper's encoder and ViT-B/16 at batch 1, plus a short odd
sequence), each caught on its own (a failure is recorded with its error):

1. correctness: the kernel once on :func:`attention_inputs` (bf16; negatives, every 7th
   element zero, some large magnitudes; O pre-filled with NaN) against :func:`reference`
   (float64 softmax attention of the same bf16 values): ``rel_err`` = max |O - ref| / max |ref|,
   for ``out_dtype`` bfloat16 and float32; expected ~5e-3 (P and O rounded to bf16), a
   fragment or address error gives O(1) or NaN.
2. timing (bf16 output): ``ms`` -- CUDA events (PyTorch's, on the legacy default stream
   TVM launches on) around 50 back-to-back calls of the kernel's host function, median of 5;
   ``ms_wall`` -- the same 50 calls then ``dev.sync()``, wall clock, median of 5.
3. baseline: ``torch.nn.functional.scaled_dot_product_attention`` on the same bf16 tensors
   (``[b, h, s, d]``, PyTorch's pick of backend: cuDNN / flash on an H100), timed the same
   way (CUDA events, 50 calls, median of 5), and its error against the reference.

``--masked``: the shapes of :data:`MASKED_SHAPES` through the biased kernel
(``bias_shape [b, 1, 1, s]``: a key-padding mask, :func:`key_padding_bias`, as BERT / DistilBERT
exports add it -- ``finfo(float32).min`` on padded keys, batch row ``i`` padding its last
``17 i mod s`` keys); the reference adds the same bias in float64, and PyTorch's SDPA gets the
boolean ``attn_mask [b, 1, 1, s]`` (True: attend) of the same padding (transformers' SDPA path).

``--key-split``: each row also runs the key-split kernel (``flash_attention(key_split=True)``: 8 warps
a CTA, two warp groups over alternate key tiles, merged at the end) on the same inputs: ``ks_rel_err_bf16``,
``ks_rel_err_f32``, ``ks_ms`` (CUDA events, as ``ms``), ``ks_speedup_vs_unsplit`` (``ms / ks_ms``),
``ks_speedup_vs_torch``, and ``ks_error`` if it failed (the unsplit numbers stand).

JSON: ``{"device", "masked", "key_split", "rows": [{"shape", "b", "h", "s", "d", "rel_err_bf16",
"rel_err_f32", "ms", "ms_wall", "torch_ms", "torch_rel_err", "speedup_vs_torch", "ks_*"?, "error"?}],
"elapsed_s"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {"whisper": (1, 6, 1500, 64), "vit": (1, 12, 197, 64), "odd": (2, 3, 77, 64)}
"""name -> (batch, heads, seq, head_dim): Whisper-base's encoder and ViT-B/16 at batch 1,
and a sequence shorter than one tile (two batches)."""
MASKED_SHAPES = {"distilbert_b1": (1, 12, 128, 64), "distilbert_b32": (32, 12, 128, 64), "odd": (3, 3, 77, 64)}
"""name -> (batch, heads, seq, head_dim) of ``--masked``: DistilBERT / BERT-base at 128 tokens,
batch 1 and 32, and a sequence shorter than one tile."""
REPEATS, CALLS = 5, 50


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"


def attention_inputs(b: int, h: int, s: int, d: int = 64, seed: int = 0):
    """(Q, K, V) ``[b, h, s, d]`` bfloat16 (ml_dtypes): normal values (Q and K times 1.5),
    every 7th element zero, one element in 97 times 16 (large scores: the running max
    matters); V normal."""
    import ml_dtypes

    rng = np.random.default_rng(seed)
    out = []
    for scale in (1.5, 1.5, 1.0):
        x = rng.standard_normal((b, h, s, d)) * scale
        flat = x.reshape(-1)
        flat[::7] = 0.0
        flat[3::97] *= 16.0
        out.append(x.astype(ml_dtypes.bfloat16))
    return tuple(out)


def key_padding_bias(b: int, s: int) -> np.ndarray:
    """``[b, 1, 1, s]`` float32: 0 on kept keys, ``finfo(float32).min`` on batch row ``i``'s last
    ``17 i mod s`` keys (row 0 keeps every key)."""
    bias = np.zeros((b, 1, 1, s), np.float32)
    for i in range(b):
        pad = (17 * i) % s
        if pad:
            bias[i, ..., s - pad:] = np.finfo(np.float32).min
    return bias


def reference(q, k, v, scale: float | None = None, bias=None) -> np.ndarray:
    """``softmax(scale * Q K^T [+ bias]) V`` in float64 (``scale`` default ``1 / sqrt(d)``; ``bias``
    broadcast to the scores)."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if bias is not None:
        s = s + np.asarray(bias, np.float64)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, np.float64)
    if np.isnan(got).any():
        return float("nan")
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def _median_events(fn) -> float:
    import torch

    times = []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(CALLS):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / CALLS)
    return float(np.median(times))


def _median_wall(fn, sync) -> float:
    times = []
    for _ in range(REPEATS):
        sync()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3 / CALLS)
    return float(np.median(times))


def run_kernel(ex, q, k, v, out_dtype: str, bias=None):
    """The kernel once on the GPU (``bias``: the biased kernel's float32 ``B``); O (pre-filled
    with NaN) as float64 numpy."""
    import ml_dtypes
    import tvm

    dev = tvm.cuda(0)
    fill = np.full(q.shape, np.nan, ml_dtypes.bfloat16 if out_dtype == "bfloat16" else np.float32)
    ins = (q, k, v) if bias is None else (q, k, v, np.ascontiguousarray(bias, np.float32))
    args = [tvm.runtime.tensor(x, dev) for x in (*ins, fill)]
    ex["main"](*args)
    return args[-1].numpy().astype(np.float64), args


def torch_row(q, k, v, want, bias=None) -> dict:
    """PyTorch SDPA on the same bf16 values (``bias``: its kept keys as a boolean ``attn_mask``):
    time (CUDA events) and error."""
    import torch

    qt, kt, vt = (torch.from_numpy(x.view(np.int16)).view(torch.bfloat16).cuda() for x in (q, k, v))
    mask = None if bias is None else torch.from_numpy(np.asarray(bias) > np.finfo(np.float32).min / 2).cuda()
    out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    ms = _median_events(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask))
    return {"torch_ms": ms, "torch_rel_err": rel_err(out.float().cpu().numpy(), want)}


def probe_shape(name: str, dims, dry: bool, masked: bool = False, key_split: bool = False) -> dict:
    """One row of the JSON (module doc) for ``dims`` = (b, h, s, d); ``masked``: the biased kernel
    with :func:`key_padding_bias`; ``key_split``: the key-split kernel's ``ks_*`` beside it."""
    b, h, s, d = dims
    row = {"shape": name, "b": b, "h": h, "s": s, "d": d}
    bias = key_padding_bias(b, s) if masked else None
    try:
        exs = _kernels(dims, bias)
        row["built"] = True
        if dry:
            return {**row, **(_split_row(dims, dry, bias, row) if key_split else {})}
        import tvm

        errors, call, (q, k, v, want) = _checked(exs, dims, bias)
        row.update(errors)
        dev = tvm.cuda(0)
        dev.sync()
        row["ms_wall"] = _median_wall(call, dev.sync)
        row["ms"] = _median_events(call)
        row.update(torch_row(q, k, v, want, bias))
        row["speedup_vs_torch"] = row["torch_ms"] / row["ms"]
    except Exception as e:  # noqa: BLE001 - recorded, the probe goes on
        row["error"] = _error(e)
        return row
    if key_split:
        row.update(_split_row(dims, dry, bias, row))
    return row


def _kernels(dims, bias, key_split: bool = False) -> dict:
    """``{out dtype: built flash kernel}`` of ``dims`` = (b, h, s, d), biased where ``bias`` is given."""
    from hetpart.kernels import flash_attention as fa

    return {dt: fa.build(*dims, out_dtype=dt, bias_shape=None if bias is None else bias.shape, key_split=key_split)
            for dt in fa.OUT_DTYPES}


def _checked(exs: dict, dims, bias):
    """Each kernel of ``exs`` (:func:`_kernels`) run on :func:`attention_inputs` and checked against the
    float64 reference: ``(errors, call, (q, k, v, want))`` -- ``errors`` keyed ``rel_err_bf16`` /
    ``rel_err_f32``, ``call`` the bf16 kernel on its arguments, called once already (warm)."""
    q, k, v = attention_inputs(*dims)
    want = reference(q, k, v, bias=bias)
    errors = {}
    for dt, ex in exs.items():
        got, _ = run_kernel(ex, q, k, v, dt, bias)
        errors["rel_err_bf16" if dt == "bfloat16" else "rel_err_f32"] = rel_err(got, want)
    _, args = run_kernel(exs["bfloat16"], q, k, v, "bfloat16", bias)
    fn = exs["bfloat16"]["main"]
    call = lambda: fn(*args)  # noqa: E731
    call()
    return errors, call, (q, k, v, want)


def _split_row(dims, dry: bool, bias, row: dict) -> dict:
    """The ``ks_*`` entries of a row: the key-split kernel on the same inputs (module doc)."""
    out = {}
    try:
        exs = _kernels(dims, bias, key_split=True)
        out["ks_built"] = True
        if dry:
            return out
        errors, call, _ = _checked(exs, dims, bias)
        out.update({f"ks_{name}": err for name, err in errors.items()})
        out["ks_ms"] = _median_events(call)
        out["ks_speedup_vs_unsplit"] = row["ms"] / out["ks_ms"]
        out["ks_speedup_vs_torch"] = row["torch_ms"] / out["ks_ms"]
    except Exception as e:  # noqa: BLE001 - recorded, the probe goes on
        out["ks_error"] = _error(e)
    return out


def _device(dry: bool) -> str:
    if dry:
        return "dry (no GPU)"
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001
        return f"unknown ({_error(e)})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--dry", action="store_true", help="no GPU: build every kernel, run nothing")
    ap.add_argument("--masked", action="store_true", help="the biased kernel on MASKED_SHAPES (key padding)")
    ap.add_argument("--key-split", action="store_true", help="also the key-split kernel (ks_* of each row)")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = {"device": _device(args.dry), "masked": args.masked, "key_split": args.key_split, "rows": []}
    for name, dims in (MASKED_SHAPES if args.masked else SHAPES).items():
        row = probe_shape(name, dims, args.dry, args.masked, args.key_split)
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
        out["elapsed_s"] = round(time.time() - t0, 1)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if any("error" in r or "ks_error" in r for r in out["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
