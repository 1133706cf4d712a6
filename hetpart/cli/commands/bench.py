from __future__ import annotations

from ..options import (
    add_model_options,
    add_profile_options,
    add_target_options,
    check_cuda_arch,
    check_objective,
    kernel_options,
    parse_gpu_memory,
    parse_shapes,
)
from ..registry import register


@register
class Bench:
    """Measure MODEL's plans against single-device TVM builds and other runtimes.

    For each MODEL, in one run on this machine: median latency (warm; p10-p90) and
    pipelined throughput of hetpart's plan for every objective, of all-CPU and
    all-CUDA builds by the same TVM compiler, and of the greedy per-kernel plan; then
    PyTorch eager (GPU, CPU) and ONNX Runtime (CPU) where installed and able to run
    the model (a skipped row says why).  Every plan shows its predicted latency and
    the error ((measured - predicted) / predicted).  Plans that place every kernel
    alike share one build and one measurement.

    --oracle also measures the top candidate plans and random valid plans, and says
    how far the chosen plan is from the best one measured.  --together runs all the
    MODELs at once in one MultiSession against one after another.  --simulate runs
    CUDA partitions on the CPU (no GPU needed; the numbers then say nothing about a
    GPU).  bench/e2e.py runs the whole model zoo.

    examples:
      partition bench zoo:resnet18 --json out/bench.json --md out/bench.md
      partition bench zoo:dlrm --gpu-memory 256MiB
      partition bench zoo:detector zoo:resnet50 --together
      partition bench zoo:mlp:small --simulate --quick --oracle
    """

    name = "bench"

    def add_arguments(self, parser):
        add_model_options(parser, many=True)
        add_profile_options(parser)
        add_target_options(parser)
        g = parser.add_argument_group("what to measure")
        g.add_argument("--objective", action="append", default=[], metavar="NAME",
                       help="plan only for this objective (repeatable; default: latency, makespan, throughput)")
        g.add_argument("--gpu-memory", metavar="SIZE", default=None,
                       help="GPU memory cap for every plan, e.g. 256MiB (all-CUDA is then also shown with the cap lifted)")
        g.add_argument("--pin", action="append", default=[], metavar="OP_OR_NODE=DEVICE",
                       help="keep an op type or a node on a device, as in `partition MODEL --pin`")
        g.add_argument("--peer", action="append", default=[], metavar="NAME",
                       help="run only these peers (repeatable): torch_cuda, torch_cpu, onnxruntime_cpu")
        g.add_argument("--no-peers", action="store_true", help="run no peer runtime")
        g.add_argument("--oracle", action="store_true", help="also measure top candidate and random plans")
        g.add_argument("--together", action="store_true", help="also run all MODELs at once (MultiSession)")
        g.add_argument("--measure", action="store_true",
                       help="first measure the kernels this machine's profile lacks (needs a GPU; resumable)")
        t = parser.add_argument_group("timing")
        t.add_argument("--quick", action="store_true", help="few repeats: fast and noisy")
        t.add_argument("--repeats", type=int, default=None, metavar="N", help="timed calls per measurement (at most)")
        t.add_argument("--warmup", type=int, default=None, metavar="N", help="untimed calls first")
        o = parser.add_argument_group("output")
        o.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")
        o.add_argument("--md", metavar="PATH", default=None, help="write the results as a markdown table")

    def run(self, args) -> int:
        import sys

        from ... import bench
        from ...partitioner import parse_pins

        _check(args)

        options = bench.Options(settings=_settings(args), objectives=tuple(args.objective) or bench.OBJECTIVES,
                                simulate=args.simulate, cuda_arch=args.cuda_arch, profile=args.profile,
                                peers=_peers(args), measure_missing=args.measure,
                                kernel_options=kernel_options(args))
        if not args.measure:
            options.cost_model = options.costs()  # a missing profile is one error, not one per MODEL
        shapes = parse_shapes(args.shape) or None
        cap = parse_gpu_memory(args.gpu_memory)
        pins = tuple(parse_pins(args.pin))
        workloads = [bench.Workload(_label(m, i, args.model), m, shapes=shapes, gpu_memory=cap, pins=pins,
                                    oracle=args.oracle, heterogeneous=cap is not None)
                     for i, m in enumerate(args.model)]
        pairs = (bench.Pair(" + ".join(w.label for w in workloads), tuple(w.label for w in workloads)),) \
            if args.together and len(workloads) > 1 else ()
        report = bench.run(workloads, options, pairs=pairs, commands=["partition " + " ".join(sys.argv[1:])])
        print(bench.render_markdown(report, title="partition bench"))
        for path in bench.write(report, args.json, args.md):
            print(f"wrote {path}", file=sys.stderr)
        return 0 if report.workloads else 1


def _check(args) -> None:
    """Arguments checked before any work.  Every plan but all-CPU runs CUDA partitions:
    without a GPU (and without --simulate) say so now, not in a table note after the
    CPU builds."""
    from ... import targets
    from ...errors import NoGPUError

    from ...importer.onnx_source import check_spec

    for model in args.model:  # a mistyped path or zoo name fails now, not as a note in the report
        check_spec(model)
    check_cuda_arch(args.cuda_arch)
    for name in args.objective:
        check_objective(name)
    parse_gpu_memory(args.gpu_memory)
    if args.simulate or targets.cuda_available():
        return
    arch = " (--cuda-arch cross-compiles, but the builds must run here)" if args.cuda_arch else ""
    raise NoGPUError("partition bench runs the plans' CUDA partitions, and this machine has no CUDA GPU"
                     f"{arch}; add --simulate to run them on the CPU (the numbers then say nothing "
                     "about a GPU), or run it on a machine with one")


def _settings(args):
    from dataclasses import replace

    from ...bench import Settings

    s = Settings.quick() if args.quick else Settings()
    if args.repeats is not None:
        s = replace(s, min_repeats=min(s.min_repeats, args.repeats), max_repeats=args.repeats)
    if args.warmup is not None:
        s = replace(s, warmup=args.warmup)
    return s


def _peers(args) -> tuple[str, ...]:
    from ...bench.peers import PEERS
    from ...errors import HetpartError

    if args.no_peers:
        return ()
    unknown = [p for p in args.peer if p not in PEERS]
    if unknown:
        raise HetpartError(f"unknown peer(s) {', '.join(unknown)}; known peers: {', '.join(PEERS)}")
    return tuple(args.peer) or tuple(PEERS)


def _label(model: str, i: int, models: list[str]) -> str:
    label = model[len("zoo:"):] if model.startswith("zoo:") else model.rsplit("/", 1)[-1]
    return label if models.count(model) == 1 else f"{label} #{i + 1}"
