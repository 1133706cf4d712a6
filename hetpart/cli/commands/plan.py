from __future__ import annotations

import argparse

from ...errors import HetpartError, NoGPUError, PlanError, SymbolicDimsError
from ..options import (
    add_conv_block_option,
    add_model_options,
    add_precision_option,
    add_profile_options,
    add_target_options,
    check_cuda_arch,
    check_objective,
    kernel_options,
    parse_conv_block,
    parse_gpu_memory,
    parse_precision,
    parse_shapes,
)
from ...contracts.buckets import parse_buckets
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

    A model with symbolic input dims that --shape does not fix is planned (and
    compiled) once per shape bucket, one line per bucket: the batch dim (axis 0) at
    1,2,4,8,16,32 unless --buckets says otherwise; any other symbolic dim (a
    sequence) needs --buckets (zero padding along it changes results unless the
    model masks padded positions).  -o OUT then gets OUT/<bucket>/plan.json ... and,
    with --compile, one artifact per bucket under a top manifest (hetpart.Session
    opens it and pads each feed to the smallest bucket that fits).

    --data-parallel [BATCH] prices splitting a batch between an all-GPU and an
    all-CPU build of the model run at once (the model needs a symbolic batch dim, or
    is a zoo spec), prints the split beside the best per-kernel plan, and keeps
    whichever is predicted faster (docs/ARCHITECTURE.md, "Data-parallel split").

    --conv-block N builds an all-CPU plan with its convolutions channel-blocked,
    NCHW{N}c (hetpart.load(model, conv_block=N)): the model is planned as imported
    (NCHW); if every partition is on the CPU it is imported again blocked and planned
    all-CPU, else the command stops with an error naming the partitions off the CPU.
    N is the CPU's float lanes (8 on AVX2, 16 on AVX-512).  Without the option an
    all-CPU plan of a model with convolutions is built so in NCHW16c on AVX-512 CPUs
    (16 threads: 0.56-0.84x of the NCHW build on five convnets) and stays NCHW
    elsewhere; --conv-block off keeps NCHW.

    examples:
      partition zoo:resnet18
      partition model.onnx --shape input=1,3,224,224 --explain
      partition zoo:dlrm --gpu-memory 256MiB --pin Gather=cpu -o out/
      partition zoo:bert --gpu-memory 160MiB --explain        # weights over the cap may stream
      partition zoo:mlp:small --simulate -o out/ --compile --run --trace
      partition zoo:bert:small --precision cuda=bf16 --simulate -o out/ --compile
      partition model.onnx --buckets batch=1,8,32 --simulate -o out/ --compile
      partition zoo:dlrm:batch=64 --data-parallel
      partition model.onnx --data-parallel 128 --simulate -o out/ --compile
      partition resnet50.onnx --conv-block 16 -o out/ --compile   # all-CPU plans only
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
        g.add_argument("--stream-weights", action=argparse.BooleanOptionalAction, default=True,
                       help="under --gpu-memory, let CUDA kernels stream weights that do not fit from pinned host "
                            "memory where the costs say it beats running them on the CPU (default: on; "
                            "--no-stream-weights keeps each kernel's weights where it runs)")
        add_precision_option(g)
        add_conv_block_option(g)
        g.add_argument("--explain", action="store_true",
                       help="show what moving each partition and the heaviest kernels to the other device would cost")
        g.add_argument("--summary-only", action="store_true", help="print the op-graph summary and stop")
        g.add_argument("--data-parallel", nargs="?", type=int, const=0, default=None, metavar="BATCH",
                       help="split a batch of BATCH rows (default: a zoo spec's batch=) between an all-GPU and an "
                            "all-CPU build run at once, where the costs predict a gain over the per-kernel plan")
        g.add_argument("--buckets", action="append", default=[], metavar="DIM=N,N,...",
                       help="shape buckets to build for a symbolic dim, e.g. batch=1,8,32 (repeatable; 'batch' "
                            "names the axis-0 dim; default: batch=1,2,4,8,16,32)")
        o = parser.add_argument_group("output")
        o.add_argument("-o", "--out", metavar="DIR", default=None, help="write plan.json, plan.svg, plan.trace.json here")
        o.add_argument("--compile", action="store_true", help="compile the plan into OUT (needs -o)")
        o.add_argument("--run", action="store_true", help="run the compiled plan once on random inputs")
        o.add_argument("--trace", action="store_true", help="with --run: write OUT/run.trace.json")

    def run(self, args) -> int:
        from ... import importer

        checked = self._check(args)
        if args.data_parallel is not None:
            from ..data_parallel_report import run_data_parallel

            return run_data_parallel(self, args, checked)
        if checked["buckets"]:
            return self._run_buckets(args, checked)
        try:
            graph = importer.load(args.model, checked["shapes"])
        except SymbolicDimsError:  # not fixed by --shape: build the shape buckets instead
            return self._run_buckets(args, checked)
        if args.summary_only:
            print(graph.summary())
            return 0
        plan = self._plan(args, graph, checked)
        block, why = checked["conv_block"], f"(--conv-block {checked['conv_block']})"
        if block is None and all(p.device == "cpu" for p in plan.partitions):
            block, why = _default_block(graph), "(the all-CPU default on this CPU; --conv-block off keeps NCHW)"
        if block:  # None or 0 (--conv-block off): NCHW
            graph, plan = self._blocked(args, graph, plan, {**checked, "conv_block": block}, why)
        self._check_devices(args, plan)
        report = [graph.summary(), "", _partitioner().render_plan(plan)]
        if args.explain:
            report += ["", _partitioner().explain(plan)]
        if plan.costs is not None:
            from ...costmodel.data_inputs import predicted_notes

            report += predicted_notes(graph, plan.assignment, plan.costs)
        print("\n".join(report))
        if checked["out"] is not None:
            compiled = self._write(args, plan, graph, checked["out"], checked["options"])
            if args.run:
                from ... import runtime

                runtime.run_once_and_report(compiled, trace=(checked["out"].path / "run.trace.json")
                                            if args.trace else None)
        return 0

    def _check(self, args) -> dict:
        """Every argument checked before any work (a mistake costs no import or plan)."""
        from ..outdir import OutputDir

        if args.trace and not args.run:
            raise HetpartError("--trace records the timeline of --run; add --run (and -o DIR)")
        if (args.compile or args.run) and not args.out:
            flag = "--compile" if args.compile else "--run"
            raise HetpartError(f"{flag} needs -o DIR to put the compiled artifact in")
        check_objective(args.objective)
        check_cuda_arch(args.cuda_arch)
        conv_block = parse_conv_block(args.conv_block)
        if conv_block and (args.data_parallel is not None or args.buckets):
            raise PlanError(f"--conv-block {conv_block} builds one all-CPU plan of fixed shapes; it does not take "
                            "--data-parallel or --buckets (fix the shapes with --shape)")
        return {"conv_block": conv_block, "shapes": parse_shapes(args.shape), "buckets": parse_buckets(args.buckets),
                "gpu_memory": parse_gpu_memory(args.gpu_memory),
                "pins": _partitioner().parse_pins(args.pin),
                "out": OutputDir(args.out) if args.out else None, "options": kernel_options(args),
                "precision": parse_precision(getattr(args, "precision", None))}

    def _run_buckets(self, args, checked) -> int:
        """Plan (and with --compile/--run build and run) every shape bucket; one line each."""
        from ..bucket_report import run_buckets

        if checked["conv_block"]:
            raise PlanError(f"--conv-block {checked['conv_block']} builds one all-CPU plan of fixed shapes, and "
                            f"'{args.model}' has symbolic dims: fix them with --shape")
        if args.trace:
            raise HetpartError("--trace records one run of one shape; with shape buckets, fix the shape with "
                               "--shape to trace it")
        return run_buckets(self, args, checked)

    def _plan(self, args, graph, checked):
        return _partitioner().partition(graph, objective=args.objective, profile=args.profile,
                                        gpu_memory=checked["gpu_memory"], pins=checked["pins"],
                                        stream_weights=args.stream_weights, precision=checked["precision"])

    def _blocked(self, args, graph, plan, checked, why: str):
        """``--conv-block N``: (the model imported with its convolutions in ``NCHW{N}c``,
        its all-CPU plan).  In: the NCHW import and its plan; raises PlanError, naming
        the partitions off the CPU, unless every partition of that plan is on the CPU
        (the blocked layout is built for the CPU only: :mod:`hetpart.importer.conv_layout`)."""
        from ... import importer
        from ...partitioner import Pin

        block = checked["conv_block"]
        off = [p for p in plan.partitions if p.device != "cpu"]
        if off:
            where = ", ".join(f"{p.device} ({len(p.kernels)} kernels)" for p in off)
            raise PlanError(f"--conv-block {block} is for all-CPU plans, and this plan puts {len(off)} of "
                            f"{len(plan.partitions)} partitions off the CPU: {where}; pin them to the CPU "
                            f"(--pin OP=cpu) or drop --conv-block")
        blocked = importer.load(args.model, checked["shapes"], conv_block=block)
        print(f"convolutions in NCHW{block}c {why}: the all-CPU plan of the blocked import")
        pins = [Pin(k, "cpu") for k in blocked.kernels]
        return blocked, self._plan(args, blocked, {**checked, "pins": pins})

    def _check_devices(self, args, plan) -> None:
        """Compiling or running CUDA partitions needs a GPU, --simulate or --cuda-arch: say so now."""
        from ... import targets

        if not (args.compile or args.run) or args.simulate or all(p.device != "cuda" for p in plan.partitions):
            return
        targets.resolve("cuda", cuda_arch=args.cuda_arch)  # NoGPUError without a GPU or an arch
        if args.run and not targets.cuda_available():
            raise NoGPUError("--run runs the CUDA partitions, and this machine has no CUDA GPU; "
                             "add --simulate to run them on the CPU")

    def _write(self, args, plan, graph, out, options):
        """plan.json, plan.svg, plan.trace.json and (--compile/--run) the artifact, into OUT whole."""
        partitioner = _partitioner()
        compiled = None
        with out.staging() as tmp:
            plan.save(tmp / "plan.json")
            partitioner.write_svg(plan, tmp / "plan.svg")
            partitioner.write_trace(plan, tmp / "plan.trace.json")
            if args.compile or args.run:
                from ... import compiler

                _note_option_mismatch(args.profile, options)
                compiled = compiler.compile(plan, graph, simulate=args.simulate, cuda_arch=args.cuda_arch,
                                            options=options)
                compiled.save(tmp)
        where = out.path
        print(f"\nwrote {where / 'plan.json'}, {where / 'plan.svg'}, {where / 'plan.trace.json'}")
        if compiled is not None:
            compiled.directory = where  # the staging directory became OUT
            print(f"wrote compiled artifact to {where}")
        return compiled


def _default_block(graph) -> int | None:
    from ...importer.conv_layout import default_block

    return default_block(graph)


def _partitioner():
    from ... import partitioner

    return partitioner


def _note_option_mismatch(profile, options) -> None:
    """Say so when the profile that priced the plan was measured with other kernel
    options than the build will use: its prices are for other GPU code."""
    from ...costmodel import resolve_profile
    from ...costmodel.fingerprint import recorded_options

    have = recorded_options(resolve_profile(profile).settings)
    if have != options:
        print(f"note: the profile was measured with kernel options ({have.describe()}); building with "
              f"({options.describe()}): the plan's GPU costs may be off")
