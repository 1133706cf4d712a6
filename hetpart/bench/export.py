"""PyTorch twins of hetpart's workloads, exported to ONNX for the peer comparison.

PyTorch eager can only be compared on a model PyTorch has, so these builders make
the real architectures with random weights -- torchvision ResNet-50
(``weights=None``) and transformers BERT-base (``BertModel(BertConfig())``) -- and
export them with ``torch.onnx.export(..., opset_version=17)``.  The TorchScript
exporter (``dynamo=False``) is tried first; if this torch lacks it or it fails, the
dynamo exporter (needs onnxscript).  The returned :class:`Exported` keeps the very
module that was exported, so PyTorch runs the same weights hetpart and ONNX Runtime
run.  torch, torchvision and transformers are imported only here.

To add a twin, write ``fn(batch) -> (module, example args, input names,
{input: index limit})`` and decorate it with :func:`twin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import HetpartError

OPSET = 17
BERT_SEQ_LEN = 128

TWINS: dict[str, Callable] = {}


def twin(name: str):
    def deco(fn):
        TWINS[name] = fn
        return fn

    return deco


@dataclass
class Exported:
    """An ONNX file and the module it came from; ``exporter`` says which exporter wrote it."""

    name: str
    path: Path
    module: object
    input_names: list[str]
    exporter: str


def export(name: str, batch: int, out_dir) -> Exported:
    """Build twin ``name`` at ``batch`` and export it to ``out_dir/<name>_b<batch>.onnx``.

    Raises HetpartError when torch (or the model's library) is missing or both
    exporters fail.
    """
    try:
        import torch
    except ImportError:
        raise HetpartError("PyTorch is not installed: the PyTorch twins cannot be exported") from None
    if name not in TWINS:
        raise HetpartError(f"no PyTorch twin named {name!r}; known: {', '.join(TWINS)}")
    module, args, names, limits = TWINS[name](batch)
    module.eval()
    path = Path(out_dir) / f"{name}_b{batch}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        exporter = _export(torch, module, args, names, path)
    _record_limits(path, limits)
    return Exported(name, path, module, names, exporter)


def _export(torch, module, args, names, path: Path) -> str:
    errors = []
    for dynamo in (False, True):
        try:
            torch.onnx.export(module, args, str(path), input_names=names, opset_version=OPSET, dynamo=dynamo)
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both if both fail
            errors.append(f"dynamo={dynamo}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    raise HetpartError(f"torch.onnx.export failed for {path.name}: " + " | ".join(errors))


def _record_limits(path: Path, limits: dict[str, int]) -> None:
    """Store index limits the way the zoo does, so seeded feeds are valid token ids."""
    import onnx

    from ..models.graph_builder import INPUT_LIMIT_PREFIX

    if not limits:
        return
    # The graph alone: a model past 2 GB keeps its weights in the external-data file
    # torch wrote beside it, which the header keeps pointing at.
    model = onnx.load(str(path), load_external_data=False)
    for name, limit in limits.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = INPUT_LIMIT_PREFIX + name, str(limit)
    onnx.save(model, str(path))


@twin("resnet50_torchvision")
def _resnet50(batch: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    module = torchvision.models.resnet50(weights=None)
    return module, (torch.randn(batch, 3, 224, 224),), ["input"], {}


@twin("bert_base_transformers")
def _bert(batch: int):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig()
    module = _BertOutputs(BertModel(config))
    ids = torch.randint(0, config.vocab_size, (batch, BERT_SEQ_LEN), dtype=torch.int64)
    mask = torch.ones(batch, BERT_SEQ_LEN, dtype=torch.int64)
    return module, (ids, mask), ["input_ids", "attention_mask"], {"input_ids": config.vocab_size,
                                                                   "attention_mask": 2}


def _bert_outputs_class():
    import torch

    class BertOutputs(torch.nn.Module):
        """BertModel returning a plain tuple (last hidden state, pooled output)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
            return out[0], out[1]

    return BertOutputs


def _BertOutputs(bert):  # noqa: N802 - builds the nn.Module subclass lazily (torch is optional)
    return _bert_outputs_class()(bert)


# --- the transformers models of the capped-memory benchmark (issue 19) -----------------------
BERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
# TinyLlama-1.1B's shape: 22 layers, hidden 2048, 32 query heads over 4 key/value heads.
LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000)
LLAMA_PREFILL_SEQ = 512


@twin("bert_large_transformers")
def _bert_large(batch: int):
    from transformers import BertConfig, BertModel

    return _text_model(BertModel, BertConfig(**BERT_LARGE), batch, BERT_SEQ_LEN)


@twin("llama_1b_transformers")
def _llama_1b(batch: int):
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(**LLAMA_1B, max_position_embeddings=2048)
    return _text_model(LlamaModel, config, batch, LLAMA_PREFILL_SEQ)


def _text_model(cls, config, batch: int, seq: int):
    """A transformers model from ``config`` (seeded random weights, eager attention, no
    cache), taking ``input_ids`` and an all-ones ``attention_mask``, returning tensors."""
    import torch

    torch.manual_seed(0)
    config.use_cache = False
    try:  # the attention written op by op, which the TorchScript exporter traces plainly
        config._attn_implementation = "eager"
    except AttributeError:
        pass
    module = _plain_class()(cls(config), ["input_ids", "attention_mask"])
    ids = torch.randint(0, config.vocab_size, (batch, seq), dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    return module, (ids, mask), ["input_ids", "attention_mask"], {"input_ids": config.vocab_size}


def _plain_class():
    import torch

    class Plain(torch.nn.Module):
        """A transformers model taking its inputs by position and returning a tuple of
        tensors (not a ModelOutput); ``model`` is the wrapped PreTrainedModel."""

        def __init__(self, model, names):
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *args):
            out = self.model(**dict(zip(self.names, args)))
            values = out.values() if hasattr(out, "values") else out
            return tuple(v for v in values if isinstance(v, torch.Tensor))

    return Plain
