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

from .harness import OBJECTIVES, Options, Workload, bench_workload
from .render import render_markdown, write
from .results import BenchReport
from .suite import Pair, gpu_slug, machine, run
from .timing import Settings

__all__ = ["OBJECTIVES", "BenchReport", "Options", "Pair", "Settings", "Workload", "bench_workload", "gpu_slug",
           "machine", "render_markdown", "run", "write"]
