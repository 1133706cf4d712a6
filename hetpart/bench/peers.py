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
        import onnxruntime as ort
    except ImportError:
        raise PeerUnavailable("ONNX Runtime not installed") from None
    source = model.onnx_model
    if not isinstance(source, (str, bytes)) and hasattr(source, "SerializeToString"):
        source = source.SerializeToString()
    try:
        session = ort.InferenceSession(source if isinstance(source, bytes) else str(source),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT reports unsupported models with many exception types
        raise PeerUnavailable(f"ONNX Runtime cannot load {model.name}: {str(exc).splitlines()[0][:200]}") from None
    names = [i.name for i in session.get_inputs()]

    def run(feeds: dict) -> list:
        return session.run(None, {n: feeds[n] for n in names})

    return run
