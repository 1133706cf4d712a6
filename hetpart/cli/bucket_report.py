"""``partition MODEL`` on a model with symbolic dims: plan (compile, run) every shape bucket.

One short line per bucket (its partitions and predicted latency), so what was built
is plain; ``--explain`` adds each bucket's full plan report.  ``-o OUT`` gets
``OUT/<bucket>/plan.json, plan.svg, plan.trace.json`` and, with ``--compile``, the
bucketed artifact (:mod:`hetpart.compiler.bucketed`).
"""

from __future__ import annotations

import time


def bucket_line(planned) -> str:
    """``bucket batch=8: 2 partitions (cpu 3 kernels, cuda 12 kernels), predicted 0.412 ms``."""
    plan = planned.plan
    parts = ", ".join(f"{p.device} {len(p.kernels)} kernel{'s' if len(p.kernels) != 1 else ''}"
                      for p in plan.partitions)
    n = len(plan.partitions)
    return (f"bucket {planned.label}: {n} partition{'s' if n != 1 else ''} ({parts}), "
            f"predicted {plan.predicted['latency_s'] * 1e3:.3f} ms")


def run_buckets(command, args, checked) -> int:
    """The bucketed path of the plan command (``command`` is the Plan command object)."""
    from .. import buckets as bucketing
    from ..importer import read_source
    from ..importer.symbolic import bucket_spec

    source = read_source(args.model)
    spec = bucket_spec(source, checked["buckets"] or None, checked["shapes"])
    grid = spec.grid()
    print(_header(args.model, spec, len(grid)))
    if args.summary_only:
        return 0
    out = checked["out"]
    partitioner = _partitioner()
    lines: list[str] = []
    with _maybe_staging(out) as tmp:
        def on_bucket(planned):
            command._check_devices(args, planned.plan)
            lines.append(bucket_line(planned))
            print(lines[-1], flush=True)
            if args.explain:
                print("\n" + partitioner.render_plan(planned.plan) + "\n\n" + partitioner.explain(planned.plan) + "\n")
            if tmp is not None:
                sub = tmp / planned.label
                sub.mkdir(exist_ok=True)
                planned.plan.save(sub / "plan.json")
                partitioner.write_svg(planned.plan, sub / "plan.svg")
                partitioner.write_trace(planned.plan, sub / "plan.trace.json")

        common = dict(shapes=checked["shapes"], objective=args.objective, profile=args.profile,
                      gpu_memory=checked["gpu_memory"], pins=checked["pins"], precision=checked["precision"])
        compiled = None
        if args.compile or args.run:
            compiled = bucketing.compile_buckets(source, spec_buckets(spec), simulate=args.simulate,
                                                 cuda_arch=args.cuda_arch, options=checked["options"],
                                                 on_bucket=on_bucket, **common)
            compiled.save(tmp)
        else:
            for planned in bucketing.plan_buckets(source, spec_buckets(spec), **common):
                on_bucket(planned)
    if out is not None:
        print(f"\nwrote {len(grid)} bucket{'s' if len(grid) != 1 else ''} to {out.path}/<bucket>/"
              + (" and the bucketed artifact (manifest.json)" if compiled is not None else ""))
        if compiled is not None:
            compiled.directory = out.path
            for b in compiled.buckets:
                b.compiled.directory = out.path / b.directory
    if args.run and compiled is not None:
        _run_each(compiled)
    return 0


def spec_buckets(spec) -> dict[str, list[int]]:
    return {d: list(s) for d, s in spec.sizes.items()}


def _header(model, spec, n: int) -> str:
    dims = "; ".join(f"{d}={','.join(map(str, s))}" + (" (the batch dim)" if d == spec.batch and d != "batch" else "")
                     for d, s in spec.sizes.items())
    inexact = [d for d in spec.sizes if d != spec.batch]
    note = (f" (padding along {', '.join(inexact)} is exact only if the model masks padded positions)"
            if inexact else "")
    return f"{model} has symbolic input dims; building {n} shape bucket{'s' if n != 1 else ''}: {dims}{note}"


def _run_each(compiled) -> None:
    """Run every bucket once on random inputs of its size (after a warm-up run)."""
    from ..runtime import BucketedSession, random_feeds

    print("\nmeasured runs (random inputs):")
    with BucketedSession(compiled) as session:
        for b in compiled.buckets:
            feeds = random_feeds(b.compiled.inputs)
            session.run(feeds)
            t = time.perf_counter()
            session.run(feeds)
            ms = (time.perf_counter() - t) * 1e3
            print(f"  bucket {b.label}: {ms:.3f} ms (predicted {b.compiled.plan.predicted['latency_s'] * 1e3:.3f} ms)")


class _NoStaging:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _maybe_staging(out):
    return out.staging() if out is not None else _NoStaging()


def _partitioner():
    from .. import partitioner

    return partitioner
