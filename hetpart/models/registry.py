"""The model-zoo registry: one decorator per model, one table for the CLI to read.

A model module declares a frozen dataclass of its configuration, a full-size and a
small (CI) instance of it, and a builder ``fn(cfg, batch, seed) -> ModelProto``::

    @register("resnet18", "ResNet-18 (torchvision topology)", full=FULL18, small=SMALL18)
    def build_resnet18(cfg: ResNetConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
        ...

:func:`build` picks the variant, applies the user's overrides (checked against the
dataclass's signature, so an unknown key names itself and the allowed ones), calls
the builder, and stamps the model with its name and the spec that rebuilds it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import onnx

from hetpart.errors import UnknownModelError

# Keys every model takes besides its own config fields.
COMMON_KEYS = ("batch", "seed")

Builder = Callable[..., onnx.ModelProto]


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    builder: Builder
    full: Any  # an instance of the model's config dataclass
    small: Any
    # The batch a model is served at when the user names none: 1 for latency-bound
    # models; a recommender scores many candidate items per request.
    default_batch: int = 1

    def config_keys(self) -> list[str]:
        """The config fields a user may override, read from the dataclass's signature."""
        return list(inspect.signature(type(self.full)).parameters)

    def allowed_keys(self) -> list[str]:
        return [*COMMON_KEYS, *self.config_keys()]


_REGISTRY: dict[str, ZooEntry] = {}


def register(name: str, description: str, *, full: Any, small: Any,
             default_batch: int = 1) -> Callable[[Builder], Builder]:
    """Register ``builder`` as zoo model ``name``; returns the builder unchanged."""
    if not dataclasses.is_dataclass(full) or type(small) is not type(full):
        raise TypeError(f"zoo model {name!r}: full and small must be instances of one dataclass")

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"zoo model {name!r} registered twice")
        _REGISTRY[name] = ZooEntry(name, description, builder, full, small, default_batch)
        return builder

    return decorate


def entry(name: str) -> ZooEntry:
    """The registry entry for ``name``; UnknownModelError listing the known names if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(f"unknown zoo model {name!r}; known models: {known}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def check_keys(name: str, cfg: dict[str, Any]) -> None:
    """UnknownModelError naming the first key ``name`` does not take, with the allowed ones."""
    allowed = entry(name).allowed_keys()
    for key in cfg:
        if key not in allowed:
            raise UnknownModelError(
                f"zoo model {name!r} has no config key {key!r}; allowed keys: {', '.join(allowed)}"
            )


def check(condition: bool, message: str) -> None:
    """Raise UnknownModelError (a bad zoo configuration) unless ``condition`` holds."""
    if not condition:
        raise UnknownModelError(message)


def build(name: str, small: bool = False, **cfg: Any) -> onnx.ModelProto:
    """Build zoo model ``name`` (the small variant if ``small``) with overrides ``cfg``."""
    zoo = entry(name)
    check_keys(name, cfg)
    batch = cfg.pop("batch", zoo.default_batch)
    seed = cfg.pop("seed", 0)
    check(_is_int(batch) and batch >= 1,
          f"zoo model {name!r}: batch must be an int >= 1, got {batch!r}")
    check(_is_int(seed) and seed >= 0,
          f"zoo model {name!r}: seed must be an int >= 0, got {seed!r}")
    base = zoo.small if small else zoo.full
    overrides = {k: _coerce(name, base, k, v) for k, v in cfg.items()}
    config = dataclasses.replace(base, **overrides)
    model = zoo.builder(config, batch=batch, seed=seed)
    rebuild = spec(name, small, dict(overrides, batch=batch, seed=seed))
    _stamp(model, zoo, small, config, batch, seed, rebuild)
    return model


def spec(name: str, small: bool, cfg: dict[str, Any]) -> str:
    """The ``zoo:`` string that rebuilds this model (see ``parse_zoo_spec``)."""
    parts = [f"zoo:{name}"] + (["small"] if small else [])
    if cfg:
        parts.append(",".join(f"{k}={_format_value(v)}" for k, v in cfg.items()))
    return ":".join(parts)


def describe(name: str) -> str:
    """A few lines: what the model is, and its full and small configurations."""
    zoo = entry(name)
    return "\n".join([
        f"{name}: {zoo.description}",
        f"  full:  {_format_config(zoo.full)}",
        f"  small: {_format_config(zoo.small)}",
        f"  also:  batch (default {zoo.default_batch}), seed (default 0)",
    ])


# --- helpers ---------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coerce(name: str, base: Any, key: str, value: Any) -> Any:
    """Check ``value`` against the type of the default; lists become tuples."""
    default = getattr(base, key)
    bad = UnknownModelError(
        f"zoo model {name!r}: config {key}={value!r} should be of type {type(default).__name__} "
        f"(default {default!r})"
    )
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
    elif isinstance(default, int):
        if not _is_int(value):
            raise bad
    elif isinstance(default, float):
        if not (_is_int(value) or isinstance(value, float)):
            raise bad
        value = float(value)
    elif isinstance(default, tuple):
        value = (value,) if _is_int(value) else value
        if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
            raise bad
        value = tuple(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise bad
    return value


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return "/".join(str(x) for x in v)
    return str(v)


def _format_config(config: Any) -> str:
    fields = dataclasses.fields(config)
    return ", ".join(f"{f.name}={_format_value(getattr(config, f.name))}" for f in fields)


def _stamp(model: onnx.ModelProto, zoo: ZooEntry, small: bool, config: Any, batch: int, seed: int,
           rebuild: str) -> None:
    variant = "small" if small else "full"
    model.producer_name = "hetpart.models"
    model.graph.name = zoo.name
    model.doc_string = (
        f"hetpart.models zoo model {zoo.name} ({variant}): {zoo.description}. "
        f"batch={batch}, seed={seed}, {_format_config(config)}"
    )
    # Appended, not set: the builder's own metadata (index input limits) stays.
    model.metadata_props.add(key="hetpart.zoo.name", value=zoo.name)
    model.metadata_props.add(key="hetpart.zoo.spec", value=rebuild)
