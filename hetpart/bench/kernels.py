"""Benchmark hetpart's default schedules against TVM's defaults and PyTorch.

For each model (torchvision ResNet-50, a random-weight BERT-base at seq 128, and the
hetpart zoo) and batch size, measures on this machine:

* ``tvm_cpu``      -- hetpart.kernels.build(fuse(import(m)), cpu_tvm_target()), where
  import is hetpart's (checks, shape subgraphs folded) ending in TVM's from_onnx
* ``tvm_cpu_default`` -- tvm.compile(import(m), cpu target): TVM's own pipeline,
  the "before" (batch 1 only, and only with --baseline; it is slow)
* ``tvm_gpu``      -- hetpart.kernels.build(..., cuda_tvm_target()) (dlight + hetpart GPU rules)
* ``torch_cpu`` / ``torch_gpu`` -- PyTorch eager on the very same model

Prints a markdown table (times in ms, ratios TVM/PyTorch) and writes
``DIR/kernels_bench.json`` with ``--out DIR``.  Progress goes to stderr.  The front
end is ``bench/kernels.py`` (this module's :func:`main`).

    python bench/kernels.py --models resnet50,bert --batches 1,32 --out out/bench
    python bench/kernels.py --quick --targets cpu --no-torch --models tiny

``--ops conv`` instead times single ResNet-50 convolutions (conv + bias + relu, batch
``--batches``) on the GPU: hetpart's rules (``GpuConv2dImplicitGemm`` first) vs
TVM's dlight rules alone vs ``torch.nn.functional.conv2d`` (+ bias + relu):

    python bench/kernels.py --ops conv --batches 1 --out out/bench
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np

TARGETS = ("cpu", "gpu")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- models: (onnx bytes, input name -> numpy array, torch module or None) ---------
def _torch_export(module, example: tuple, names: list[str]) -> bytes:
    import torch

    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, example, buf, opset_version=17, input_names=names, dynamo=False)
    return buf.getvalue()


def model_resnet50(batch: int):
    import torch
    import torchvision

    m = torchvision.models.resnet50().eval()
    x = torch.randn(batch, 3, 224, 224)
    return _torch_export(m, (x,), ["x"]), {"x": x.numpy()}, m, (x,)


def model_bert(batch: int):
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig()
    m = BertModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (batch, 128))
    mask = torch.ones(batch, 128, dtype=torch.int64)

    class Wrap(torch.nn.Module):  # one tensor out, so both sides return the same thing
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    w = Wrap(m).eval()
    onnx_bytes = _torch_export(w, (ids, mask), ["input_ids", "attention_mask"])
    return onnx_bytes, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, w, (ids, mask)


def model_tiny(batch: int):
    """A conv + matmul + softmax network built with the onnx helper (no torch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype("float32"), "w")
    fc = numpy_helper.from_array(rng.standard_normal((16, 10)).astype("float32"), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], [w, fc],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return m.SerializeToString(), {"x": rng.standard_normal((batch, 3, 32, 32)).astype("float32")}, None, None


BUILTIN = {"resnet50": model_resnet50, "bert": model_bert, "tiny": model_tiny}


def load_model(name: str, batch: int):
    if name in BUILTIN:
        return BUILTIN[name](batch)
    try:
        from hetpart import models as zoo
    except ImportError as exc:
        raise LookupError(f"zoo not available ({exc})") from exc
    built = zoo.build(name) if batch == 1 else zoo.build(name, batch=batch)
    onnx_model = getattr(built, "model", built)
    onnx_bytes = onnx_model.SerializeToString() if hasattr(onnx_model, "SerializeToString") else onnx_model
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in m.graph.input:
        if inp.name in {i.name for i in m.graph.initializer}:
            continue
        dims = [d.dim_value or batch for d in inp.type.tensor_type.shape.dim]
        elem = inp.type.tensor_type.elem_type
        feeds[inp.name] = (rng.integers(0, 100, dims) if elem == 7 else rng.standard_normal(dims)).astype(
            "int64" if elem == 7 else "float32"
        )
    return onnx_bytes, feeds, None, None


def zoo_names() -> list[str]:
    try:
        from hetpart import models as zoo

        return list(zoo.names())
    except Exception as exc:  # noqa: BLE001 - being written concurrently
        log(f"zoo skipped: {exc}")
        return []


# --- timing -----------------------------------------------------------------------
def time_tvm(ex, feeds: dict, gpu: bool, repeat: int) -> float:
    import tvm
    from tvm import relax

    dev = tvm.cuda(0) if gpu else tvm.cpu(0)
    vm = relax.VirtualMachine(ex, dev)
    args = [tvm.runtime.tensor(v, dev) for v in feeds.values()]
    vm["main"](*args)  # warm-up (and CUDA-graph capture)
    res = vm.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=50 if gpu else 0)(*args)
    return float(res.median) * 1e3


def time_torch(module, example, gpu: bool, repeat: int) -> float:
    import torch

    dev = "cuda" if gpu else "cpu"
    module = module.to(dev)
    example = tuple(e.to(dev) for e in example)
    with torch.inference_mode():
        for _ in range(3):
            module(*example)
        if gpu:
            torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            module(*example)
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def build_tvm(onnx_bytes: bytes, feeds: dict, target, *, default_pipeline: bool = False):
    import onnx
    import tvm

    from hetpart import kernels
    from hetpart.importer.fusion import fuse
    from hetpart.importer.onnx_source import read_model
    from hetpart.importer.relax_import import to_relax

    # hetpart's import (checks, static shapes, shape subgraphs folded) then TVM's frontend
    source = read_model(onnx.load_from_string(onnx_bytes), {k: list(v.shape) for k, v in feeds.items()})
    mod = to_relax(source)
    if default_pipeline:
        return tvm.compile(mod, target)
    return kernels.build(fuse(mod), target)


# --- single ops (--ops conv) --------------------------------------------------------
# ResNet-50's distinct conv shapes: (in channels, in size, out channels, kernel, stride)
RESNET50_CONVS = [
    (3, 224, 64, 7, 2), (64, 56, 64, 1, 1), (64, 56, 64, 3, 1), (64, 56, 256, 1, 1),
    (256, 56, 128, 1, 1), (128, 28, 128, 3, 1), (128, 28, 512, 1, 1), (512, 28, 256, 1, 1),
    (256, 14, 256, 3, 1), (256, 14, 1024, 1, 1), (1024, 14, 512, 1, 1), (512, 7, 512, 3, 1),
    (512, 7, 2048, 1, 1), (128, 56, 128, 3, 2), (256, 56, 512, 1, 2), (256, 28, 256, 3, 2),
    (512, 14, 512, 3, 2),
]


def conv_module(batch: int, cin: int, size: int, cout: int, k: int, stride: int):
    """Fused Relax module ``relu(conv2d(x, w) + b)`` (padding k//2) and its weights."""
    from tvm import relax

    from hetpart.importer.fusion import fuse

    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin, k, k)).astype("float32") * 0.05
    b = rng.standard_normal((1, cout, 1, 1)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, cin, size, size), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=k // 2))
            y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, relax.const(b)))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return fuse(bb.get()), w, b


def run_conv_ops(args) -> list[dict]:
    """One row per ResNet-50 conv shape: ms for hetpart rules, dlight alone, torch."""
    import tvm
    from tvm.s_tir import dlight as dl

    from hetpart import kernels
    from hetpart.kernels.rules import gpu_rules
    from hetpart.targets import cuda_available, cuda_tvm_target

    if not cuda_available():
        log("no CUDA GPU: --ops conv needs one")
        return []
    target = cuda_tvm_target()
    dlight_only = [r for r in gpu_rules() if type(r).__module__.startswith("tvm.")]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for cin, size, cout, k, stride in RESNET50_CONVS:
            shape = f"{cin}x{size}x{size}->{cout} k{k}s{stride}"
            mod, w, b = conv_module(batch, cin, size, cout, k, stride)
            feeds = {"x": np.random.default_rng(1).standard_normal((batch, cin, size, size)).astype("float32")}
            row = {"model": shape, "batch": batch}
            row["rule"] = ",".join(sorted(set(kernels.rules_applied(kernels.schedule(mod, target)).values())))
            row["tvm_gpu"] = time_tvm(kernels.build(mod, target, cuda_graph=False), feeds, True, args.repeat)
            with target:
                plain = dl.ApplyDefaultSchedule(*dlight_only)(mod)
            row["dlight_gpu"] = time_tvm(tvm.compile(plain, target), feeds, True, args.repeat)
            if not args.no_torch:
                row["torch_gpu"] = time_torch_conv(feeds["x"], w, b, stride, k // 2, args.repeat)
                row["ratio_gpu"] = row["tvm_gpu"] / row["torch_gpu"]
            log(f"conv {shape} b{batch}: {row}")
            rows.append(row)
    return rows


def time_torch_conv(x, w, b, stride: int, pad: int, repeat: int) -> float:
    import torch
    import torch.nn.functional as F

    xt, wt, bt = (torch.from_numpy(a).cuda() for a in (x, w, b.reshape(-1)))
    with torch.inference_mode():
        def step():
            return F.relu(F.conv2d(xt, wt, bt, stride=stride, padding=pad))

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeat):
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times))


# --- main -------------------------------------------------------------------------
def run(args) -> list[dict]:
    from hetpart.targets import cpu_tvm_target, cuda_available, cuda_tvm_target

    targets = args.targets.split(",")
    gpu = "gpu" in targets and cuda_available()
    if "gpu" in targets and not gpu:
        log("no CUDA GPU: GPU columns skipped")
    names = args.models.split(",") if args.models else ["resnet50", "bert"] + zoo_names()
    batches = [int(b) for b in args.batches.split(",")]
    repeat = 5 if args.quick else args.repeat
    rows = []
    for name in names:
        for batch in batches:
            row = {"model": name, "batch": batch}
            try:
                log(f"{name} b{batch}: exporting")
                onnx_bytes, feeds, tmod, example = load_model(name, batch)
            except Exception as exc:  # noqa: BLE001 - a missing model is a skipped row
                log(f"{name}: skipped ({exc})")
                continue
            if "cpu" in targets:
                t0 = time.time()
                ex = build_tvm(onnx_bytes, feeds, cpu_tvm_target())
                log(f"{name} b{batch}: tvm cpu built in {time.time() - t0:.0f}s")
                row["tvm_cpu"] = time_tvm(ex, feeds, False, repeat)
                if args.baseline and batch == 1 and name in args.baseline.split(","):
                    ex = build_tvm(onnx_bytes, feeds, cpu_tvm_target(), default_pipeline=True)
                    row["tvm_cpu_default"] = time_tvm(ex, feeds, False, 2)
            if gpu:
                t0 = time.time()
                ex = build_tvm(onnx_bytes, feeds, cuda_tvm_target())
                log(f"{name} b{batch}: tvm gpu built in {time.time() - t0:.0f}s")
                row["tvm_gpu"] = time_tvm(ex, feeds, True, repeat * 4)
            if tmod is not None and not args.no_torch:
                if "cpu" in targets:
                    row["torch_cpu"] = time_torch(tmod, example, False, repeat)
                if gpu:
                    row["torch_gpu"] = time_torch(tmod, example, True, repeat * 4)
            for dev in ("cpu", "gpu"):
                if f"tvm_{dev}" in row and f"torch_{dev}" in row:
                    row[f"ratio_{dev}"] = row[f"tvm_{dev}"] / row[f"torch_{dev}"]
            log(f"{name} b{batch}: {row}")
            rows.append(row)
    return rows


COLUMNS = [
    ("model", "model"), ("batch", "batch"), ("tvm_cpu", "TVM CPU ms"), ("torch_cpu", "torch CPU ms"),
    ("ratio_cpu", "CPU TVM/torch"), ("tvm_cpu_default", "TVM CPU default ms"), ("tvm_gpu", "TVM GPU ms"),
    ("torch_gpu", "torch GPU ms"), ("ratio_gpu", "GPU TVM/torch"), ("rule", "rule"),
    ("dlight_gpu", "dlight-only GPU ms"),
]


def table(rows: list[dict]) -> str:
    """Markdown table of ``rows``; columns no row has are left out."""
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows)]

    def fmt(v):
        return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma list (resnet50, bert, tiny, zoo names); default all")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--targets", default="cpu,gpu", help="comma list of cpu, gpu")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument("--baseline", default="resnet50",
                   help="models to also time with TVM's default CPU pipeline at batch 1 ('' = none)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--out", default=None, help="directory for kernels_bench.json")
    p.add_argument("--ops", default="", choices=["", "conv"],
                   help="time single ops instead of models: 'conv' = ResNet-50 convs on the GPU")
    args = p.parse_args(argv)
    bad = [t for t in args.targets.split(",") if t not in TARGETS]
    if bad:
        p.error(f"unknown targets {bad}; choose from {TARGETS}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = run_conv_ops(args) if args.ops == "conv" else run(args)
    print(table(rows))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "kernels_bench.json"), "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0
