"""The public model corpus (issue 16): torchvision and transformers models, exported
to ONNX with random weights, run through hetpart on each device and compared with
ONNX Runtime on the CPU.

For every model and batch (an *item*):

1. *prepare* (untimed; up to ``--jobs`` items at once, default a quarter of the CPUs):

   a. one subprocess: build the model from its config (random weights, nothing
      downloaded), ``torch.onnx.export(..., opset_version=17, dynamo=False)``, draw
      seeded inputs, run ONNX Runtime CPU on them; the ONNX file, the inputs and the
      reference outputs are cached in ``--export-dir`` and reused by later runs.
   b. one subprocess per device: ``hetpart.load`` -> ``hetpart.partition`` (the
      latency objective, every kernel pinned to the device -- all-CUDA or all-CPU --
      but those hetpart cannot build there, e.g. TVM runtime builtins such as
      ``cumsum`` on CUDA, which the planner places and the record's ``note`` names)
      -> ``hetpart.compile``, the artifact saved in a directory that lives for this
      call only.
2. *measure* (one item at a time, never beside another measure): with ``--time``,
   PyTorch on the GPU with the forward captured in a CUDA graph (TF32 allowed), the
   GPU peer (one subprocess); then per device one subprocess: ``Session`` on the
   build -> ``run`` on the cached inputs (timed with ``--time``) -> compare.

What a CUDA record's times measure (``TIMING_FIELDS``, also in the JSON): each side at
two boundaries, timed the same way -- numpy in, numpy out (``hetpart_ms`` against
``peer_host_ms``) and inputs already on the GPU, outputs back to numpy
(``hetpart_device_ms``, hetpart fed TVM CUDA tensors through DLPack, against
``peer_device_ms``) -- plus the CUDA graph's replay alone on the GPU's clock
(``peer_ms``).  ``Session.run`` always returns numpy, so no hetpart time leaves its
outputs on the GPU.  The table's ratios are taken within one boundary only.

Timings and compiles: a CPU record's timing (hetpart and ONNX Runtime on every core)
waits until no prepare runs, and none starts meanwhile; a CUDA record's timing runs
beside the prepares of later items, on other cores (``compiles_beside_timing`` in
the record: at most that many ran; ``--quiet-timing`` makes every timing wait, and
``--jobs 1`` runs one stage at a time, as before ``--jobs``).  The peer's CUDA-graph
time is taken on the GPU by CUDA events, which compiles on the CPU do not enter.

Each subprocess has a time limit, so a crash or a hang costs one record, not the
run.  Records are written to the JSON file as they come (``--skip-done`` resumes a
cut-off run), in item order, and the markdown table beside it is rewritten each time.

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

On the GPU machine (about 1-3 min per model and device, ``--jobs`` items compiled side by side)::

    source .tvmpack/unpack.sh
    python bench/corpus.py                       # all models, batch 1, cuda and cpu
    python bench/corpus.py --models gpt2,t5_encoder,llama,swin_t --batches 1,32 --time
    # issue 17's bf16 rows: CUDA builds with bf16 weights, PyTorch under torch.autocast(bfloat16)
    python bench/corpus.py --devices cuda --batches 1,32 --time --precision bf16
    python bench/corpus.py --skip-done bench/results/corpus-nvidia-h200.json
    # a call limited to 10 min: stop at 9, results where they come back
    python3 bench/corpus.py --budget 540 --export-dir /tmp/corpus \
        --skip-done bench/results/corpus-nvidia-h200.json --out $OUT/corpus-nvidia-h200.json

``--cpu-conv-block N`` builds the CPU rows with their convolutions channel-blocked,
``NCHW{N}c`` (``hetpart.load(..., conv_block=N)``; 16 for AVX-512, 8 for AVX2; it pays on
resnet-like and depthwise nets): every CPU record says its ``layout``, a blocked one
also ``conv_block``, which is part of its key, so it sits beside the NCHW record.  ``partition
MODEL``'s all-CPU plans take NCHW16c by default on AVX-512 CPUs
(:func:`hetpart.importer.conv_layout.default_block`); this bench stays NCHW unless asked, so a
record's key is known before its import: the convnets' rows as ``partition`` builds them there::

    python bench/corpus.py --devices cpu --models resnet50,googlenet --time --cpu-conv-block 16

Text models are exported with ``input_ids`` and an all-ones ``attention_mask`` (seq
128; CLIP text 77); Whisper with 80 x 3000 log-mel frames; images at 224 (299 for
Inception v3).  Checked without a GPU (torch 2.14.1, torchvision 0.29.1,
transformers 5.18.0): every model exports and hetpart imports it.

Here (no GPU, no torch): ``python bench/corpus.py --models zoo:gpt2:small --simulate``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA, VERSION = "hetpart-corpus", 2
# Version 2 adds timing fields (hetpart_device_ms, device_run_copies, peer_device_ms; peer_host_ms at every
# batch) and this note; nothing was renamed or removed, so a version-1 file reads as version 2 with those
# fields absent from its records (load_results upgrades it in place).
TIMING_FIELDS = {
    "hetpart_ms": "hetpart Session.run wall time, numpy in -> numpy out (feeds copied to the GPU, outputs back)",
    "hetpart_device_ms": "the same compiled Session.run, feeds already on the GPU (TVM CUDA tensors through "
                         "DLPack, no copy); outputs still come back as numpy (Session.run always returns host "
                         "arrays); an index input's range check copies it to the host (text models)",
    "device_run_copies": "copies the last device-resident run made: feed_copies and h2d 0 when no feed crossed "
                         "from the host; d2h / bytes_d2h the outputs",
    "peer_ms": "cuda: PyTorch CUDA-graph replay alone, GPU time by CUDA events, inputs and outputs on the GPU; "
               "cpu: ONNX Runtime CPU wall time, numpy in -> numpy out",
    "peer_host_ms": "cuda: the peer's wall time numpy in -> numpy out (inputs copied in, replay, outputs copied "
                    "back): hetpart_ms's boundary",
    "peer_device_ms": "cuda: the peer's wall time from inputs on the GPU to outputs copied back to numpy: "
                      "hetpart_device_ms's boundary",
    "ratios": "the table's x columns are hetpart / peer at one boundary: np->np = hetpart_ms / peer_host_ms "
              "(cpu: / peer_ms), GPU-in = hetpart_device_ms / peer_device_ms; no ratio mixes boundaries",
}
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
def torch_model(name: str, batch: int, attention: str = "eager"):
    """(module in eval mode, {input name: numpy array}) with seeded random weights.

    ``attention`` is transformers' attention implementation: ``eager`` (op by op) for
    the export, ``sdpa`` for the PyTorch peer -- what its users run, and the one
    DistilBERT's forward can be captured in a CUDA graph with (its eager mask fill
    makes a CPU scalar tensor: "Cannot copy between CPU and CUDA tensors during CUDA
    graph capture").  The weights are the same either way (same seed, same params)."""
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
    return _transformers_model(name, batch, rng, attention)


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


def _transformers_model(name: str, batch: int, rng, attention: str = "eager"):
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
    try:  # eager: the attention written op by op, which the TorchScript exporter traces plainly
        cfg._attn_implementation = attention
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


@dataclass(frozen=True)
class PeerTimes:
    """PyTorch's CUDA-graph forward timed at the three boundaries a corpus record
    carries (medians of ``repeat`` runs, ms), and its outputs.

    ``gpu_ms``: the replay alone, GPU time by CUDA events, inputs and outputs resident
    (``peer_ms``).  ``host_ms``: wall time from numpy to numpy -- the inputs copied
    into the graph's, the replay, the outputs copied back (``peer_host_ms``; hetpart's
    ``hetpart_ms`` boundary).  ``device_ms``: wall time from inputs already on the GPU
    to outputs copied back to numpy (``peer_device_ms``; hetpart's
    ``hetpart_device_ms`` boundary: its ``Session.run`` always returns numpy).
    ``outputs``: float32 numpy, in the export's output order."""

    gpu_ms: float
    host_ms: float
    device_ms: float
    outputs: list


def time_torch_cuda_graph(name: str, batch: int, feeds: dict, repeat: int,
                          precision: str = "fp32") -> PeerTimes:
    """The module's forward replayed from a CUDA graph, TF32 allowed; ``bf16``/``fp16``:
    the forward under ``torch.autocast`` to that type (issue 17's peer), timed at each
    boundary of :class:`PeerTimes`.  Its outputs let the peer's own error against the
    float32 reference stand beside hetpart's."""
    import contextlib

    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    module, _ = torch_model(name, batch, attention="sdpa")
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
            outputs = _as_tuple(module(*args))
        times = []
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))

        def to_numpy():  # .cpu() waits for the replay; numpy has no bfloat16: widened on the GPU
            return [(o.float() if o.dtype == torch.bfloat16 else o).cpu().numpy() for o in outputs]

        def host_run():
            for arg, value in zip(args, feeds.values()):
                arg.copy_(torch.from_numpy(value))
            graph.replay()
            return to_numpy()

        def device_run():
            graph.replay()
            return to_numpy()

        host_ms, device_ms = _median_ms(host_run, repeat), _median_ms(device_run, repeat)
        got = [o.float().cpu().numpy() for o in outputs]
    return PeerTimes(float(np.median(times)), host_ms, device_ms, got)


# ========================================================================================
# Stage 1: prepare (export, inputs, ONNX Runtime reference)
# ========================================================================================
def _stem(name: str) -> str:
    return name.replace(":", "_").replace("=", "-").replace(",", "_").replace("/", "-")


def cached_paths(export_dir: Path, name: str, batch: int) -> tuple[Path, Path, Path]:
    base = export_dir / f"{_stem(name)}-b{batch}"
    return base.with_suffix(".onnx"), base.with_suffix(".npz"), base.with_suffix(".json")


def prepare(name: str, batch: int, export_dir: Path, onnx_path: str | None) -> None:
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
    meta_path.write_text(json.dumps(meta, indent=1))


def has_torch_peer(name: str, onnx_path: str | None) -> bool:
    """Whether ``name`` has a PyTorch module to time as the GPU peer (corpus models do;
    zoo models and --onnx files do not)."""
    return not name.startswith("zoo:") and not onnx_path


def time_peer(name: str, batch: int, export_dir: Path, repeat: int, precision: str = "fp32") -> None:
    """PyTorch's CUDA-graph time on the prepared inputs, into the notes (json) as
    ``_peer_key(precision)``; nothing without a GPU for torch.  A timed stage: the
    driver runs it alone, never beside another timing."""
    if not _torch_has_cuda():
        return
    _, data_path, meta_path = cached_paths(export_dir, name, batch)
    data = dict(np.load(data_path))
    feeds = {k: v for k, v in data.items() if not k.startswith("ref:")}
    refs = [data[f"ref:{i}"] for i in range(sum(k.startswith("ref:") for k in data))]
    meta = json.loads(meta_path.read_text())
    times = time_torch_cuda_graph(name, batch, feeds, repeat, precision)
    key = _peer_key(precision)
    meta[key], meta[key + "_host"], meta[key + "_device"] = times.gpu_ms, times.host_ms, times.device_ms
    meta[key + "_rel_err"] = peer_rel_err(times.outputs, refs)
    meta_path.write_text(json.dumps(meta, indent=1))


def peer_rel_err(got: list, refs: list) -> float | None:
    """The peer's largest relative error over the outputs (:func:`rel_err`) against the
    float32 reference, or None when its outputs do not line up with the export's (count
    or shapes): the scale of error TF32/bf16 itself brings, beside hetpart's."""
    if len(got) != len(refs) or any(np.shape(a) != np.shape(b) for a, b in zip(got, refs)):
        return None
    return max((rel_err(np.asarray(a), b) for a, b in zip(got, refs) if b.dtype.kind in "fc"), default=0.0)


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


BUILD_RECORD = "record.json"  # in a build directory: the record so far, beside the artifact


def build_device(name: str, batch: int, device: str, export_dir: Path, build_dir: Path, simulate: bool,
                 profile: str, precision: str = "fp32", conv_block: int | None = None) -> dict:
    """hetpart's import -> plan (every kernel on ``device``) -> compile; the artifact
    and the record so far (``BUILD_RECORD``) saved in ``build_dir``.  Returns that
    record; a failed stage makes it final (status ``error``, ``detail`` names it).
    ``conv_block`` (CPU only; ``--cpu-conv-block``): the import puts the convolutions in
    ``NCHW{conv_block}c`` (``hetpart.load(..., conv_block=...)``); a CPU record says its
    ``layout`` either way (:func:`_layout_fields`)."""
    import hetpart
    from hetpart.partitioner import Pin

    meta = json.loads(cached_paths(export_dir, name, batch)[2].read_text())
    precision = precision if device == "cuda" else "fp32"
    low = None if precision == "fp32" else f"cuda={precision},cpu=fp32"
    block = conv_block if device == "cpu" else None
    record = {"model": name, "batch": batch, "device": device, "precision": precision, "tf32": tf32_on(),
              "simulated": simulate and device == "cuda", **_layout_fields(device, block)}
    stage = "import"
    try:
        graph = hetpart.load(meta["onnx"], conv_block=block)
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
        compiled.save(build_dir)
    except Exception as exc:  # noqa: BLE001 - any failure is this record's result
        _failed(record, stage, exc)
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / BUILD_RECORD).write_text(json.dumps(record))
    return record


def _layout_fields(device: str, conv_block: int | None) -> dict:
    """What a record says of its convolutions' layout: a CPU record ``layout`` ("NCHW",
    or "NCHW16c" with ``conv_block`` 16, which also enters its key: :func:`_key`); a
    CUDA record nothing (always NCHW)."""
    if device != "cpu":
        return {}
    return {"layout": f"NCHW{conv_block}c", "conv_block": conv_block} if conv_block else {"layout": "NCHW"}


def measure_device(build_dir: Path, export_dir: Path, timing: bool, repeat: int) -> dict:
    """The build in ``build_dir`` run on the cached inputs (timed with ``timing``) and
    compared with the reference: its record, complete."""
    import hetpart

    record = json.loads((build_dir / BUILD_RECORD).read_text())
    _, data_path, meta_path = cached_paths(export_dir, record["model"], record["batch"])
    meta = json.loads(meta_path.read_text())
    data = dict(np.load(data_path))
    feeds = {k: v for k, v in data.items() if not k.startswith("ref:")}
    refs = [data[f"ref:{i}"] for i in range(sum(k.startswith("ref:") for k in data))]
    model_path = Path(meta["onnx"])  # the export, or the file given with --onnx
    stage = "run"
    try:
        with hetpart.Session(build_dir) as session:
            got = list(session.run(_session_feeds(session, feeds)).values())
            if timing:
                record.update(_timings(session, feeds, record["device"], model_path, meta, repeat,
                                       record["precision"]))
        stage = "compare"
        record.update(compare(got, refs, record["precision"]))
    except Exception as exc:  # noqa: BLE001 - any failure is this record's result
        _failed(record, stage, exc)
    return record


def _failed(record: dict, stage: str, exc: Exception) -> None:
    first = (str(exc).strip().splitlines() or [""])[0]
    record.update(status="error", rel_err=None, detail=f"{stage}: {type(exc).__name__}: {first[:400]}")


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
    with a CUDA graph (measured in prepare), at the boundaries ``TIMING_FIELDS``
    names.  On a real GPU hetpart is also timed with its feeds already there
    (:func:`time_device_resident`).  On the CPU, each side is timed once the
    process's other threads are quiet (``hetpart.bench.settle``: TVM's pool workers
    spin on after hetpart's runs, ORT's after its own), its waits recorded
    (``settle_ms``: before hetpart's timing, before ORT's)."""
    run_feeds = _session_feeds(session, feeds)
    waits = []
    if device == "cpu":
        from hetpart.bench.settle import settle

        waits.append(settle())
    hetpart_ms = _median_ms(lambda: session.run(run_feeds), repeat)
    out = {"hetpart_ms": round(hetpart_ms, 4)}
    if device == "cpu":
        from hetpart.cpu_cores import physical_cores

        sess = _onnxruntime(model_path, threads=physical_cores())
        waits.append(settle())
        out.update(peer="onnxruntime_cpu", peer_ms=round(_median_ms(lambda: sess.run(None, feeds), repeat), 4),
                   settle_ms=[round(w.waited_s * 1e3, 1) for w in waits])
        return out
    if session.real_gpu:  # a simulated CUDA build has no GPU to feed
        out.update(time_device_resident(session, run_feeds, repeat))
    key = _peer_key(precision)
    if key in meta:
        peer = "torch_cuda_graph" if precision == "fp32" else f"torch_cuda_graph_autocast_{precision}"
        out.update(peer=peer, peer_ms=round(meta[key], 4))
        for suffix, field in (("_host", "peer_host_ms"), ("_device", "peer_device_ms")):
            if meta.get(key + suffix) is not None:  # notes written before a boundary was timed: no field
                out[field] = round(meta[key + suffix], 4)
        if meta.get(key + "_rel_err") is not None:
            out["peer_rel_err"] = meta[key + "_rel_err"]
    return out


def time_device_resident(session, run_feeds: dict, repeat: int, to_device=None) -> dict:
    """``hetpart_device_ms``: the median wall time of ``session.run`` with every feed
    already on the GPU (a TVM CUDA tensor, taken through DLPack without a copy), and
    ``device_run_copies``: the copies the last such run made (``feed_copies`` and
    ``h2d``: 0 when no feed crossed from the host; ``d2h``/``bytes_d2h``: the outputs,
    which ``Session.run`` always returns as numpy).  ``to_device`` (array -> device
    tensor) defaults to ``tvm.runtime.tensor(array, tvm.cuda(0))``.

    Invariant: the device copies are made once, before the timing; nothing else is
    copied to the GPU per run unless the counters say so."""
    if to_device is None:
        import tvm

        def to_device(array):
            return tvm.runtime.tensor(np.ascontiguousarray(array), tvm.cuda(0))

    resident = {name: to_device(value) for name, value in run_feeds.items()}
    ms = _median_ms(lambda: session.run(resident), repeat)
    stats = session.last_run_stats
    copies = {kind: int(getattr(stats, kind)) for kind in ("feed_copies", "h2d", "d2h", "bytes_d2h")}
    return {"hetpart_device_ms": round(ms, 4), "device_run_copies": copies}


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
# The driver: stages in subprocesses with time limits; prepares side by side, timings
# one at a time; records written as they come
# ========================================================================================
MARGIN_S = 30.0  # no item starts with less of the --budget left


@dataclass(frozen=True)
class Item:
    """One model at one batch, on the devices this call still has to record."""

    name: str
    batch: int
    devices: tuple[str, ...]
    onnx_path: str | None = None

    def __str__(self) -> str:
        return f"{self.name} b{self.batch}"


@dataclass
class Prepared:
    """What :func:`prepare_item` leaves for :func:`measure_item`: per device, in the
    item's order, its final record (a stage failed) or the directory of its build."""

    item: Item
    steps: list[tuple[str, dict | Path]]

    def built(self) -> list[str]:
        """The devices with a build to run, time and check."""
        return [device for device, step in self.steps if isinstance(step, Path)]


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    out_json = Path(args.out or RESULTS / f"corpus-{gpu_slug(args.simulate)}.json")
    results = load_results(out_json)
    earlier = load_results(Path(args.skip_done))["records"] if args.skip_done else []
    # The output always holds the union: a run on a fresh machine writing elsewhere
    # (e.g. $OUT) still returns the whole table.
    results["records"] += [r for r in earlier if _key(r) not in {_key(x) for x in results["records"]}]
    deadline = time.monotonic() + args.budget if args.budget else float("inf")
    jobs = args.jobs
    if args.profile == "quick" and jobs > 1:
        print("--profile quick measures kernels while planning: one stage at a time (--jobs 1)", flush=True)
        jobs = 1
    export_dir = Path(args.export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    base, new = results["records"], {}
    # Builds live only for this call (they depend on hetpart's code): in a temporary
    # directory, each removed once measured.
    with tempfile.TemporaryDirectory(prefix="builds-", dir=export_dir) as builds:
        stages = schedule(_items(args, done_keys(earlier, timing=args.time)),
                          functools.partial(prepare_item, args=args, builds=Path(builds), deadline=deadline),
                          functools.partial(measure_item, args=args, deadline=deadline),
                          functools.partial(_times_alone, args, jobs), jobs=jobs, deadline=deadline)
        for index, records, beside in stages:
            for record in records:
                if "hetpart_ms" in record:
                    record["compiles_beside_timing"] = beside
                print(_line(record), flush=True)
            new[index] = records
            results["records"] = _merged(base, new)
            save_results(out_json, results)
    save_results(out_json, results)
    return 0


def done_keys(records: list[dict], timing: bool) -> set[tuple]:
    """The keys ``--skip-done`` skips: every record's, but with ``timing`` (``--time``)
    only those that carry a time -- a correctness-only record (no ``hetpart_ms``) or
    one that errored is run again, else a timed table would silently keep its holes."""
    return {_key(r) for r in records if not timing or r.get("hetpart_ms") is not None}


def _items(args, done: set[tuple]) -> list[Item]:
    """The (model, batch) items of this call, batch-major, without the devices ``done`` holds."""
    onnx_files = dict(item.split("=", 1) for item in args.onnx)
    names = args.models.split(",") if args.models else (list(onnx_files) or TORCHVISION + TRANSFORMERS)
    items = []
    for batch in (int(b) for b in args.batches.split(",")):
        for name in names:
            todo = tuple(d for d in args.devices.split(",")
                         if (name, batch, d, args.precision if d == "cuda" else "fp32", _block(args, d),
                             tf32_on() if d == "cuda" else None) not in done)
            if todo:
                items.append(Item(name, batch, todo, onnx_files.get(name)))
    return items


def _block(args, device: str) -> int | None:
    """The channel block of this call's ``device`` builds (``--cpu-conv-block``; CPU only)."""
    return args.cpu_conv_block if device == "cpu" else None


def _merged(base: list[dict], new: dict[int, list[dict]]) -> list[dict]:
    """``base`` less the records ``new`` replaces, then ``new``'s records in item order
    (measures may finish out of order; the file lists them as the items came)."""
    fresh = [r for index in sorted(new) for r in new[index]]
    keys = {_key(r) for r in fresh}
    return [r for r in base if _key(r) not in keys] + fresh


def _times_alone(args, jobs: int, prepared: Prepared) -> bool:
    """Whether ``prepared``'s measure must run with no prepare beside it: always with
    ``--jobs 1`` (one stage at a time), with ``--quiet-timing``, and for CPU records
    with ``--time`` (hetpart and ONNX Runtime time on every core).  CUDA timings
    otherwise run beside compiles on other cores (``compiles_beside_timing``)."""
    return jobs == 1 or (args.time and (args.quiet_timing or "cpu" in prepared.built()))


def schedule(items: list, prepare, measure, alone, *, jobs: int, deadline: float, clock=time.monotonic,
             margin: float = MARGIN_S):
    """Prepare up to ``jobs`` items at once; measure prepared ones one at a time.

    ``prepare(item) -> prepared`` runs on a thread of its own (it waits on its
    subprocesses), ``measure(prepared) -> result`` on one more; ``alone(prepared)``
    says whether that measure must run with no prepare beside it.  Yields
    ``(index of the item, result, prepares beside)`` as measures finish; no more than
    ``prepares beside`` prepares ran at once during that measure.

    Invariants: at most ``jobs`` prepares and one measure run at any moment; of the
    prepared items the earliest is measured first; a measure that must run alone
    starts once the prepares in flight are done, and no prepare starts while it waits
    or runs; at most ``jobs`` items wait prepared (their builds on disk, and what a
    deadline would waste); no prepare starts past ``deadline - margin`` (``clock()``
    time): the items left are named and dropped, those in flight finish (their stages
    are cut at the deadline by their own limits) and are measured.
    """
    waiting = list(enumerate(items))
    preparing: dict = {}  # future -> index
    ready: list[tuple[int, object]] = []  # (index, prepared), by index
    measuring = None  # [future, index, prepares beside, alone]
    with (ThreadPoolExecutor(jobs, thread_name_prefix="prepare") as prepares,
          ThreadPoolExecutor(1, thread_name_prefix="measure") as measures):
        while waiting or preparing or ready or measuring:
            if measuring is None and ready and not (preparing and alone(ready[0][1])):
                index, prepared = ready.pop(0)
                measuring = [measures.submit(measure, prepared), index, len(preparing), alone(prepared)]
            held = (measuring is not None and measuring[3]) or (bool(ready) and alone(ready[0][1]))
            while waiting and not held and len(preparing) < jobs and len(ready) < jobs:
                if clock() > deadline - margin:
                    print(f"budget nearly spent; not starting {', '.join(str(item) for _, item in waiting)} "
                          f"(a later --skip-done call runs them)", flush=True)
                    waiting.clear()
                    break
                index, item = waiting.pop(0)
                preparing[prepares.submit(prepare, item)] = index
                if measuring is not None:
                    measuring[2] = max(measuring[2], len(preparing))
            running = [*preparing, *([measuring[0]] if measuring else [])]
            for future in (wait(running, return_when=FIRST_COMPLETED).done if running else ()):
                if measuring is not None and future is measuring[0]:
                    yield measuring[1], future.result(), measuring[2]
                    measuring = None
                else:
                    ready.append((preparing.pop(future), future.result()))
                    ready.sort(key=lambda pair: pair[0])


def prepare_item(item: Item, args, builds: Path, deadline: float = float("inf")) -> Prepared:
    """Stage 1 and the untimed part of stage 2, each in a subprocess: ``--worker
    prepare`` (export, inputs, ONNX Runtime's outputs), then per device ``--worker
    build`` (import, plan, compile into ``builds``).  May run beside other items'
    prepares.  A failed stage gives the error record of the devices it stops; a stage
    cut by ``deadline`` (``time.monotonic()``, from --budget) gives no record for the
    devices from it on, so the next call (--skip-done) runs them again."""
    prep = [*_worker_cmd("prepare", item, args)] + (["--onnx", f"{item.name}={item.onnx_path}"]
                                                     if item.onnx_path else [])
    limit, cut = _stage_limit(args.timeout, deadline)
    failure = _call(prep, limit, "prepare (export / ONNX Runtime)")
    if failure:
        errors = [] if cut and "timed out" in failure else item.devices
        return Prepared(item, [(d, _error(item.name, item.batch, d, failure, args.precision, _block(args, d)))
                               for d in errors])
    steps = []
    for device in item.devices:
        build_dir = builds / f"{_stem(item.name)}-b{item.batch}-{device}"
        cmd = [*_worker_cmd("build", item, args), "--devices", device, "--build-dir", str(build_dir),
               "--profile", args.profile] + (["--simulate"] if args.simulate else [])
        limit, cut = _stage_limit(args.timeout, deadline)
        if limit <= 0:
            break
        failure = _call(cmd, limit, f"build on {device}")
        record = json.loads((build_dir / BUILD_RECORD).read_text()) if (build_dir / BUILD_RECORD).exists() else None
        if record is None and cut and failure and "timed out" in failure:
            break
        if record is None or "status" in record:  # no build: the record is final
            record = record or _error(item.name, item.batch, device, failure or "no record written", args.precision,
                                      _block(args, device))
            steps.append((device, record))
        else:
            steps.append((device, build_dir))
    return Prepared(item, steps)


def measure_item(prepared: Prepared, args, deadline: float = float("inf")) -> list[dict]:
    """Stage 2's timed part, each in a subprocess and never beside another: with
    --time, PyTorch's CUDA-graph time (``--worker peer``), then per build ``--worker
    run`` (run, time, compare).  The item's records in device order; each build is
    removed once used.  A stage cut by ``deadline`` gives no record for the devices
    from it on."""
    item = prepared.item
    steps = prepared.steps
    if args.time and "cuda" in prepared.built() and has_torch_peer(item.name, item.onnx_path):
        limit, cut = _stage_limit(args.timeout, deadline)
        failure = _call(_worker_cmd("peer", item, args), limit, "peer (PyTorch CUDA graph)") if limit > 0 else "cut"
        if failure and (limit <= 0 or (cut and "timed out" in failure)):
            return []
        if failure:
            steps = [(d, _error(item.name, item.batch, d, failure, args.precision, _block(args, d))
                      if d == "cuda" else step)
                     for d, step in steps]
    records = []
    for device, step in steps:
        if isinstance(step, dict):
            records.append(step)
            continue
        limit, cut = _stage_limit(args.timeout, deadline)
        if limit <= 0:
            break
        cmd = [sys.executable, __file__, "--worker", "run", "--build-dir", str(step),
               "--export-dir", args.export_dir, "--repeat", str(args.repeat)] + (["--time"] if args.time else [])
        with _Capture() as cap:
            failure = _call(cmd, limit, f"run on {device}", stdout=cap.file)
            lines = [json.loads(line) for line in cap.text().splitlines() if line.startswith("{")]
        shutil.rmtree(step, ignore_errors=True)
        if not lines and cut and failure and "timed out" in failure:
            break
        records.append(lines[-1] if lines else
                       _error(item.name, item.batch, device, failure or "no record written", args.precision,
                              _block(args, device)))
    return records


def _worker_cmd(stage: str, item: Item, args) -> list[str]:
    return [sys.executable, __file__, "--worker", stage, "--models", item.name, "--batches", str(item.batch),
            "--export-dir", str(args.export_dir), "--repeat", str(args.repeat), "--precision", args.precision] + \
        (["--cpu-conv-block", str(args.cpu_conv_block)] if args.cpu_conv_block else [])


def _stage_limit(timeout: float, deadline: float) -> tuple[float, bool]:
    """(seconds this stage may take, whether the budget rather than --timeout bounds it)."""
    left = deadline - time.monotonic()
    return (min(timeout, left), left < timeout)


class _Capture:
    """A temporary file a subprocess writes its record line to."""

    def __enter__(self):
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


def _error(name: str, batch: int, device: str, detail: str, precision: str = "fp32",
           conv_block: int | None = None) -> dict:
    return {"model": name, "batch": batch, "device": device, "precision": precision if device == "cuda" else "fp32",
            "tf32": tf32_on(), **_layout_fields(device, conv_block),
            "status": "error", "rel_err": None, "detail": detail}


def _worker(args) -> int:
    export_dir = Path(args.export_dir)
    if args.worker == "run":
        print(json.dumps(measure_device(Path(args.build_dir), export_dir, args.time, args.repeat)), flush=True)
        return 0
    name, batch = args.models, int(args.batches)
    if args.worker == "prepare":
        prepare(name, batch, export_dir, dict(item.split("=", 1) for item in args.onnx).get(name))
    elif args.worker == "peer":
        time_peer(name, batch, export_dir, args.repeat, args.precision)
    else:
        build_device(name, batch, args.devices, export_dir, Path(args.build_dir), args.simulate, args.profile,
                     args.precision, args.cpu_conv_block)
    return 0


def _key(r: dict) -> tuple:
    """A record's identity: a blocked CPU record (``conv_block``) sits beside the NCHW one,
    and a CUDA record with TF32 off (``HETPART_TF32=0``) beside the TF32 one."""
    tf32 = r.get("tf32") if r["device"] == "cuda" else None
    return (r["model"], r["batch"], r["device"], r.get("precision", "fp32"), r.get("conv_block"), tf32)


def _line(r: dict) -> str:
    err = "-" if r.get("rel_err") is None else f"{r['rel_err']:.2e}"
    return f"{r['model']:<22} b{r['batch']:<3} {_device_cell(r):<5} {r['status']:<6} rel_err {err}  {r['detail']}"


def _device_cell(r: dict) -> str:
    """The device as the table shows it: a blocked CPU record's layout beside it ("cpu NCHW16c")."""
    return f"{r['device']} {r['layout']}" if r.get("conv_block") else r["device"]


def gpu_slug(simulate: bool) -> str:
    """``nvidia-h200`` (the GPU's name); ``simulated`` / ``cpu-only`` without one."""
    from hetpart.bench import gpu_slug as slug, machine

    return "simulated" if simulate else slug(machine())


def load_results(path: Path) -> dict:
    """The results file at ``path`` (a version-1 file upgraded to ``VERSION``: its
    records stay as they are, the fields version 2 adds absent), or a new one."""
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            if data.get("version", 1) <= VERSION:
                data["version"] = VERSION
                data["timing_fields"] = dict(TIMING_FIELDS)
            return data
    return {"schema": SCHEMA, "version": VERSION, "relative_error": REL_ERR,
            "tolerance": dict(TOLERANCE), "timing_fields": dict(TIMING_FIELDS), "records": []}


def save_results(path: Path, results: dict) -> None:
    """The JSON (atomically) and the markdown table beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)
    path.with_suffix(".md").write_text(markdown(results))


@dataclass(frozen=True)
class Boundaries:
    """A record's times (ms, None when not measured) paired by boundary, what the table
    shows: ``host`` (hetpart, peer) numpy in -> numpy out; ``device`` (hetpart, peer)
    inputs already on the GPU, outputs back to numpy; ``peer_gpu`` the CUDA graph's
    replay alone.  Invariant: a ratio is only ever taken within one pair."""

    host: tuple[float | None, float | None]
    device: tuple[float | None, float | None]
    peer_gpu: float | None

    @staticmethod
    def of(r: dict) -> "Boundaries":
        if r.get("device") != "cuda":  # ONNX Runtime CPU is timed numpy to numpy, as hetpart
            return Boundaries((r.get("hetpart_ms"), r.get("peer_ms")), (None, None), None)
        return Boundaries((r.get("hetpart_ms"), r.get("peer_host_ms")),
                          (r.get("hetpart_device_ms"), r.get("peer_device_ms")), r.get("peer_ms"))

    @staticmethod
    def ratio(pair: tuple[float | None, float | None]) -> float | None:
        """hetpart / peer (above 1: hetpart slower), or None without both."""
        hetpart, peer = pair
        return hetpart / peer if hetpart is not None and peer else None


def markdown(results: dict) -> str:
    rows = ["| model | batch | device | precision | TF32 | status | rel. error | peer "
            "| hetpart ms np→np | peer ms np→np | × np→np "
            "| hetpart ms GPU-in | peer ms GPU-in | × GPU-in | peer GPU ms | detail |",
            "|---|---:|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    ms = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    times = lambda v: "–" if v is None else f"**{v:.2f}**"  # noqa: E731
    for r in sorted(results["records"], key=lambda r: (r["model"], r["batch"], r["device"], r.get("conv_block") or 0,
                                                       not r.get("tf32", True))):
        err = "–" if r.get("rel_err") is None else f"{r['rel_err']:.1e}"
        peer_err = f"peer rel. error {r['peer_rel_err']:.1e}" if r.get("peer_rel_err") is not None else None
        detail = "; ".join(filter(None, [str(r.get("detail", "")), r.get("note"), peer_err, _copies_note(r)])
                           ).replace("|", "\\|")
        tf32 = "–" if r["device"] != "cuda" else ("on" if r.get("tf32", True) else "off")
        b = Boundaries.of(r)
        rows.append(f"| {r['model']} | {r['batch']} | {_device_cell(r)} | {r.get('precision', 'fp32')} | {tf32} "
                    f"| {r['status']} | {err} | {r.get('peer', '–')} "
                    f"| {ms(b.host[0])} | {ms(b.host[1])} | {times(Boundaries.ratio(b.host))} "
                    f"| {ms(b.device[0])} | {ms(b.device[1])} | {times(Boundaries.ratio(b.device))} "
                    f"| {ms(b.peer_gpu)} | {detail} |")
    head = (f"# Model corpus ({results['schema']} v{results['version']})\n\n"
            f"Relative error: {results['relative_error']}. Pass: at most {results['tolerance']['tf32_on']:g} "
            f"with TF32 on, {results['tolerance']['tf32_off']:g} with `HETPART_TF32=0`, "
            f"{results['tolerance'].get('bf16', 2e-2):g} for bf16/fp16 CUDA builds (`--precision`), and no NaN/Inf the "
            f"reference lacks. Written by `bench/corpus.py`.\n\n"
            "Times (ms, medians) at two boundaries, each side timed the same way; × is hetpart / peer at one "
            "boundary (above 1: hetpart slower), never across two. **np→np**: numpy in, numpy out, wall time "
            "(hetpart `Session.run` with host arrays, `hetpart_ms`; PyTorch copying the inputs into its CUDA "
            "graph's, replaying it and copying the outputs back, `peer_host_ms`; on the CPU ONNX Runtime, "
            "`peer_ms`). **GPU-in**: the inputs already on the GPU, outputs back to numpy, wall time (hetpart "
            "fed TVM CUDA tensors through DLPack, `hetpart_device_ms`: its `Session.run` always returns numpy; "
            "PyTorch replaying its graph and copying the outputs back, `peer_device_ms`). **peer GPU ms**: the "
            "graph's replay alone by CUDA events (`peer_ms`), the peer's kernels with nothing around them. "
            "Records from before a boundary was timed show – there (no ratio mixes boundaries).\n\n")
    beside = [r["compiles_beside_timing"] for r in results["records"] if r.get("compiles_beside_timing")]
    if beside:
        head += (f"{len(beside)} timed record(s) ran beside the compiles of other models (at most {max(beside)} "
                 f"at once, on other cores; `compiles_beside_timing` in the JSON).\n\n")
    return head + "\n".join(rows) + "\n"


def _copies_note(r: dict) -> str | None:
    """A device-resident run that still copied a feed from the host says so."""
    copies = r.get("device_run_copies") or {}
    crossed = copies.get("feed_copies", 0) + copies.get("h2d", 0)
    return f"GPU-in run still made {crossed} host->GPU feed copies" if crossed else None


def _conv_block(text: str) -> int | None:
    """``--cpu-conv-block``, read as ``partition plan --conv-block`` is
    (:func:`hetpart.cli.options.parse_conv_block`): 8, 16, 32, ``auto`` (this CPU's float
    lanes), or ``off`` -- None here, NCHW, as without the option (a corpus CPU build has no
    default block).  Anything else an argparse error naming the choices."""
    from hetpart.cli.options import parse_conv_block
    from hetpart.errors import PlanError

    try:
        return parse_conv_block(text) or None
    except PlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    p.add_argument("--time", action="store_true",
                   help="also record the times (hetpart_ms, hetpart_device_ms, peer, peer_ms, peer_host_ms, "
                        "peer_device_ms: TIMING_FIELDS)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the CUDA builds' precision (bf16/fp16: weights stored so, tolerance 2e-2; the peer "
                        "runs under torch.autocast to that type); CPU builds stay fp32")
    p.add_argument("--cpu-conv-block", type=_conv_block, default=None, metavar="N",
                   help="CPU builds import their convolutions channel-blocked, NCHW{N}c (hetpart.load(..., "
                        "conv_block=N); 8, 16, 32, or auto: this CPU's float lanes, 16 for AVX-512, 8 for AVX2; off: NCHW, as without it): such a record says layout NCHW{N}c and "
                        "conv_block N, keeps its own key (beside the NCHW record of the same model) and shows "
                        "'cpu NCHW{N}c' in the table.  Pays on resnet-like and depthwise nets")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per measurement with --time")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 4),
                   help="items prepared (exported, imported, compiled) at once, each in its own subprocesses, "
                        "while timed stages run one at a time (default: a quarter of the CPUs; 1: one stage "
                        "at a time)")
    p.add_argument("--quiet-timing", action="store_true",
                   help="with --time, time only while no prepare runs (CPU records always are); slower, "
                        "CUDA timings otherwise run beside compiles on other cores")
    p.add_argument("--worker", choices=["prepare", "build", "peer", "run"], help=argparse.SUPPRESS)
    p.add_argument("--build-dir", default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    sys.exit(main())
