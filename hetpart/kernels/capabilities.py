"""Kernels hetpart knows it cannot build for a device, and why.

In: a kernel of the op graph and a device name.  Out: ``None`` when hetpart can
build it there, else a reason a user can act on.  The cost model treats these as
failed measurements without trying (so ``partition`` pins the kernel to the other
device and says why), because trying is not always harmless: TVM 0.27's CUDA NMS
either raises at compile time or crashes the process.
"""

from __future__ import annotations

# PrimFunc name prefix -> reason, per device; found on the H200 machine (2026-11-21).
_UNBUILDABLE = {
    "cuda": {
        "all_class_non_max_suppression": (
            "NonMaxSuppression is a CPU kernel in hetpart (a serial heap per class, "
            "hetpart.importer.non_max_suppression; TVM 0.27's own failed to compile for CUDA); "
            "it runs on the CPU"
        ),
        "topk": (
            "TopK is a CPU kernel in hetpart (a serial heap per row, hetpart.importer.top_k; "
            "before it, TVM's runtime builtin, which has no CUDA kernel either); it runs on the CPU"
        ),
        "scatter_elements": (
            "ScatterElements has no CUDA schedule in TVM 0.27 (no GPU rule applies; built unscheduled it "
            "crashed the process on the H200: onnx's test_maxunpool_export_without_output_shape); it runs on the CPU"
        ),
    },
}


def unsupported_reason(kernel, device: str) -> str | None:
    """Why ``kernel`` (an op-graph Kernel) cannot be built for ``device``, or None."""
    if device == "cuda" and "." in kernel.func:
        # Not lowered to TIR (e.g. relax.topk): a runtime builtin with no schedule,
        # so hetpart can neither compile it as a GPU kernel nor measure it.
        return f"{kernel.func} is a TVM runtime builtin, not a kernel hetpart can build for CUDA; it runs on the CPU"
    for prefix, reason in _UNBUILDABLE.get(device, {}).items():
        if kernel.func.startswith(prefix):
            return reason
    return None
