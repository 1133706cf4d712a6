"""The reviewed list of onnx backend node tests hetpart is expected to fail, and why.

Each entry: test name -> (category, reason).  A listed test must fail with a typed
:class:`hetpart.HetpartError` (hetpart says it cannot run the model); a listed test
that passes fails the run ("unexpected pass": take it off the list), and a listed
test that fails any other way (wrong result, internal error) fails the run too.

Categories:

* ``tvm-op``: TVM 0.27's ONNX importer has no converter for the op (and ONNX does
  not define it as a function hetpart could expand).
* ``tvm-attr``: the importer has the op but not this attribute/mode/input form.
* ``dtype``: an element type hetpart/TVM does not support (strings, float8, int4,
  bfloat16, complex...).
* ``dynamic``: the output shape depends on input values in a way the static
  pipeline cannot express (or an input must be a constant).
* ``type``: non-tensor values (sequences, optionals, maps) as model inputs/outputs.
* ``training``: training-mode ops (gradients, dropout masks with training_mode).
"""

from __future__ import annotations

EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
}

EXPECTED_FAILURES_CUDA: dict[str, tuple[str, str]] = {}
"""Extra entries for the CUDA path only (kernels the GPU build cannot handle)."""


def expected_for(device: str) -> dict[str, tuple[str, str]]:
    """The table for an ONNX backend device (``"CPU"`` or ``"CUDA"``)."""
    table = dict(EXPECTED_FAILURES)
    if device.upper().startswith("CUDA"):
        table.update(EXPECTED_FAILURES_CUDA)
    return table
