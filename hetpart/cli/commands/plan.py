from __future__ import annotations

from pathlib import Path

from ..options import (
    add_model_options,
    add_profile_options,
    add_target_options,
    kernel_options,
    parse_bytes,
    parse_shapes,
)
from ..registry import register


@register
class Plan:
    """Plan MODEL across CPU and CUDA: import it, place every kernel, say why.

    Prints the op-graph summary, the partitions (device, kernels, predicted time,
    bytes in/out), the transfers at the cuts, and the predicted latency of the plan
    against all-CPU, all-CUDA and greedy per-kernel placement.

    With -o OUT it writes OUT/plan.json, OUT/plan.svg (the graph coloured by device)
    and OUT/plan.trace.json (the predicted timeline, for chrome://tracing or Perfetto).
    --compile also writes the compiled artifact to OUT; --run runs it once on random
    inputs (--trace adds OUT/run.trace.json, the measured timeline).

    examples:
      partition zoo:resnet18
      partition model.onnx --shape input=1,3,224,224 --explain
      partition zoo:dlrm --gpu-memory 256MiB --pin Gather=cpu -o out/
      partition zoo:mlp:small --simulate -o out/ --compile --run --trace
    """

    name = "plan"

    def add_arguments(self, parser):
        add_model_options(parser)
        add_profile_options(parser)
        add_target_options(parser)
        g = parser.add_argument_group("plan")
        g.add_argument("--objective", default="latency",
                       help="latency (default), makespan or throughput")
        g.add_argument("--pin", action="append", default=[], metavar="OP_OR_NODE=DEVICE",
                       help="keep an op type (e.g. Gather=cpu) or a node (node_17=cuda) on a device; repeatable")
        g.add_argument("--gpu-memory", metavar="SIZE", default=None,
                       help="GPU memory cap for parameters plus peak activations, e.g. 4GiB")
        g.add_argument("--explain", action="store_true",
                       help="show what moving each partition and the heaviest kernels to the other device would cost")
        g.add_argument("--summary-only", action="store_true", help="print the op-graph summary and stop")
        o = parser.add_argument_group("output")
        o.add_argument("-o", "--out", metavar="DIR", default=None, help="write plan.json, plan.svg, plan.trace.json here")
        o.add_argument("--compile", action="store_true", help="compile the plan into OUT (needs -o)")
        o.add_argument("--run", action="store_true", help="run the compiled plan once on random inputs")
        o.add_argument("--trace", action="store_true", help="with --run: write OUT/run.trace.json")

    def run(self, args) -> int:
        from ... import importer

        graph = importer.load(args.model, parse_shapes(args.shape))
        print(graph.summary())
        if args.summary_only:
            return 0
        plan = self._plan(args, graph)
        out = Path(args.out) if args.out else None
        if out:
            self._write_plan(plan, out)
        if args.compile or args.run:
            self._compile_and_run(args, plan, graph, out)
        return 0

    def _plan(self, args, graph):
        from ... import partitioner

        plan = partitioner.partition(
            graph,
            objective=args.objective,
            profile=args.profile,
            gpu_memory=parse_bytes(args.gpu_memory) if args.gpu_memory else None,
            pins=partitioner.parse_pins(args.pin),
        )
        print()
        print(partitioner.render_plan(plan))
        if args.explain:
            print()
            print(partitioner.explain(plan))
        return plan

    def _write_plan(self, plan, out: Path) -> None:
        from ... import partitioner

        out.mkdir(parents=True, exist_ok=True)
        plan.save(out / "plan.json")
        partitioner.write_svg(plan, out / "plan.svg")
        partitioner.write_trace(plan, out / "plan.trace.json")
        print(f"\nwrote {out / 'plan.json'}, {out / 'plan.svg'}, {out / 'plan.trace.json'}")

    def _compile_and_run(self, args, plan, graph, out: Path | None) -> None:
        from ...errors import HetpartError

        if out is None:
            raise HetpartError("--compile and --run need -o DIR to put the compiled artifact in")
        from ... import compiler

        options = kernel_options(args)
        _note_option_mismatch(args.profile, options)
        compiled = compiler.compile(plan, graph, simulate=args.simulate, cuda_arch=args.cuda_arch, options=options)
        compiled.save(out)
        print(f"wrote compiled artifact to {out}")
        if args.run:
            from ... import runtime

            runtime.run_once_and_report(compiled, trace=(out / "run.trace.json") if args.trace else None)


def _note_option_mismatch(profile, options) -> None:
    """Say so when the profile that priced the plan was measured with other kernel
    options than the build will use: its prices are for other GPU code."""
    from ...costmodel import resolve_profile
    from ...costmodel.fingerprint import recorded_options

    have = recorded_options(resolve_profile(profile).settings)
    if have != options:
        print(f"note: the profile was measured with kernel options ({have.describe()}); building with "
              f"({options.describe()}): the plan's GPU costs may be off")
