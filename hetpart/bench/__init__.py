"""The end-to-end benchmark: every plan measured against single-device builds and peers.

Modules, top-down:

    suite     run(workloads, options, pairs) -> BenchReport   (what the CLI and bench/e2e.py call)
    harness   one Workload -> WorkloadResult: plan, compile, time, peers, oracle check
    builds    one compiled build per distinct assignment, compiled before timing
    timing    warm-up, repeats, median/p10/p90; pipelined items/s
    peers     PyTorch eager and ONNX Runtime on the same model (imported lazily)
    export    torchvision ResNet-50 / transformers BERT exported to ONNX (GPU machine)
    results   the report's dataclasses and their JSON ("schema": "hetpart-bench")
    goals     pass/fail of the published goals, from the numbers
    render    markdown tables (render_markdown, write)
    conformance  the onnx backend node tests through hetpart.backend, crash-isolated (bench/conformance.py)

Typical use::

    from hetpart import bench
    report = bench.run([bench.Workload("mlp", "zoo:mlp:small")], bench.Options(simulate=True))
    bench.write(report, "bench.json", "bench.md")
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "OBJECTIVES": "harness", "Options": "harness", "Workload": "harness", "bench_workload": "harness",
    "render_markdown": "render", "write": "render", "BenchReport": "results",
    "Pair": "suite", "gpu_slug": "suite", "machine": "suite", "run": "suite", "Settings": "timing",
}
"""Public name -> the module defining it, imported on first use (as :mod:`hetpart`'s own names):
a submodule that needs no TVM (``peers``' ONNX Runtime session, ``serve_load``) is imported
without ``harness``' importer and TVM."""

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'hetpart.bench' has no attribute '{name}'")
