"""Peers: other runtimes running the very same model, for the benchmark only.

A peer is ``make(model, simulate) -> Runner``; it raises :class:`PeerUnavailable`
with the reason the table prints ("PyTorch not installed", "no GPU: --simulate",
...).  Peer libraries are imported inside ``make``, so hetpart never needs them.

A :class:`PeerModel` is what a peer may run: the ONNX model (ONNX Runtime runs every
one as is) and, for models exported from PyTorch (:mod:`.export`), the very
``torch.nn.Module`` that was exported.  Every runner takes numpy feeds keyed by ONNX
input name and returns numpy outputs, so, as with a hetpart Session, host<->device
copies of inputs and outputs are part of the measured time.

To add a peer, write ``make`` and decorate it with :func:`peer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Runner = Callable[[dict], list]


class PeerUnavailable(Exception):
    """A peer cannot run this model here; the message is the reason shown in the table."""


@dataclass
class PeerModel:
    """One model as the peers see it.

    ``onnx_model`` is an ``onnx.ModelProto`` or a path; ``torch_module`` the
    ``nn.Module`` it was exported from (None for models built by the hetpart zoo,
    which have no PyTorch twin); ``input_names`` the order the module takes them in.
    """

    name: str
    onnx_model: object
    input_names: list[str]
    torch_module: object = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Peer:
    name: str
    label: str  # what the table calls it
    device: str  # "cpu" | "cuda"
    make: Callable[[PeerModel, bool], Runner]


PEERS: dict[str, Peer] = {}


def peer(name: str, label: str, device: str):
    """Register ``make(model, simulate) -> Runner`` as peer ``name``."""

    def deco(make):
        PEERS[name] = Peer(name, label, device, make)
        return make

    return deco


def _import_torch():
    try:
        import torch
    except ImportError:
        raise PeerUnavailable("PyTorch not installed") from None
    return torch


@peer("torch_cuda", "PyTorch eager (CUDA)", "cuda")
def torch_cuda(model: PeerModel, simulate: bool) -> Runner:
    if simulate:
        raise PeerUnavailable("no GPU used under --simulate")
    torch = _import_torch()
    if not torch.cuda.is_available():
        raise PeerUnavailable("PyTorch sees no CUDA GPU")
    return _torch_runner(torch, model, "cuda")


@peer("torch_cpu", "PyTorch eager (CPU)", "cpu")
def torch_cpu(model: PeerModel, simulate: bool) -> Runner:
    torch = _import_torch()
    return _torch_runner(torch, model, "cpu")


def _torch_runner(torch, model: PeerModel, device: str) -> Runner:
    if model.torch_module is None:
        raise PeerUnavailable(f"{model.name} has no PyTorch twin (peers run the exported torchvision/"
                              "transformers models)")
    module = model.torch_module.eval().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(feeds: dict) -> list:
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in model.input_names]
            outs = module(*args)
            host = [o.cpu().numpy() for o in _flatten_outputs(outs)]
        sync()
        return host

    return run


def _flatten_outputs(outs) -> list:
    if hasattr(outs, "to_tuple"):  # transformers' ModelOutput
        outs = outs.to_tuple()
    if isinstance(outs, (list, tuple)):
        return [t for o in outs for t in _flatten_outputs(o)]
    return [outs]


@peer("onnxruntime_cpu", "ONNX Runtime (CPU)", "cpu")
def onnxruntime_cpu(model: PeerModel, simulate: bool) -> Runner:
    try:
        import onnxruntime  # noqa: F401 - only whether it is there
    except ImportError:
        raise PeerUnavailable("ONNX Runtime not installed") from None
    try:
        session = ort_session(model.onnx_model)
    except Exception as exc:  # noqa: BLE001 - ORT reports unsupported models with many exception types
        raise PeerUnavailable(f"ONNX Runtime cannot load {model.name}: {str(exc).splitlines()[0][:200]}") from None
    names = [i.name for i in session.get_inputs()]

    def run(feeds: dict) -> list:
        return session.run(None, {n: feeds[n] for n in names})

    return run


# --- opening an ONNX Runtime session: the one place hetpart.bench does it --------------------
def ort_session(model, threads: int | None = None, external_data_above: int | None = None,
                profile_prefix: str | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU for ``model`` (a ModelProto or a path).

    Two things every ORT session in the benchmark needs, done here once:

    * the model's IR version is lowered to the least its opsets need
      (:func:`ort_ir_version`): onnx's ``make_model`` stamps the newest IR version it
      knows, which an older ORT refuses ("Unsupported model IR version") although it
      runs every op of the model;
    * a model whose weights approach protobuf's 2 GB limit cannot be serialized to
      bytes (``EncodeError: Failed to serialize proto``): it is saved with its weights
      as external data into a temporary directory, and the session opened from the
      path.  ``external_data_above`` (bytes; default
      :data:`hetpart.models.EXTERNAL_DATA_THRESHOLD`) is the size from which it is;
      tests pass 0 to force the route on a small model.

    ``threads`` sets ORT's intra-op pool (None: ORT's default).  ``profile_prefix`` turns
    on ORT's profiler, writing its JSON under that prefix (``end_profiling()`` names the
    file).  ``model`` is left as
    it was.  Raises what ORT raises for a model it cannot load.
    """
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    providers = ["CPUExecutionProvider"]
    if not isinstance(model, onnx.ModelProto):  # a path: keep it unless its IR version is too new
        header = onnx.load(str(model), load_external_data=False)
        if header.ir_version <= ort_ir_version(header):
            return ort.InferenceSession(str(model), opts, providers=providers)
        model = onnx.load(str(model))
    from ..models import EXTERNAL_DATA_THRESHOLD, weight_bytes

    limit = EXTERNAL_DATA_THRESHOLD if external_data_above is None else external_data_above
    with _ir_version(model, ort_ir_version(model)):
        if weight_bytes(model) < limit:
            return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        return _session_from_external_data(ort, model, opts, providers)


def ort_ir_version(model) -> int:
    """The IR version ``model`` is handed to ONNX Runtime with: the least its opset
    imports need (onnx's own table), never above the one it declares."""
    from onnx.helper import find_min_ir_version_for

    need = find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return min(int(model.ir_version), int(need)) if model.ir_version else int(need)


class _ir_version:
    """Set ``model.ir_version`` for the block, then put the original back."""

    def __init__(self, model, version: int):
        self.model, self.version, self.saved = model, version, model.ir_version

    def __enter__(self):
        self.model.ir_version = self.version

    def __exit__(self, *exc):
        self.model.ir_version = self.saved


def _session_from_external_data(ort, model, opts, providers):
    """Save ``model`` with external data in a temporary directory and open it from there.

    The directory is removed once the session is open: ORT has read (or mapped) the
    weights by then, and on Linux a mapped file stays readable after its unlink.
    """
    import tempfile

    from ..models import save

    with tempfile.TemporaryDirectory(prefix="hetpart-ort-") as tmp:
        path = save(model, f"{tmp}/model.onnx", external_data=True)[0]
        return ort.InferenceSession(str(path), opts, providers=providers)
