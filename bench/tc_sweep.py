"""Tensor-core rule variants on every ResNet-50 convolution at batch 32 (GPU machine).

    PYTHONPATH=. python3 bench/tc_sweep.py --out DIR [--variants V,...] [--profile]

A variant is ``TILE/PIPE[/NAME=N...]``: TILE ``wm,wn,fm,fn[,kf]`` of
:class:`hetpart.kernels.rules.gpu_tensor_core.Tile` (or ``rule`` for the rule's own
choice) and PIPE ``on``/``off``/``rule`` (the K loop software-pipelined or not); NAME=N replaces an integer constant of the
rule module (e.g. ``SPLIT_K_BELOW=0``: no split-K).
Each variant runs in its own process (builds in parallel, timing one process at a
time under a file lock) and times the 23 distinct convolutions (conv + bias + relu)
of torchvision's ResNet-50 at batch 32; PyTorch (cuDNN, TF32) times the same
shapes.  The per-shape counts give the whole network's conv time for each variant.
``--profile`` also lists where the GPU time of a whole ResNet-50 b32 goes, for
hetpart's build and PyTorch eager (torch.profiler / CUPTI sees both).
"""
import argparse
import fcntl
import json
import os
import subprocess
import sys
import time

import numpy as np

# (in channels, in size, out channels, kernel, stride): times in ResNet-50
SHAPES = {
    (3, 224, 64, 7, 2): 1, (64, 56, 64, 1, 1): 1, (256, 56, 64, 1, 1): 2, (64, 56, 64, 3, 1): 3,
    (64, 56, 256, 1, 1): 4, (256, 56, 128, 1, 1): 1, (128, 56, 128, 3, 2): 1, (128, 28, 128, 3, 1): 3,
    (512, 28, 128, 1, 1): 3, (128, 28, 512, 1, 1): 4, (256, 56, 512, 1, 2): 1, (512, 28, 256, 1, 1): 1,
    (256, 28, 256, 3, 2): 1, (256, 14, 256, 3, 1): 5, (1024, 14, 256, 1, 1): 5, (256, 14, 1024, 1, 1): 6,
    (512, 28, 1024, 1, 2): 1, (1024, 14, 512, 1, 1): 1, (512, 14, 512, 3, 2): 1, (512, 7, 512, 3, 1): 2,
    (2048, 7, 512, 1, 1): 2, (512, 7, 2048, 1, 1): 3, (1024, 14, 2048, 1, 2): 1,
}
BATCH = 32


def key(s):
    return "{}x{}->{}k{}s{}".format(*s)


def one_variant(variant: str, lock: str) -> dict:
    import tvm
    from tvm import relax

    sys.path.insert(0, os.path.dirname(__file__))
    from kernels import conv_module
    from hetpart import kernels, targets
    from hetpart.kernels.rules import gpu_tensor_core as gtc

    tile, pipe, *overrides = variant.split("/")
    for item in overrides:  # NAME=int: a module constant of the rule replaced
        name, value = item.split("=")
        setattr(gtc, name, int(value))
    if tile != "rule":
        gtc.MATMUL_TILES = gtc.CONV_TILES = (gtc.Tile(*(int(v) for v in tile.split(","))),)
        gtc.MIN_BLOCKS = 1
    if pipe != "rule":
        gtc._pipelined = lambda *a, _on=(pipe == "on"): _on
    target = targets.cuda_tvm_target()
    built = {}
    for s in SHAPES:
        t0 = time.time()
        mod, w, b = conv_module(BATCH, *s)
        try:
            rules = kernels.rules_applied(kernels.schedule(mod, target))
            built[s] = (kernels.build(mod, target, cuda_graph=False), ",".join(sorted(set(rules.values()))), time.time() - t0)
        except Exception as exc:  # noqa: BLE001 - report and go on
            built[s] = (None, f"FAILED {type(exc).__name__}: {str(exc)[:200]}", 0)
    dev = tvm.cuda(0)
    res = {}
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        for s, (ex, rule, bs) in built.items():
            if ex is None:
                res[key(s)] = {"rule": rule}
                continue
            vm = relax.VirtualMachine(ex, dev)
            x = tvm.runtime.tensor(np.random.default_rng(1).standard_normal((BATCH, s[0], s[1], s[1])).astype("float32"), dev)
            vm["main"](x)
            ms = vm.time_evaluator("main", dev, number=20, repeat=7)(x).median * 1e3
            res[key(s)] = {"ms": ms, "rule": rule, "build_s": round(bs, 1)}
    return res


def torch_convs() -> dict:
    sys.path.insert(0, os.path.dirname(__file__))
    import torch
    from kernels import time_torch_conv

    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    out = {}
    rng = np.random.default_rng(0)
    for s in SHAPES:
        cin, size, cout, k, st = s
        x = rng.standard_normal((BATCH, cin, size, size)).astype("float32")
        w = rng.standard_normal((cout, cin, k, k)).astype("float32") * 0.05
        b = rng.standard_normal((1, cout, 1, 1)).astype("float32")
        time_torch_conv(x, w, b, st, k // 2, 20)
        out[key(s)] = time_torch_conv(x, w, b, st, k // 2, 50)
    return out


def profile() -> dict:
    """GPU time per kernel name of one ResNet-50 b32 forward, hetpart vs PyTorch."""
    sys.path.insert(0, os.path.dirname(__file__))
    import torch
    import tvm
    from kernels import build_tvm, model_resnet50
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprof
    from tvm import relax

    from hetpart import targets

    onnx_bytes, feeds, module, example = model_resnet50(BATCH)
    ex = build_tvm(onnx_bytes, feeds, targets.cuda_tvm_target())
    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(ex, dev)
    args = [tvm.runtime.tensor(v, dev) for v in feeds.values()]

    def tvm_step():
        vm["main"](*args)
        dev.sync()

    module = module.cuda()
    xt = example[0].cuda()

    def torch_step():
        with torch.inference_mode():
            module(xt)
        torch.cuda.synchronize()

    out = {}
    for name, step in (("hetpart", tvm_step), ("torch", torch_step)):
        for _ in range(5):
            step()
        reps = 10
        with tprof(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                step()
        per = {}
        for ev in prof.events():
            if ev.device_type.name == "CUDA":
                d = per.setdefault(ev.name, [0.0, 0])
                d[0] += ev.device_time / reps
                d[1] += 1
        rows = sorted(per.items(), key=lambda kv: -kv[1][0])
        out[name] = {"total_us": sum(v[0] for _, v in rows),
                     "kernels": [(n[:90], round(v[0], 1), v[1] // reps) for n, v in rows[:60]]}
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="out/tc_sweep")
    p.add_argument("--variants", default="rule/rule,2,2,2,2/on,2,2,2,2/off,2,2,1,2/on,2,2,1,2/off")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--one", default="")
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one_variant(a.one, os.path.join(a.out, "lock"))), flush=True)
        return 0
    os.makedirs(a.out, exist_ok=True)
    variants = a.variants.split(";") if ";" in a.variants else _split_variants(a.variants)
    result = {"batch": BATCH, "counts": {key(s): c for s, c in SHAPES.items()}}
    procs = {}
    pending = list(variants)
    while pending or procs:
        while pending and len(procs) < a.jobs:
            v = pending.pop(0)
            procs[v] = subprocess.Popen([sys.executable, __file__, "--one", v, "--out", a.out],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for v, pr in list(procs.items()):
            if pr.poll() is not None:
                so, se = pr.communicate()
                line = [ln for ln in so.splitlines() if ln.startswith("RESULT ")]
                result[v] = json.loads(line[0][7:]) if line else {"error": se[-1500:]}
                print(v, "done" if line else "FAILED " + se[-800:], flush=True)
                del procs[v]
        time.sleep(0.5)
    result["torch"] = torch_convs()
    if a.profile:
        result["profile"] = profile()
    with open(os.path.join(a.out, "tc_sweep.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    summarize(result)
    return 0


def _split_variants(text: str) -> list[str]:
    """'rule/rule,2,2,2,2/on' -> ['rule/rule', '2,2,2,2/on'] (commas also sit inside tiles)."""
    out, cur = [], []
    for part in text.split(","):
        cur.append(part)
        if "/" in part:
            out.append(",".join(cur))
            cur = []
    return out


def summarize(result: dict) -> None:
    counts, torch = result["counts"], result["torch"]
    variants = [v for v in result if "/" in v]
    print("shape".ljust(22), "torch".rjust(7), *(v.rjust(14) for v in variants))
    for k in counts:
        cells = []
        for v in variants:
            r = result[v].get(k, {})
            cells.append(f"{r['ms']:.3f}".rjust(14) if "ms" in r else "  -".rjust(14))
        print(k.ljust(22), f"{torch[k]:.3f}".rjust(7), *cells)
    tot_t = sum(counts[k] * torch[k] for k in counts)
    line = ["TOTAL (x count)".ljust(22), f"{tot_t:.3f}".rjust(7)]
    for v in variants:
        ok = all("ms" in result[v].get(k, {}) for k in counts)
        line.append((f"{sum(counts[k] * result[v][k]['ms'] for k in counts):.3f}" if ok else "-").rjust(14))
    print(*line)
    best = sum(counts[k] * min(result[v][k]["ms"] for v in variants if "ms" in result[v].get(k, {})) for k in counts)
    print("best per shape over variants:", round(best, 3))
    if "profile" in result:
        for name, pr in result["profile"].items():
            print(f"\n{name}: {pr['total_us']:.0f} us GPU time per forward")
            for n, us, c in pr["kernels"][:40]:
                print(f"  {us:8.1f} us  x{c:<3} {n}")


if __name__ == "__main__":
    sys.exit(main())
