"""Split-K on and off for ResNet-50's convolutions on the GPU (hetpart's CUDA build).

For each distinct ResNet-50 conv shape (conv + bias + relu, ``bench/kernels.py``'s
``RESNET50_CONVS``) at batch 1, then batch 8 while the time budget lasts:

* builds the kernel with :func:`hetpart.kernels.build` twice: split-K on (the
  default rule list) and off (``HETPART_SPLITK=0``); where the split-K rule does not
  take the shape, the two builds are the same and only one is made;
* checks each against a float64 reference (torch on the CPU) on fresh random inputs:
  ``rel_err = max|got - ref| / max|ref|``;
* times each with TVM's ``time_evaluator`` (median ms), and ``torch.nn.functional``'s
  conv + bias + relu with cuDNN's defaults (TF32 allowed) and with
  ``torch.backends.cudnn.allow_tf32 = False`` (exact fp32, what TVM computes).

Then, with ``--e2e`` (default), zoo:resnet50 at batch 1 built whole (CUDA graphs on,
as hetpart's compiler builds it) with split-K on and off: output difference and
time.  This exercises the partial-sum workspace inside a captured CUDA graph.

A failing shape prints its error and the rest still run.  Prints a markdown table
last; ``--out FILE`` writes the rows as JSON.

    PYTHONPATH=. python3 bench/conv_splitk.py --out $OUT/conv_splitk.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback

import numpy as np

SWITCH = "HETPART_SPLITK"


def log(msg: str) -> None:
    print(f"[splitk {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _bench_kernels():
    """bench/kernels.py as a module (its conv shapes, module builder and timers)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.py")
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class split_k:
    """Context: the split-K rule on (True) or off (False) for builds inside it."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.old = os.environ.get(SWITCH)
        os.environ[SWITCH] = "1" if self.on else "0"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = self.old


def reference(x, w, b, stride: int, pad: int) -> np.ndarray:
    """relu(conv2d(x, w) + b) in float64 on the CPU."""
    import torch
    import torch.nn.functional as F

    t = [torch.from_numpy(a.astype("float64")) for a in (x, w, b.reshape(-1))]
    return F.relu(F.conv2d(t[0], t[1], t[2], stride=stride, padding=pad)).numpy()


def run_tvm(ex, x) -> np.ndarray:
    import tvm
    from tvm import relax

    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(ex, dev)
    return vm["main"](tvm.runtime.tensor(x, dev)).numpy()


def rel_err(got, want) -> float:
    return float(np.abs(got.astype("float64") - want).max() / max(np.abs(want).max(), 1e-30))


def conv_row(bk, batch: int, spec, repeat: int, torch_on: bool) -> dict:
    """One shape: rules, errors and times with split-K on and off, and torch's times."""
    from hetpart import kernels
    from hetpart.targets import cuda_tvm_target

    cin, size, cout, k, stride = spec
    target = cuda_tvm_target()
    row = {"conv": f"{cin}x{size}x{size}->{cout} k{k}s{stride}", "batch": batch}
    mod, w, b = bk.conv_module(batch, cin, size, cout, k, stride)
    x = np.random.default_rng(int(time.time() * 1e3) % 2**31).standard_normal((batch, cin, size, size))
    x = x.astype("float32")
    want = reference(x, w, b, stride, k // 2)
    for on in (True, False):
        key = "on" if on else "off"
        with split_k(on):
            rules = set(kernels.rules_applied(kernels.schedule(mod, target)).values())
            row[f"rule_{key}"] = ",".join(sorted(rules))
            if not on or "GpuSplitKGemm" in rules:
                ex = kernels.build(mod, target, cuda_graph=False)
                row[f"err_{key}"] = rel_err(run_tvm(ex, x), want)
                row[f"ms_{key}"] = bk.time_tvm(ex, {"x": x}, True, repeat)
    if "ms_on" not in row:  # the rule declined: on == off
        row["ms_on"], row["err_on"] = row["ms_off"], row["err_off"]
    row["speedup"] = row["ms_off"] / row["ms_on"]
    if torch_on:
        import torch

        row["torch_tf32_ms"] = bk.time_torch_conv(x, w, b, stride, k // 2, repeat)
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            row["torch_fp32_ms"] = bk.time_torch_conv(x, w, b, stride, k // 2, repeat)
        finally:
            torch.backends.cudnn.allow_tf32 = old
        row["on_vs_torch_fp32"] = row["ms_on"] / row["torch_fp32_ms"]
    return row


def e2e_row(bk, repeat: int) -> dict:
    """zoo:resnet50, batch 1, whole model with CUDA graphs: split-K on vs off."""
    import hetpart
    from hetpart import kernels
    from hetpart.targets import cuda_tvm_target

    graph = hetpart.load("zoo:resnet50")
    mod = graph.module
    params = [p for p in mod["main"].params]
    rng = np.random.default_rng(3)
    feeds = {p.name: rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
             for p in params}
    row = {"conv": "zoo:resnet50 (whole, cuda graph)", "batch": 1}
    outs = {}
    for on in (True, False):
        key = "on" if on else "off"
        t0 = time.time()
        with split_k(on):
            row[f"rule_{key}"] = str(sum(v == "GpuSplitKGemm" for v in kernels.rules_applied(
                kernels.schedule(mod, cuda_tvm_target())).values())) + " split-K kernels"
            ex = kernels.build(mod, cuda_tvm_target(), cuda_graph=True)
        log(f"resnet50 split-K {key}: built in {time.time() - t0:.0f}s")
        import tvm
        from tvm import relax

        dev = tvm.cuda(0)
        vm = relax.VirtualMachine(ex, dev)
        args = [tvm.runtime.tensor(v, dev) for v in feeds.values()]
        out = vm["main"](*args)
        out = out[0] if not hasattr(out, "numpy") else out
        outs[key] = out.numpy()
        row[f"ms_{key}"] = bk.time_tvm(ex, feeds, True, repeat)
    row["err_on"] = rel_err(outs["on"], outs["off"].astype("float64"))
    row["err_off"] = 0.0
    row["speedup"] = row["ms_off"] / row["ms_on"]
    return row


COLUMNS = [
    ("conv", "conv"), ("batch", "batch"), ("rule_on", "rule (split-K on)"), ("rule_off", "rule (off)"), ("ms_on", "on ms"),
    ("ms_off", "off ms"), ("speedup", "off/on"), ("err_on", "rel err on"), ("err_off", "rel err off"),
    ("torch_tf32_ms", "torch ms (TF32)"), ("torch_fp32_ms", "torch ms (fp32)"),
    ("on_vs_torch_fp32", "on / torch fp32"), ("error", "error"),
]


def table(rows: list[dict]) -> str:
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows)]

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2e}" if abs(v) < 1e-3 and v != 0 else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--budget", type=float, default=110.0, help="seconds; later shapes are skipped past it")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-e2e", action="store_true", help="skip the whole-ResNet-50 check")
    p.add_argument("--out", default=None, help="JSON file for the rows")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hetpart.targets import cuda_available

    if not cuda_available():
        log("no CUDA GPU: nothing to measure")
        print(table([]))
        return 1
    bk = _bench_kernels()
    start = time.time()
    rows = []
    jobs = [(int(b), spec) for b in args.batches.split(",") for spec in bk.RESNET50_CONVS]
    for batch, spec in jobs:
        if time.time() - start > args.budget:
            log(f"budget spent: skipping {spec} b{batch}")
            continue
        try:
            row = conv_row(bk, batch, spec, args.repeat, not args.no_torch)
        except Exception as exc:  # noqa: BLE001 - one bad shape must not stop the rest
            traceback.print_exc()
            row = {"conv": str(spec), "batch": batch, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        log(json.dumps(row))
        rows.append(row)
    if not args.no_e2e:
        try:
            rows.append(e2e_row(bk, args.repeat))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append({"conv": "zoo:resnet50", "batch": 1, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        log(json.dumps(rows[-1]))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "seconds": time.time() - start, "rows": rows}, f, indent=2)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
