"""Issue 19 offline: where a capped plan's predicted latency goes, beside the issue's
limit and the chain bound.  No GPU.

For each cap: the issue's limit (:func:`hetpart.bench.capped.limit_s` at ``--h2d-gbps`` /
``--cpu-gbps``, with its own split: bytes streamed beside the chain of GPU compute and the
CPU reading the rest at memory bandwidth), the same with the CPU's compute counted
(:func:`hetpart.bench.capped.cpu_compute_limit_s`), the chain bound (:mod:`hetpart.partitioner.chain_bound`) at
that link and at the cost model's, then hetpart's plan (``partition(..., gpu_memory=cap,
stream_weights=True)``, or the placement read from ``--placements``) broken into the
latency objective's terms: CUDA kernel seconds (resident / streamed), CPU kernel seconds,
partition overheads (CPU wakes included), activation copies, and the time the chain
waits for weight copies (their sum is the prediction); the copy track's busy time and end;
streamed / CPU / resident bytes; the ring and peak activations in the cap.
``--save`` writes the placements (JSON), so a later call re-prices them without planning.
Numbers of bench/results/capped-bert-limit.md:

    PYTHONPATH=. python tools/capped_plan_terms.py --caps 1/2,1/3,1/4 --save /tmp/bert-plans.json
"""

from __future__ import annotations

import argparse
import json
import time

BERT_LARGE_TWIN = "zoo:bert:layers=24,hidden=1024,heads=16,intermediate=4096"
"""The zoo's BERT-large (seq 128, batch 1; 1.339 GB): the capped bench's ``bert_large`` is
the transformers export, which needs torch; its plans are predicted within ~2% of it
(bench/results/capped-limit-analysis.md)."""


def terms(problem, placement) -> dict:
    """The predicted terms of ``placement`` on ``problem`` (ms, MB); ``waits_ms`` is the
    prediction less every task on the chain (partitions and activation copies run one
    after another; the rest is the chain idle, waiting for weight copies)."""
    from hetpart.partitioner.evaluate import evaluate
    from hetpart.partitioner.problem import STREAM
    from hetpart.partitioner.timeline import simulate

    e = evaluate(problem, placement)
    lay, kernels, p = e.layout, problem.graph.kernels, e.placement
    sched = simulate(lay, "sequential")
    end = max(s.end for s in sched)
    on_chain = sum(s.end - s.start for s in sched if s.task.kind in ("partition", "copy"))
    copies = [s for s in sched if s.task.kind == "weights"]

    def secs(where, device):
        return sum(problem.seconds[k][device] for k in problem.order if p[k] == where) * 1e3

    def mb(where):
        return sum(kernels[k].param_bytes for k in problem.order if p[k] == where) / 1e6

    return dict(predicted_ms=e.sequential_s * 1e3, cuda_resident_ms=secs("cuda", "cuda"),
                cuda_streamed_ms=secs(STREAM, "cuda"), cpu_kernels_ms=secs("cpu", "cpu"),
                overhead_ms=sum(lay.group_overhead) * 1e3,
                activation_copies_ms=sum(s.end - s.start for s in sched if s.task.kind == "copy") * 1e3,
                waits_ms=(end - on_chain) * 1e3, copy_busy_ms=sum(lay.weight_seconds) * 1e3,
                copy_end_ms=max((s.end for s in copies), default=0.0) * 1e3,
                streamed_MB=mb(STREAM), cpu_MB=mb("cpu"), resident_MB=e.memory.params / 1e6,
                ring=f"{lay.stream_slots} x {lay.stream_slot_bytes / 1e6:.1f} MB", ring_MB=e.memory.stream_buffers / 1e6,
                activations_MB=e.memory.peak_activations / 1e6, total_MB=e.memory.total / 1e6,
                cap_MB=(problem.gpu_memory or 0) / 1e6, partitions=len(lay.groups),
                streamed_partitions=len(lay.streamed_groups),
                cpu_partitions=sum(g.device == "cpu" for g in lay.groups), fits=e.fits)


def add_workload_options(ap: argparse.ArgumentParser) -> None:
    """``--workload`` (default the BERT-large twin), ``--caps``, ``--profile``, ``--cpu-gbps``:
    what this tool and tools/plan_time.py plan with."""
    ap.add_argument("--workload", default=BERT_LARGE_TWIN)
    ap.add_argument("--caps", default="1/2,1/3,1/4")
    ap.add_argument("--profile", default="hetpart/costmodel/recorded/h200.json")
    ap.add_argument("--cpu-gbps", type=float, default=95.8, help="CPU weight reads (the limit's and the costs' floor)")


def prepared_costs(args):
    """``(capped.Prepared, CostModel)`` of those options: the workload imported, the profile's
    costs with the CPU's weight reads at ``--cpu-gbps``."""
    from hetpart.bench import capped
    from hetpart.costmodel import CostModel, Profile

    prep = capped.prepare(capped.workload(args.workload, None))
    costs = CostModel(Profile.load(args.profile), graph=prep.graph).with_weight_bandwidth({"cpu": args.cpu_gbps * 1e9})
    return prep, costs


def main(argv=None) -> int:
    from hetpart.bench import capped
    from hetpart.partitioner import partition
    from hetpart.partitioner.chain_bound import chain_bound
    from hetpart.partitioner.plan_report import placement_of
    from hetpart.partitioner.problem import build_problem

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_options(ap)
    ap.add_argument("--h2d-gbps", type=float, default=55.5, help="the limit's host-to-device bandwidth")
    ap.add_argument("--placements", default=None, help="JSON of --save: re-price these instead of planning")
    ap.add_argument("--save", default=None, help="write each cap's placement here (JSON)")
    args = ap.parse_args(argv)

    prep, costs = prepared_costs(args)
    bw = capped.Bandwidths(args.h2d_gbps * 1e9, args.cpu_gbps * 1e9)
    compute = capped.gpu_compute_s(prep.graph, costs)
    given = json.load(open(args.placements)) if args.placements else {}
    saved = {}
    print(f"{args.workload}: {len(prep.graph.kernels)} kernels, {prep.weight_bytes / 1e6:.1f} MB of weights, "
          f"GPU compute {compute * 1e3:.2f} ms (cost model)")
    for cap_text in args.caps.split(","):
        cap = capped.parse_cap(cap_text, prep.weight_bytes)
        problem = build_problem(prep.graph, costs, (), cap, True, state=capped.graph_state_pairs(prep.graph))
        share = capped.read_share(prep.graph)  # as the bench: only the bytes a step reads
        over = share * (prep.weight_bytes - cap)
        # the limit's split (float32): the CPU's reads + GPU compute meet the stream beside them
        cpu_bytes = capped.overlapped_cpu_bytes(over, compute, 1 / bw.cpu_bytes_per_s, 1 / bw.h2d_bytes_per_s)
        streamed = over - cpu_bytes
        limit = capped.limit_s(compute, prep.weight_bytes, cap, bw, read_share=share)
        run, model = chain_bound(problem, bw.h2d_bytes_per_s), chain_bound(problem)
        with_cpu = capped.cpu_compute_limit_s(prep.graph, costs, cap, bw, compute, prep.weight_bytes, share)
        print(f"\ncap {cap_text} ({cap / 1e6:.1f} MB): limit {limit * 1e3:.2f} ms (streams {streamed / 1e6:.0f} MB beside "
              f"{compute * 1e3:.2f} ms of GPU compute and the CPU reading {cpu_bytes / 1e6:.0f} MB in "
              f"{cpu_bytes / bw.cpu_bytes_per_s * 1e3:.2f} ms; read share {share:.3f}); limit + CPU compute "
              f"{with_cpu * 1e3:.2f} ms; chain bound {run.seconds * 1e3:.2f} ms at "
              f"{args.h2d_gbps} GB/s, {model.seconds * 1e3:.2f} ms at the cost model's {model.h2d_bytes_per_s / 1e9:.2f}")
        t0 = time.time()
        if cap_text in given:
            placement, how = given[cap_text], "given"
        else:
            plan = partition(prep.graph, "latency", cost_model=costs, gpu_memory=cap, progress=False,
                             stream_weights=True, state=capped.graph_state_pairs(prep.graph))
            placement, how = placement_of(plan), f"planned in {time.time() - t0:.0f} s"
        saved[cap_text] = placement
        print(f"  plan ({how}): " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in terms(problem, placement).items()), flush=True)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(saved, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
