"""The public model corpus (issue 16): torchvision and transformers models, exported
to ONNX with random weights, run through hetpart on each device and compared with
ONNX Runtime on the CPU.

For every model and batch:

1. *prepare* (one subprocess): build the model from its config (random weights,
   nothing downloaded), ``torch.onnx.export(..., opset_version=17, dynamo=False)``,
   draw seeded inputs, run ONNX Runtime CPU on them; the ONNX file, the inputs and
   the reference outputs are cached in ``--export-dir`` and reused by later runs.
   With ``--time`` it also times PyTorch on the GPU with the forward captured in a
   CUDA graph (TF32 allowed), the GPU peer.
2. *run* (one subprocess per device): ``hetpart.load`` -> ``hetpart.partition``
   (the latency objective, every kernel pinned to the device -- all-CUDA or all-CPU
   -- but those hetpart cannot build there, e.g. TVM runtime builtins such as
   ``cumsum`` on CUDA, which the planner places and the record's ``note`` names)
   -> ``hetpart.compile`` -> ``Session.run`` on the cached inputs -> compare.

Each subprocess has a time limit, so a crash or a hang costs one record, not the
run.  Records are appended to the JSON file as they come (``--skip-done`` resumes a
cut-off run), and the markdown table beside it is rewritten each time.

Comparison: relative error ``max|a - b| / max|b|`` per output (a: hetpart, b: ONNX
Runtime), the largest over the outputs.  ``pass`` when it is at most 1e-2 with TF32
on (hetpart's default on the GPU) or 1e-4 with ``HETPART_TF32=0``, and hetpart has
no NaN/Inf where the reference has none; ``wrong`` otherwise; ``error`` when a stage
failed (``detail`` names it and the message).

Models: torchvision (resnet50, vgg11, densenet121, inception_v3, googlenet,
mobilenet_v2, mobilenet_v3_large, efficientnet_b0, convnext_tiny, vit_b_16, swin_t)
and transformers (bert, distilbert, roberta, gpt2, t5_encoder, llama (small config),
whisper_encoder, clip_text, clip_vision); ``zoo:NAME[:small]`` runs a hetpart zoo
model (no torch needed; what tests/test_bench_corpus.py uses), ``--onnx NAME=PATH`` an
ONNX file exported elsewhere.

On the GPU machine (about 1-3 min per model and device)::

    source .tvmpack/unpack.sh
    python bench/corpus.py                       # all models, batch 1, cuda and cpu
    python bench/corpus.py --models gpt2,t5_encoder,llama,swin_t --batches 1,32 --time
    # issue 17's bf16 rows: CUDA builds with bf16 weights, PyTorch under torch.autocast(bfloat16)
    python bench/corpus.py --devices cuda --batches 1,32 --time --precision bf16
    python bench/corpus.py --skip-done bench/results/corpus-nvidia-h200.json
    # a call limited to 10 min: stop at 9, results where they come back
    python3 bench/corpus.py --budget 540 --export-dir /tmp/corpus \
        --skip-done bench/results/corpus-nvidia-h200.json --out $OUT/corpus-nvidia-h200.json

Text models are exported with ``input_ids`` and an all-ones ``attention_mask`` (seq
128; CLIP text 77); Whisper with 80 x 3000 log-mel frames; images at 224 (299 for
Inception v3).  Checked without a GPU (torch 2.14.1, torchvision 0.29.1,
transformers 5.18.0): every model exports and hetpart imports it.

Here (no GPU, no torch): ``python bench/corpus.py --models zoo:gpt2:small --simulate``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCHEMA, VERSION = "hetpart-corpus", 1
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REL_ERR = "max|a-b| / max|b| per output (a: hetpart, b: ONNX Runtime CPU), largest over outputs"
SEED = 0

TORCHVISION = ["resnet50", "vgg11", "densenet121", "inception_v3", "googlenet", "mobilenet_v2",
               "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t"]
TRANSFORMERS = ["bert", "distilbert", "roberta", "gpt2", "t5_encoder", "llama", "whisper_encoder",
                "clip_text", "clip_vision"]
SEQ = 128


# ========================================================================================
# The models (torch side; imported only in the prepare subprocess)
# ========================================================================================
def torch_model(name: str, batch: int):
    """(module in eval mode, {input name: numpy array}) with seeded random weights."""
    import torch

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    if name in TORCHVISION:
        import torchvision.models as tvm

        kwargs = {"weights": None}
        if name in ("inception_v3", "googlenet"):
            kwargs.update(aux_logits=False, init_weights=False)
        size = 299 if name == "inception_v3" else 224
        module = _no_zero_layers(getattr(tvm, name)(**kwargs))
        return module.eval(), {"input": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}
    return _transformers_model(name, batch, rng)


def _no_zero_layers(module):
    """``module`` with every all-zero weight redrawn (normal, std 0.02).  torchvision
    starts some classifier heads at zero (ViT's): the output would be all zeros on
    every backend, and a comparison of zeros proves nothing."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.02)
    return module


def _transformers_model(name: str, batch: int, rng):
    import torch
    import transformers as tf

    def ids(vocab, seq=SEQ):
        # With an attention mask, as text models are exported and served (transformers 5
        # also traces torch.diff, which opset 17 lacks, when the mask is left out).
        return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64),
                "attention_mask": np.ones((batch, seq), np.int64)}

    if name == "bert":
        cfg, cls, feeds = tf.BertConfig(), tf.BertModel, None
    elif name == "distilbert":
        cfg, cls, feeds = tf.DistilBertConfig(), tf.DistilBertModel, None
    elif name == "roberta":
        cfg, cls, feeds = tf.RobertaConfig(), tf.RobertaModel, None
    elif name == "gpt2":
        cfg, cls, feeds = tf.GPT2Config(), tf.GPT2Model, None
    elif name == "t5_encoder":
        cfg, cls, feeds = tf.T5Config(num_layers=6, d_model=512, d_ff=2048, num_heads=8), tf.T5EncoderModel, None
    elif name == "llama":
        cfg = tf.LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                             num_key_value_heads=2, vocab_size=32000, max_position_embeddings=SEQ)
        cls, feeds = tf.LlamaModel, None
    elif name == "whisper_encoder":
        cfg = tf.WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                               num_mel_bins=80, max_source_positions=1500)
        cls = tf.WhisperModel
        feeds = {"input_features": rng.standard_normal((batch, 80, 3000)).astype(np.float32)}
    elif name == "clip_text":
        cfg, cls = tf.CLIPTextConfig(), tf.CLIPTextModel
        feeds = ids(cfg.vocab_size, 77)
    elif name == "clip_vision":
        cfg, cls = tf.CLIPVisionConfig(), tf.CLIPVisionModel
        feeds = {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    else:
        raise SystemExit(f"unknown corpus model {name!r}; known: {', '.join(TORCHVISION + TRANSFORMERS)}")
    cfg.use_cache = False
    try:  # the attention written op by op, which the TorchScript exporter traces plainly
        cfg._attn_implementation = "eager"
    except AttributeError:
        pass
    model = cls(cfg)
    if name == "whisper_encoder":
        model = model.get_encoder()
    feeds = feeds or ids(cfg.vocab_size)

    class Plain(torch.nn.Module):  # inputs by name, tensors out (not a ModelOutput)
        def __init__(self, inner, names):
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *args):
            out = self.inner(**dict(zip(self.names, args)))
            values = out.values() if hasattr(out, "values") else out
            return tuple(v for v in values if isinstance(v, torch.Tensor))

    return Plain(model, list(feeds)).eval(), feeds


def export(name: str, batch: int, path: Path) -> dict:
    """Export ``name`` to ``path``; returns the inputs (also the ones ORT will see)."""
    import torch

    module, feeds = torch_model(name, batch)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    with torch.inference_mode():
        n_out = len(_as_tuple(module(*args)))
    partial = path.with_name(path.name + ".partial")  # a cut-off export is never reused
    torch.onnx.export(module, args, str(partial), input_names=list(feeds),
                      output_names=[f"output_{i}" for i in range(n_out)],
                      opset_version=17, dynamo=False, do_constant_folding=True)
    partial.replace(path)
    return feeds


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


AUTOCAST = {"bf16": lambda torch: torch.bfloat16, "fp16": lambda torch: torch.float16}
PRECISIONS = ("fp32", "bf16", "fp16")  # of the CUDA builds (--precision); the CPU builds stay fp32
TOLERANCE = {"tf32_on": 1e-2, "tf32_off": 1e-4, "bf16": 2e-2, "fp16": 2e-2}


def time_torch_cuda_graph(name: str, batch: int, feeds: dict, repeat: int, precision: str = "fp32") -> float:
    """Median ms of the module's forward replayed from a CUDA graph, TF32 allowed;
    ``bf16``/``fp16``: the forward under ``torch.autocast`` to that type (issue 17's peer)."""
    import contextlib

    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    module, _ = torch_model(name, batch)
    module = module.cuda()
    args = [torch.from_numpy(v).cuda() for v in feeds.values()]
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        warm = torch.autocast("cuda", dtype=AUTOCAST[precision](torch)) if precision in AUTOCAST else None
        with torch.cuda.stream(stream), (warm or contextlib.nullcontext()):
            for _ in range(3):
                module(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        autocast = (torch.autocast("cuda", dtype=AUTOCAST[precision](torch)) if precision in AUTOCAST
                    else contextlib.nullcontext())
        with torch.cuda.graph(graph), autocast:
            module(*args)
        times = []
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times))


# ========================================================================================
# Stage 1: prepare (export, inputs, ONNX Runtime reference)
# ========================================================================================
def cached_paths(export_dir: Path, name: str, batch: int) -> tuple[Path, Path, Path]:
    stem = name.replace(":", "_").replace("=", "-").replace(",", "_").replace("/", "-")
    base = export_dir / f"{stem}-b{batch}"
    return base.with_suffix(".onnx"), base.with_suffix(".npz"), base.with_suffix(".json")


def prepare(name: str, batch: int, export_dir: Path, onnx_path: str | None, timing: bool, repeat: int,
            precision: str = "fp32") -> None:
    """Write the ONNX file, inputs + reference outputs (npz) and notes (json)."""
    model_path, data_path, meta_path = cached_paths(export_dir, name, batch)
    export_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if onnx_path:
        model_path = Path(onnx_path)
        feeds = None
    elif name.startswith("zoo:"):
        feeds = _zoo_export(name, batch, model_path)
    elif not model_path.exists():
        t0 = time.perf_counter()
        feeds = export(name, batch, model_path)
        meta["export_s"] = round(time.perf_counter() - t0, 1)
    else:
        feeds = None
    if feeds is None:
        feeds = dict(np.load(data_path)) if data_path.exists() else _random_feeds(model_path)
        feeds = {k: v for k, v in feeds.items() if not k.startswith("ref:")}
    meta["onnx"] = str(model_path)
    outputs = _onnxruntime(model_path).run(None, feeds)
    np.savez(data_path, **feeds, **{f"ref:{i}": o for i, o in enumerate(outputs)})
    if timing and not name.startswith("zoo:") and not onnx_path and _torch_has_cuda():
        meta[_peer_key(precision)] = time_torch_cuda_graph(name, batch, feeds, repeat, precision)
    meta_path.write_text(json.dumps(meta, indent=1))


def _zoo_export(spec: str, batch: int, path: Path) -> dict:
    from hetpart import models

    name, small, cfg = models.parse_zoo_spec(spec)
    cfg["batch"] = batch
    model = models.build(name, small, **cfg)
    models.save(model, path)
    return models.example_inputs(model, seed=SEED)


def _random_feeds(path: Path) -> dict:
    """Seeded inputs for an ONNX file given with --onnx (standard normal floats, ids < 100)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    rng = np.random.default_rng(SEED)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = (rng.integers(0, 100, shape) if np.issubdtype(dtype, np.integer)
                          else rng.standard_normal(shape)).astype(dtype)
    return feeds


def _onnxruntime(path: Path, threads: int | None = None):
    from hetpart.bench.peers import ort_session

    return ort_session(path, threads=threads)


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# ========================================================================================
# Stage 2: run on one device and compare
# ========================================================================================
def _peer_key(precision: str) -> str:
    return "torch_cuda_graph_ms" if precision == "fp32" else f"torch_cuda_graph_{precision}_ms"


def run_device(name: str, batch: int, device: str, export_dir: Path, simulate: bool, profile: str,
               timing: bool, repeat: int, out, precision: str = "fp32") -> None:
    """hetpart on ``device`` (every kernel there); writes one JSON record line to ``out``."""
    import hetpart
    from hetpart.partitioner import Pin

    model_path, data_path, meta_path = cached_paths(export_dir, name, batch)
    meta = json.loads(meta_path.read_text())
    data = dict(np.load(data_path))
    feeds = {k: v for k, v in data.items() if not k.startswith("ref:")}
    refs = [data[f"ref:{i}"] for i in range(sum(k.startswith("ref:") for k in data))]
    precision = precision if device == "cuda" else "fp32"
    low = None if precision == "fp32" else f"cuda={precision},cpu=fp32"
    record = {"model": name, "batch": batch, "device": device, "precision": precision, "tf32": tf32_on(),
              "simulated": simulate and device == "cuda"}
    stage = "import"
    try:
        graph = hetpart.load(meta["onnx"])
        stage = "plan"
        prof = _profile(graph, profile, device)
        pinned, elsewhere = _device_pins(graph, device)
        plan = hetpart.partition(graph, "latency", profile=prof, pins=[Pin(k, device) for k in pinned],
                                 progress=False, precision=low)
        if elsewhere:
            record["note"] = f"{len(elsewhere)} kernel(s) hetpart cannot build for {device} left to the planner: " \
                             + ", ".join(sorted({graph.kernels[k].func for k in elsewhere})[:5])
        stage = "compile"
        compiled = hetpart.compile(plan, graph, simulate=simulate, progress=False, options=_kernel_options(),
                                   precision=low)
        stage = "run"
        with hetpart.Session(compiled) as session:
            got = list(session.run(_session_feeds(session, feeds)).values())
            if timing:
                record.update(_timings(session, feeds, device, model_path, meta, repeat, precision))
        stage = "compare"
        record.update(compare(got, refs, precision))
    except Exception as exc:  # noqa: BLE001 - any failure is this record's result
        first = (str(exc).strip().splitlines() or [""])[0]
        record.update(status="error", rel_err=None, detail=f"{stage}: {type(exc).__name__}: {first[:400]}")
    out.write(json.dumps(record) + "\n")
    out.flush()


def _device_pins(graph, device: str) -> tuple[list[str], list[str]]:
    """Kernel ids to pin to ``device`` (all it can build), and the rest (e.g. TVM
    runtime builtins such as cumsum or topk on CUDA), which the planner places."""
    from hetpart.kernels.capabilities import unsupported_reason

    ok = [k for k, kernel in graph.kernels.items() if unsupported_reason(kernel, device) is None]
    return ok, [k for k in graph.kernels if k not in set(ok)]


def _profile(graph, how: str, device: str):
    """None (hetpart resolves: this machine's profile, else the recorded one), a path,
    or 'quick': measure the kernels the profile lacks with few repeats first."""
    if how == "quick":
        from hetpart.costmodel import profile
        from hetpart.costmodel.kernel_bench import MeasureSettings

        return profile(graph, targets=(device,), settings=MeasureSettings.quick(), progress=False)
    return None if how in ("", "recorded") else how


def _timings(session, feeds, device, model_path, meta, repeat, precision: str = "fp32") -> dict:
    """hetpart's median ms and its peer's: ONNX Runtime CPU (all cores) or PyTorch
    with a CUDA graph (measured in prepare)."""
    run_feeds = _session_feeds(session, feeds)
    hetpart_ms = _median_ms(lambda: session.run(run_feeds), repeat)
    out = {"hetpart_ms": round(hetpart_ms, 4)}
    if device == "cpu":
        from hetpart.cpu_cores import physical_cores

        sess = _onnxruntime(model_path, threads=physical_cores())
        out.update(peer="onnxruntime_cpu", peer_ms=round(_median_ms(lambda: sess.run(None, feeds), repeat), 4))
    elif _peer_key(precision) in meta:
        peer = "torch_cuda_graph" if precision == "fp32" else f"torch_cuda_graph_autocast_{precision}"
        out.update(peer=peer, peer_ms=round(meta[_peer_key(precision)], 4))
    return out


def _session_feeds(session, feeds: dict) -> dict:
    names = [t.name for t in session.compiled.inputs]
    return feeds if set(names) == set(feeds) else dict(zip(names, feeds.values()))


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def tf32_on() -> bool:
    """``HETPART_TF32=0`` asks for full-float32 GPU builds (read here, at the script's edge)."""
    return os.environ.get("HETPART_TF32", "1") != "0"


def _kernel_options():
    """The kernel options of every build in this run: this GPU's, TF32 as ``tf32_on``."""
    from hetpart.kernels.options import resolve

    return resolve(tf32=tf32_on())


def compare(got: list, refs: list, precision: str = "fp32") -> dict:
    """status/rel_err/detail of hetpart's outputs against the (float32) reference's."""
    tol = TOLERANCE.get(precision) or (TOLERANCE["tf32_on"] if tf32_on() else TOLERANCE["tf32_off"])
    if len(got) != len(refs):
        return {"status": "wrong", "rel_err": None, "detail": f"{len(got)} outputs, reference has {len(refs)}"}
    worst, notes = 0.0, []
    for i, (a, b) in enumerate(zip(got, refs)):
        a = np.asarray(a)
        if a.shape != b.shape:
            return {"status": "wrong", "rel_err": None, "detail": f"output {i}: shape {a.shape}, reference {b.shape}"}
        if b.dtype.kind in "fc":
            bad = ~np.isfinite(a) & np.isfinite(b)
            if bad.any():
                notes.append(f"output {i}: {int(bad.sum())} of {a.size} NaN/Inf where the reference is finite")
        err = rel_err(a, b)
        worst = max(worst, err)
    status = "pass" if worst <= tol and not notes else "wrong"
    detail = "; ".join(notes) or f"tolerance {tol:g}"
    return {"status": status, "rel_err": worst, "detail": detail}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b| over the finite reference values (0/0 counts as 0)."""
    if b.size == 0:
        return 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(b64)
    if not finite.any():
        return 0.0
    diff = np.abs(a64 - b64)[finite]
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = float(np.max(np.abs(b64[finite])))
    top = float(np.max(diff))
    return top / scale if scale else top


# ========================================================================================
# The driver: subprocesses with time limits, records appended as they come
# ========================================================================================
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    out_json = Path(args.out or RESULTS / f"corpus-{gpu_slug(args.simulate)}.json")
    results = load_results(out_json)
    earlier = load_results(Path(args.skip_done))["records"] if args.skip_done else []
    done = {_key(r) for r in earlier}
    # The output always holds the union: a run on a fresh machine writing elsewhere
    # (e.g. $OUT) still returns the whole table.
    results["records"] += [r for r in earlier if _key(r) not in {_key(x) for x in results["records"]}]
    start = time.monotonic()
    deadline = start + args.budget if args.budget else float("inf")
    onnx_files = dict(item.split("=", 1) for item in args.onnx)
    names = args.models.split(",") if args.models else (list(onnx_files) or TORCHVISION + TRANSFORMERS)
    devices = args.devices.split(",")
    for batch in (int(b) for b in args.batches.split(",")):
        for name in names:
            todo = [d for d in devices if (name, batch, d, args.precision if d == "cuda" else "fp32") not in done]
            if todo and time.monotonic() > deadline - 30:
                print(f"budget of {args.budget:g} s spent; stopping before {name} b{batch}", flush=True)
                break
            if todo:
                for record in run_model(name, batch, todo, args, onnx_files.get(name), deadline):
                    results["records"] = [r for r in results["records"] if _key(r) != _key(record)] + [record]
                    save_results(out_json, results)
                    print(_line(record), flush=True)
    save_results(out_json, results)
    return 0


def run_model(name: str, batch: int, devices: list[str], args, onnx_path: str | None,
              deadline: float = float("inf")) -> list[dict]:
    """Records of ``name`` at ``batch`` on ``devices``; stage failures become error
    records.  A stage cut by ``deadline`` (``time.monotonic()``, from --budget) gives
    no record, so the next call (--skip-done) runs it again."""
    export_dir = Path(args.export_dir)
    common = ["--export-dir", str(export_dir), "--repeat", str(args.repeat), "--precision", args.precision] + (
        ["--time"] if args.time else [])
    prep = [sys.executable, __file__, "--worker", "prepare", "--models", name, "--batches", str(batch), *common]
    if onnx_path:
        prep += ["--onnx", f"{name}={onnx_path}"]
    limit, cut = _stage_limit(args.timeout, deadline)
    failure = _call(prep, limit, "prepare (export / ONNX Runtime)")
    if failure:
        return [] if cut and "timed out" in failure else [_error(name, batch, d, failure, args.precision) for d in devices]
    records = []
    for device in devices:
        cmd = [sys.executable, __file__, "--worker", "run", "--models", name, "--batches", str(batch),
               "--devices", device, "--profile", args.profile, *common] + (["--simulate"] if args.simulate else [])
        limit, cut = _stage_limit(args.timeout, deadline)
        if limit <= 0:
            break
        with _Capture() as cap:
            failure = _call(cmd, limit, f"run on {device}", stdout=cap.file)
            lines = [json.loads(line) for line in cap.text().splitlines() if line.startswith("{")]
        if not lines and cut and failure and "timed out" in failure:
            break
        records.append(lines[-1] if lines else _error(name, batch, device, failure or "no record written", args.precision))
    return records


def _stage_limit(timeout: float, deadline: float) -> tuple[float, bool]:
    """(seconds this stage may take, whether the budget rather than --timeout bounds it)."""
    left = deadline - time.monotonic()
    return (min(timeout, left), left < timeout)


class _Capture:
    """A temporary file a subprocess writes its record line to."""

    def __enter__(self):
        import tempfile

        self.file = tempfile.TemporaryFile(mode="w+")
        return self

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read()

    def __exit__(self, *exc):
        self.file.close()


def _call(cmd: list[str], timeout: float, what: str, stdout=None) -> str | None:
    """None on success, else why the stage failed (exit code, time limit, last stderr line)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"{what}: timed out after {timeout:g} s"
    if proc.returncode:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or [""]
        return f"{what}: exit code {proc.returncode}: {tail[0][:400]}"
    return None


def _error(name: str, batch: int, device: str, detail: str, precision: str = "fp32") -> dict:
    return {"model": name, "batch": batch, "device": device, "precision": precision if device == "cuda" else "fp32",
            "tf32": tf32_on(),
            "status": "error", "rel_err": None, "detail": detail}


def _worker(args) -> int:
    name, batch = args.models, int(args.batches)
    export_dir = Path(args.export_dir)
    if args.worker == "prepare":
        onnx_path = dict(item.split("=", 1) for item in args.onnx).get(name)
        prepare(name, batch, export_dir, onnx_path, args.time, args.repeat, args.precision)
    else:
        run_device(name, batch, args.devices, export_dir, args.simulate, args.profile, args.time, args.repeat,
                   sys.stdout, args.precision)
    return 0


def _key(r: dict) -> tuple:
    return (r["model"], r["batch"], r["device"], r.get("precision", "fp32"))


def _line(r: dict) -> str:
    err = "-" if r.get("rel_err") is None else f"{r['rel_err']:.2e}"
    return f"{r['model']:<22} b{r['batch']:<3} {r['device']:<5} {r['status']:<6} rel_err {err}  {r['detail']}"


def gpu_slug(simulate: bool) -> str:
    """``nvidia-h200`` (the GPU's name); ``simulated`` / ``cpu-only`` without one."""
    from hetpart.bench import gpu_slug as slug, machine

    return "simulated" if simulate else slug(machine())


def load_results(path: Path) -> dict:
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            return data
    return {"schema": SCHEMA, "version": VERSION, "relative_error": REL_ERR,
            "tolerance": dict(TOLERANCE), "records": []}


def save_results(path: Path, results: dict) -> None:
    """The JSON (atomically) and the markdown table beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)
    path.with_suffix(".md").write_text(markdown(results))


def markdown(results: dict) -> str:
    rows = ["| model | batch | device | precision | TF32 | status | rel. error | hetpart ms | peer | peer ms | detail |",
            "|---|---:|---|---|---|---|---:|---:|---|---:|---|"]
    for r in sorted(results["records"], key=lambda r: (r["model"], r["batch"], r["device"], not r.get("tf32", True))):
        err = "–" if r.get("rel_err") is None else f"{r['rel_err']:.1e}"
        ms = lambda k: "–" if r.get(k) is None else f"{r[k]:.3f}"  # noqa: E731
        detail = "; ".join(filter(None, [str(r.get("detail", "")), r.get("note")])).replace("|", "\\|")
        tf32 = "–" if r["device"] != "cuda" else ("on" if r.get("tf32", True) else "off")
        rows.append(f"| {r['model']} | {r['batch']} | {r['device']} | {r.get('precision', 'fp32')} | {tf32} "
                    f"| {r['status']} | {err} | {ms('hetpart_ms')} "
                    f"| {r.get('peer', '–')} | {ms('peer_ms')} | {detail} |")
    head = (f"# Model corpus ({results['schema']} v{results['version']})\n\n"
            f"Relative error: {results['relative_error']}. Pass: at most {results['tolerance']['tf32_on']:g} "
            f"with TF32 on, {results['tolerance']['tf32_off']:g} with `HETPART_TF32=0`, "
            f"{results['tolerance'].get('bf16', 2e-2):g} for bf16/fp16 CUDA builds (`--precision`), and no NaN/Inf the "
            f"reference lacks. Written by `bench/corpus.py`.\n\n")
    return head + "\n".join(rows) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="", help="comma list (default: every corpus model); zoo:NAME[:small] too")
    p.add_argument("--batches", default="1", help="comma list, e.g. 1,32")
    p.add_argument("--devices", default="cuda,cpu", help="comma list of cuda, cpu")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/corpus-<gpu>.json)")
    p.add_argument("--skip-done", default=None, metavar="FILE", help="skip (model, batch, device) recorded in FILE")
    p.add_argument("--export-dir", default=str(Path.home() / ".cache" / "hetpart" / "corpus"),
                   help="cached ONNX exports, inputs and reference outputs")
    p.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH", help="an ONNX file exported elsewhere")
    p.add_argument("--timeout", type=float, default=300, help="seconds per stage subprocess")
    p.add_argument("--budget", type=float, default=0,
                   help="seconds of wall clock for the whole call (0: no limit); stages are cut at it and "
                        "leave no record (a later --skip-done call runs them), so a time-limited call ends in "
                        "time with what it finished written")
    p.add_argument("--profile", default="recorded",
                   help="'recorded' (this machine's profile, else the shipped recording; no measuring), "
                        "'quick' (measure missing kernels with few repeats), or a profile PATH")
    p.add_argument("--simulate", action="store_true", help="CUDA partitions compiled and run on the CPU")
    p.add_argument("--time", action="store_true", help="also record hetpart_ms, peer and peer_ms")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the CUDA builds' precision (bf16/fp16: weights stored so, tolerance 2e-2; the peer "
                        "runs under torch.autocast to that type); CPU builds stay fp32")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per measurement with --time")
    p.add_argument("--worker", choices=["prepare", "run"], help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    sys.exit(main())
