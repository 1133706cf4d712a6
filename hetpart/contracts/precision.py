"""Precision: the number format each device computes a model's float32 weights in.

In: a string such as ``"cuda=bf16,cpu=fp32"`` (the CLI's ``--precision``), a dict, or
nothing.  Out: one frozen :class:`Precision` value, passed to the partitioner (a
kernel's weight bytes depend on it) and the compiler (which converts each
partition's weights to its device's format), recorded in the plan and the artifact
manifest as ``{"cpu": "fp32", "cuda": "bf16"}``.

Formats (:data:`FORMATS`):

* ``fp32``: float32 throughout; on CUDA with TF32 tensor cores off.
* ``tf32``: float32 storage, CUDA matmuls/convolutions on TF32 tensor cores (10-bit
  mantissa operands, float32 accumulation).  CUDA only; hetpart's default there.
* ``bf16`` / ``fp16``: weights stored once in bfloat16 / float16 (half the bytes to
  hold, copy and stream); activations, accumulation, softmax and normalisations stay
  float32 (:mod:`hetpart.importer.low_precision`).  On CUDA the contractions run on
  the tensor cores in TF32, where bf16/fp16 weight values are exact.

Models whose tensors are already float16 are left as they are: only float32 weights
are converted.  Invariant: :data:`DEFAULT` (``cpu=fp32,cuda=tf32``) builds exactly
what hetpart built before precisions existed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PrecisionError

FORMATS = ("fp32", "tf32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")
STORAGE = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""The dtype a format stores float32 weights in."""
CUDA_ONLY = ("tf32",)


@dataclass(frozen=True)
class Precision:
    """The format (one of :data:`FORMATS`) of each device: ``cpu`` and ``cuda``."""

    cpu: str = "fp32"
    cuda: str = "tf32"

    def __post_init__(self):
        for device in DEVICES:
            fmt = getattr(self, device)
            if fmt not in FORMATS:
                raise PrecisionError(f"precision '{fmt}' for {device} is not one of {', '.join(FORMATS)}")
            if fmt in CUDA_ONLY and device != "cuda":
                raise PrecisionError(f"precision '{fmt}' is a CUDA tensor-core format; for {device} use one of "
                                     f"{', '.join(f for f in FORMATS if f not in CUDA_ONLY)}")

    def of(self, device: str) -> str:
        """The format of ``device`` (``cpu`` / ``cuda``)."""
        if device not in DEVICES:
            raise PrecisionError(f"no precision for device '{device}'; devices are {', '.join(DEVICES)}")
        return getattr(self, device)

    def storage(self, device: str) -> str:
        """The dtype ``device`` stores float32 weights in (``float32``, ``bfloat16``, ``float16``)."""
        return STORAGE[self.of(device)]

    def describe(self) -> str:
        """``cpu=fp32,cuda=bf16``: the form :func:`parse` reads."""
        return ",".join(f"{d}={self.of(d)}" for d in DEVICES)

    def to_json(self) -> dict:
        return {d: self.of(d) for d in DEVICES}

    @classmethod
    def from_json(cls, data: dict | None) -> "Precision":
        """The precision in ``data``; None (a file written before precisions were
        recorded) is :data:`DEFAULT`."""
        if data is None:
            return DEFAULT
        if not isinstance(data, dict) or set(data) - set(DEVICES):
            raise PrecisionError(f"precision {data!r} is not a mapping of {', '.join(DEVICES)} to formats")
        return cls(**data)


DEFAULT = Precision()


def parse(text: str | None) -> Precision:
    """The :class:`Precision` ``text`` names: ``"cuda=bf16,cpu=fp32"`` (devices left out
    keep :data:`DEFAULT`'s format), or one format for every device that can use it
    (``"bf16"``; ``"tf32"`` then means TF32 on CUDA, float32 on the CPU).  None or
    empty: :data:`DEFAULT`.  Raises :class:`PrecisionError` naming what is valid."""
    if text is None or not text.strip():
        return DEFAULT
    text = text.strip()
    if "=" not in text:
        fmt = text.lower()
        if fmt not in FORMATS:
            raise PrecisionError(f"precision '{text}' is not one of {', '.join(FORMATS)} "
                                 "(or DEVICE=FORMAT pairs such as cuda=bf16,cpu=fp32)")
        return Precision(cpu="fp32" if fmt in CUDA_ONLY else fmt, cuda=fmt)
    given: dict[str, str] = {}
    for item in text.split(","):
        device, sep, fmt = item.partition("=")
        device, fmt = device.strip().lower(), fmt.strip().lower()
        if not sep or device not in DEVICES:
            raise PrecisionError(f"precision item '{item.strip()}' is not DEVICE=FORMAT with DEVICE one of "
                                 f"{', '.join(DEVICES)} (e.g. cuda=bf16,cpu=fp32)")
        if device in given:
            raise PrecisionError(f"precision names {device} twice in '{text}'")
        given[device] = fmt
    return Precision(**{**DEFAULT.to_json(), **given})


def coerce(value) -> Precision:
    """A :class:`Precision` from a Precision, a string (:func:`parse`), a dict or None."""
    if isinstance(value, Precision):
        return value
    if value is None or isinstance(value, str):
        return parse(value)
    if isinstance(value, dict):
        return Precision.from_json(value)
    raise PrecisionError(f"precision must be a string such as 'cuda=bf16,cpu=fp32', got {type(value).__name__}")


__all__ = ["CUDA_ONLY", "DEFAULT", "DEVICES", "FORMATS", "Precision", "PrecisionError", "STORAGE", "coerce", "parse"]
