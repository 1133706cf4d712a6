"""Where a warm all-CUDA ``Session.run`` spends its host time (issue 17, batch 1).

For each model: every kernel on the GPU, one Session, warm runs; then
  * wall time per ``run`` (numpy in, numpy out) and, from a timed run's stream spans,
    the GPU's time for the partition call (what the host adds is the difference);
  * a cProfile of N runs: the functions with the most own time, and hetpart's with
    the most cumulative time -- what to cut next.
Without a GPU the CUDA partitions are simulated (the script runs; the numbers are not
the GPU's).

    python tools/gpu_host_profile.py zoo:mobilenet zoo:efficientnet zoo:convnext --runs 300
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import hetpart
from hetpart.backend import forced_plan
from hetpart.runtime.feeds import random_feeds


def _wall_ms(session, feeds, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _gpu_ms(session, feeds) -> float | None:
    """The GPU partition spans of one timed run (ms), None if the run recorded none."""
    spans = []
    for _ in range(5):
        session.profile = True
        session.run(feeds)
        stats = session.last_run_stats
        spans.append(sum(s.seconds for s in stats.spans if s.track == session.stream_track))
    session.profile = False
    return min(spans) * 1e3 if any(spans) else None


def profile_model(name: str, runs: int, simulate: bool) -> str:
    graph = hetpart.load(name)
    compiled = hetpart.compile(forced_plan(graph, "cuda"), graph, simulate=simulate, progress=False)
    feeds = random_feeds(compiled.inputs)
    out = io.StringIO()
    with hetpart.Session(compiled) as s:
        for _ in range(30):
            s.run(feeds)
        wall = _wall_ms(s, feeds, runs)
        gpu = _gpu_ms(s, feeds)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(runs):
            s.run(feeds)
        prof.disable()
        inline = s.inline_runs
    gpu_txt = f"{gpu:.3f} ms" if gpu is not None else "-"
    print(f"== {name}: {len(compiled.partitions)} partition(s), wall {wall:.3f} ms per run, "
          f"GPU spans {gpu_txt}, host {wall - (gpu or 0):.3f} ms; inline runs {inline}", file=out)
    stats = pstats.Stats(prof, stream=out)
    print(f"-- own time, {runs} runs", file=out)
    stats.sort_stats("tottime").print_stats(25)
    print(f"-- cumulative, hetpart's functions, {runs} runs", file=out)
    stats.sort_stats("cumulative").print_stats("hetpart", 25)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    simulate = not hetpart.cuda_available()
    if simulate:
        print("no CUDA GPU: the CUDA partitions are simulated on the CPU")
    for name in args.models:
        print(profile_model(name, args.runs, simulate), flush=True)


if __name__ == "__main__":
    main()
