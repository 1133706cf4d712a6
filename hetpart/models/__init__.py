"""hetpart's built-in model zoo: real architectures built in code, with seeded weights.

Every model exists in a full-size variant (the real architecture) and a ``small``
one for CI (same topology, fewer channels/layers/rows), and every size is static::

    from hetpart import models
    m = models.build("resnet18", small=True)           # onnx.ModelProto
    m = models.build("bert", layers=4, seq_len=64)     # full BERT, 4 layers
    models.parse_zoo_spec("zoo:bert:small:layers=4")   # ("bert", True, {"layers": 4})
    feeds = models.example_inputs(m, seed=0)           # {"input_ids": int64 array}
    models.save(m, "bert.onnx")                        # external data above ~1.8 GB

Weights are random (``numpy.random.default_rng(seed)``), scaled so activations stay
finite: the models are for partitioning and timing, not for accuracy.

To add a model: write ``hetpart/models/<name>.py`` with a config dataclass and a
builder decorated with :func:`hetpart.models.registry.register`, then add the module
to ``_MODEL_MODULES`` below.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

from hetpart.errors import UnknownModelError
from hetpart.models.graph_builder import INPUT_LIMIT_PREFIX
from hetpart.models.registry import build, check_keys, describe, entry, names

__all__ = [
    "build", "names", "describe", "parse_zoo_spec", "example_inputs", "save",
    "EXTERNAL_DATA_THRESHOLD", "weight_bytes",
]

# Importing a module registers its models.
_MODEL_MODULES = ("mlp", "resnet", "bert", "detector", "dlrm", "llama", "llama_decode", "moe", "gpt2", "t5", "mobilenet", "convnext", "swin")
for _module in _MODEL_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

# protobuf cannot serialize a message of 2 GiB or more; stay clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def parse_zoo_spec(spec: str) -> tuple[str, bool, dict[str, Any]] | None:
    """Parse ``zoo:NAME[:small|:full][:key=value,...]``; None if ``spec`` is not a zoo spec.

    Values are ints (``1_000_000`` allowed), floats, ``true``/``false``, tuples of
    ints written ``2/2/2/2``, or else strings.  The name and keys are checked here
    (UnknownModelError), so a bad spec fails before anything is built; value types
    are checked by :func:`build`.
    """
    if not isinstance(spec, str) or not spec.startswith("zoo:"):
        return None
    name, *parts = spec[len("zoo:"):].split(":")
    name = name.strip()
    if not name:
        raise UnknownModelError(f"{spec!r} names no model; known models: {', '.join(names())}")
    entry(name)
    small, cfg = False, {}
    for part in (p.strip() for p in parts):
        if part in ("small", "full"):
            small = part == "small"
        else:
            _parse_assignments(spec, part, cfg)
    check_keys(name, cfg)
    return name, small, cfg


def example_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds for every graph input of ``model`` (static shapes only).

    Floats are standard normal; integer inputs are in ``[0, limit)`` where the zoo
    recorded a limit (token ids < vocab, rows < table_rows), else 0.
    """
    rng = np.random.default_rng(seed)
    limits = {
        p.key[len(INPUT_LIMIT_PREFIX):]: int(p.value)
        for p in model.metadata_props if p.key.startswith(INPUT_LIMIT_PREFIX)
    }
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, limits.get(vi.name, 1), size=shape).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def save(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool | None = None) -> list[Path]:
    """Save ``model`` to ``path``; returns the files written.

    Models of ~1.8 GB or more (e.g. a DLRM with big embedding tables) go to
    ``path`` plus ``<path>.data`` with all weights as ONNX external data, because a
    protobuf message cannot exceed 2 GB; ``external_data`` True/False forces the
    choice.  ``model`` itself is left as it was.
    """
    path = Path(path)
    if external_data is None:
        external_data = weight_bytes(model) >= EXTERNAL_DATA_THRESHOLD
    if not external_data:
        onnx.save_model(model, path)
        return [path]
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data.name
    )
    _reload_external_data(model, path.parent)
    return [path, data]


def _reload_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Undo what ``save_model`` did to ``model``: read the weights it moved out back in."""
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            load_external_data_for_tensor(tensor, str(base_dir))
            # onnx sets data_location=DEFAULT explicitly; clear it so the model
            # serializes exactly as it did before saving.
            tensor.ClearField("data_location")


def weight_bytes(model: onnx.ModelProto) -> int:
    """Serialized bytes of ``model``'s initializers and nodes, summed per tensor and
    node: never asks protobuf for the size of a >2 GB message."""
    graph = model.graph
    return sum(t.ByteSize() for t in graph.initializer) + sum(n.ByteSize() for n in graph.node)


def _parse_assignments(spec: str, part: str, cfg: dict[str, Any]) -> None:
    for item in filter(None, (s.strip() for s in part.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UnknownModelError(
                f"bad zoo spec {spec!r}: {item!r} is neither 'small', 'full' nor key=value"
            )
        if key in cfg:
            raise UnknownModelError(f"bad zoo spec {spec!r}: {key!r} given twice")
        cfg[key] = _parse_value(value.strip())


def _parse_value(text: str) -> Any:
    if "/" in text:
        return tuple(_parse_value(t) for t in text.split("/"))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
