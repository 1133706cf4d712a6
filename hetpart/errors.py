"""The one exception hierarchy of hetpart.

Two families, kept apart on purpose (as Polygraphy does):

* :class:`HetpartError` and its subclasses are *user* errors: bad input, a missing
  GPU, a corrupt file.  Their message says what is wrong and what to do; the CLI
  prints it without a traceback and exits with code 1.
* :class:`InternalError` is a bug in hetpart.  The CLI prints the traceback and
  asks for a report; it exits with code 2.

Every subclass adds no behaviour, only a name a caller can catch.
"""

from __future__ import annotations


class HetpartError(Exception):
    """Base of every error caused by the user's input or machine."""


# --- input models ---------------------------------------------------------------
class ModelLoadError(HetpartError):
    """The model file is missing, unreadable, not ONNX, or fails the ONNX checker."""


class ShapeError(HetpartError):
    """An input has symbolic dims that no ``shapes``/``--shape`` fixes, or a shape is wrong."""


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


# --- files hetpart writes and reads back -----------------------------------------
class ProfileError(HetpartError):
    """A cost-model profile is missing, corrupt, of another schema, or of another machine."""


class PlanError(HetpartError):
    """A plan cannot be made (e.g. an infeasible memory cap) or a plan file is invalid."""


class CompileError(HetpartError):
    """A partition failed to compile, or a compiled artifact is missing or corrupt."""


class RuntimeFailure(HetpartError):
    """Running a compiled model failed (bad feeds, a partition raised, out of memory).

    ``partition`` names the partition that failed, when one did.
    """

    def __init__(self, message: str, partition: str | None = None):
        super().__init__(message)
        self.partition = partition


class InternalError(Exception):
    """A bug in hetpart, not in the user's input.  Deliberately *not* a HetpartError."""
