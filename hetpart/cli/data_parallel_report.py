"""``partition MODEL --data-parallel [BATCH]``: a batch split between the GPU and the CPU.

Prints the split the cost model picks beside the best per-kernel plan at the same batch,
the rule, and every split priced (:func:`hetpart.data_parallel.explain_data_parallel`);
then the plan that wins: each side's plan, or the per-kernel plan.  ``-o OUT`` gets
``OUT/data_parallel.json`` (the split, schema ``hetpart-data-parallel-plan``) or
``OUT/plan.json`` (the per-kernel plan, the split's numbers in its ``predicted``);
``--compile`` adds the compiled model (both sides, :mod:`hetpart.compiler.data_parallel`,
or the per-kernel plan's artifact).
"""

from __future__ import annotations

from ..errors import HetpartError


def run_data_parallel(command, args, checked) -> int:
    """The data-parallel path of the plan command (``command`` is the Plan command object)."""
    from .. import data_parallel
    from ..partitioner import render_plan
    from ..partitioner.data_parallel_plan import DataParallelPlan

    if args.run or args.trace or checked["buckets"] or args.summary_only:
        raise HetpartError("--data-parallel plans (and with --compile builds) a split batch; it does not take "
                           "--run, --trace, --buckets or --summary-only")
    result = data_parallel.partition_data_parallel(
        args.model, args.data_parallel or None, shapes=checked["shapes"], objective=args.objective,
        profile=args.profile, gpu_memory=checked["gpu_memory"], pins=checked["pins"])
    split = isinstance(result, DataParallelPlan)
    batch = result.batch if split else result.predicted["data_parallel"]["batch"]
    sides = ([(f"{device} side: {rows} of {batch} rows", p) for device, rows, p in result.sides()] if split
             else [(f"per-kernel plan at batch {batch}", result)])
    for _, plan in sides:
        command._check_devices(args, plan)
    report = [data_parallel.explain_data_parallel(result)]
    for title, plan in sides:
        report += ["", title, render_plan(plan)]
    print("\n".join(report))
    if checked["out"] is not None:
        _write(args, result, split, checked)
    return 0


def _write(args, result, split: bool, checked) -> None:
    from .. import compiler, data_parallel

    out = checked["out"]
    name = "data_parallel.json" if split else "plan.json"
    with out.staging() as tmp:
        result.save(tmp / name)
        if args.compile:
            if split:
                built = data_parallel.compile_data_parallel(result, simulate=args.simulate, cuda_arch=args.cuda_arch,
                                                            options=checked["options"])
                built.save(tmp)
            else:
                compiler.compile(result, result.graph, simulate=args.simulate, cuda_arch=args.cuda_arch,
                                 options=checked["options"]).save(tmp)
    print(f"\nwrote {out.path / name}" + (f" and the compiled model to {out.path}" if args.compile else ""))
