"""The one exception hierarchy of hetpart.

Two families, kept apart on purpose (as Polygraphy does):

* :class:`HetpartError` and its subclasses are *user* errors: bad input, a missing
  GPU, a corrupt file.  Their message says what is wrong and what to do; the CLI
  prints it without a traceback and exits with code 1.
* :class:`InternalError` is a bug in hetpart.  The CLI prints the traceback and
  asks for a report; it exits with code 2.

Every subclass adds no behaviour, only a name a caller can catch.

Advice speaks the caller's language: a message names an option with :func:`option`
(``option("simulate", True)``), and reads ``simulate=True`` from the Python API
(``str(exc)``) but ``--simulate`` from the ``partition`` CLI (``exc.cli_message()``).
"""

from __future__ import annotations

import re

_OPEN, _SEP, _CLOSE = "\x1e", "\x1f", "\x1d"  # ASCII separators: never in a real message
_OPTION = re.compile(f"{_OPEN}([^{_SEP}]*){_SEP}([^{_CLOSE}]*){_CLOSE}")
_API_NAMES = {"shape": "shapes", "pin": "pins"}
"""CLI option -> the API argument it becomes where the two are spelled differently."""


def option(name: str, value=None) -> str:
    """An option named inside an error message, rendered per caller.

    ``name`` is the CLI's long flag in snake case (``cuda_arch`` for ``--cuda-arch``),
    which is also the API's argument except where :data:`_API_NAMES` says otherwise;
    ``value`` an example value, or True for a flag.  API: ``cuda_arch='sm_90'`` /
    ``simulate=True``; CLI: ``--cuda-arch sm_90`` / ``--simulate``.
    """
    return f"{_OPEN}{name}{_SEP}{'' if value is None else repr(value)}{_CLOSE}"


def _render(text: str, cli: bool) -> str:
    def one(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if cli:
            flag = "--" + name.replace("_", "-")
            return flag if value in ("", "True") else f"{flag} {value.strip(chr(39))}"
        name = _API_NAMES.get(name, name)
        return f"{name}={value}" if value else name
    return _OPTION.sub(one, text)


class HetpartError(Exception):
    """Base of every error caused by the user's input or machine."""

    def __str__(self) -> str:
        return _render(super().__str__(), cli=False)

    def cli_message(self) -> str:
        """The message as the ``partition`` command line should print it."""
        return _render(super().__str__(), cli=True)


# --- input models ---------------------------------------------------------------
class ModelLoadError(HetpartError):
    """The model file is missing, unreadable, not ONNX, or fails the ONNX checker."""


class ShapeError(HetpartError):
    """An input has symbolic dims that no ``shapes``/``--shape`` fixes, or a shape is wrong."""


class SymbolicDimsError(ShapeError):
    """Inputs have symbolic dims that no ``shapes``/``--shape`` fixes (what shape
    buckets, :func:`hetpart.compile_buckets`, build for instead)."""


class NoBatchDimError(ShapeError):
    """A data-parallel split was asked of a model without a batch dim to split along
    (no symbolic axis-0 dim, or an output whose rows cannot be put back together)."""


class UnsupportedOpsError(HetpartError):
    """The model uses operators hetpart (TVM) cannot import.

    ``ops`` maps each unsupported op type to the node names that use it, so every
    problem is reported at once.
    """

    def __init__(self, message: str, ops: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.ops = dict(ops or {})


class UnknownModelError(HetpartError):
    """A ``zoo:NAME`` that is not in the model zoo, or a bad zoo configuration."""


# --- machines and targets --------------------------------------------------------
class TargetError(HetpartError):
    """A target is unknown, or its hardware (e.g. the CUDA GPU) is not present."""


class NoGPUError(TargetError):
    """A CUDA device was needed but none is usable on this machine."""


class PrecisionError(TargetError):
    """A precision (``cuda=bf16,cpu=fp32``) names an unknown device or number format."""


# --- files hetpart writes and reads back -----------------------------------------
class ProfileError(HetpartError):
    """A cost-model profile is missing, corrupt, of another schema, or of another machine."""


class PlanError(HetpartError):
    """A plan cannot be made (e.g. an infeasible memory cap) or a plan file is invalid."""


class CompileError(HetpartError):
    """A partition failed to compile, or a compiled artifact is missing or corrupt."""


class TraceError(HetpartError):
    """A trace file (:mod:`hetpart.contracts.trace`) is missing, not JSON, not a list of
    trace events, or of another schema or version."""


class RuntimeFailure(HetpartError):
    """Running a compiled model failed (bad feeds, a partition raised, out of memory).

    ``partition`` names the partition that failed, when one did.
    """

    def __init__(self, message: str, partition: str | None = None):
        super().__init__(message)
        self.partition = partition


class StateError(RuntimeFailure):
    """Device-resident state (``Session(state=...)``, :mod:`hetpart.runtime.state`) cannot
    be bound or used: a name that is no model output/input or no bound state, a pair whose
    shapes or dtypes differ, a state whose producer and readers sit on different devices,
    a bound input given in the feeds.  ``names`` are the names at fault."""

    def __init__(self, message: str, names: list[str] | None = None):
        super().__init__(message)
        self.names = list(names or [])


# --- serving (hetpart.serving.Server) ------------------------------------------------
class ServingError(HetpartError):
    """A request to a :class:`hetpart.serving.Server` could not be served."""


class BadRequestError(ServingError):
    """A request was refused at submit: unknown model, or feeds with wrong names, shapes or dtypes.

    ``model`` names the model; ``inputs`` the inputs at fault (empty if none is).
    """

    def __init__(self, message: str, model: str | None = None, inputs: list[str] | None = None):
        super().__init__(message)
        self.model = model
        self.inputs = list(inputs or [])


class ServerClosedError(ServingError):
    """The server is closed: it accepts no request, and close() rejected this one unanswered."""


class BatchError(RuntimeFailure):
    """The batch a request ran in failed; every request of that batch gets this error
    (its ``__cause__`` is what the model's runner raised; ``partition`` is carried over)."""

    def __init__(self, message: str, model: str | None = None, partition: str | None = None):
        super().__init__(message, partition)
        self.model = model


class QuotaExceededError(RuntimeFailure):
    """A model asked for more GPU memory than its quota (issue 20: models sharing one
    GPU, each with its quota allocated up front); ``model``, ``quota_bytes``,
    ``requested_bytes`` and ``in_use_bytes`` say whose and how much."""

    def __init__(self, message: str, model: str | None = None, quota_bytes: int = 0, requested_bytes: int = 0,
                 in_use_bytes: int = 0):
        super().__init__(message)
        self.model = model
        self.quota_bytes = quota_bytes
        self.requested_bytes = requested_bytes
        self.in_use_bytes = in_use_bytes


class InternalError(Exception):
    """A bug in hetpart, not in the user's input.  Deliberately *not* a HetpartError."""
