"""Does a small host-to-device copy wait for a big one on another stream (issue 19)?

bench/results/capped-decode-gap-s47.md: in llama_decode's streaming plan a CUDA
partition's 8 KB input copy (compute stream) ended 4-6 us after the in-flight 46-92 MB
weight refill (copy stream) landed, every time.  Here, per variant and ``--reps`` times:
a ``--big`` byte pinned copy enqueued by ``weight_stream.CopyEngine.fill`` on a copy
stream (one copy, or chunks of at most CHUNK bytes: ``CHUNKED_REFILLS``), then
``--delay-us`` later (host clock) two ``--small`` byte pinned copies on the compute
stream, each between two CUDA events.  Medians per variant:

* ``big_ms``: the big copy's start to landed (chunking's device cost);
* ``enqueue_us``: the host's time in ``fill`` (chunking's host cost: one call per chunk);
* ``offset_us``: the big copy's start to the first small copy's start event;
* ``small_us``: each small copy's duration;
* ``end_after_landed_us``: each small copy's end less the big copy's landing (>= 0 and
  small: it waited for the whole big copy; well below 0: it did not).

    python tools/copy_queue_probe.py --chunks 0,8388608 --json out.json [--simulate]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def probe(memory, compute, copier, big: int, small: int, chunk: int | None, reps: int, delay_s: float) -> dict:
    """One variant's medians (see the module docstring); ``chunk`` None: one copy."""
    from hetpart.compiler.artifact import TensorSpec
    from hetpart.runtime.weight_stream import CopyEngine

    spec = lambda name, n: TensorSpec(name, (n,), "uint8")  # noqa: E731
    src, dst = memory.pinned(spec("big src", big)), memory.device(spec("big dst", big))
    smalls = [(memory.pinned(spec(f"small src {i}", small)), memory.device(spec(f"small dst {i}", small)))
              for i in range(2)]
    src.array[:] = 7
    engine = CopyEngine(compute, copier, chunk_bytes=chunk)
    rows = []
    for _ in range(reps + 1):  # the first: warm-up, dropped
        t0 = time.perf_counter()
        start, landed = engine.fill(dst, src, None)
        enqueue = time.perf_counter() - t0
        _spin(max(0.0, delay_s - enqueue))
        marks = []
        for s, d in smalls:
            before = compute.record()
            compute.copy(d, s, "h2d")
            marks.append((before, compute.record()))
        for _, after in marks:
            after.synchronize()
        landed.synchronize()
        rows.append({"big_ms": landed.seconds_since(start) * 1e3, "enqueue_us": enqueue * 1e6,
                     "offset_us": marks[0][0].seconds_since(start) * 1e6,
                     "small_us": [a.seconds_since(b) * 1e6 for b, a in marks],
                     "end_after_landed_us": [a.seconds_since(landed) * 1e6 for _, a in marks]})
        for m in [start, landed] + [m for pair in marks for m in pair]:
            m.release()
    rows = rows[1:]
    med = lambda key, i=None: statistics.median(r[key] if i is None else r[key][i] for r in rows)  # noqa: E731
    return {"chunk": chunk, "chunks": 1 if chunk is None else -(-big // chunk), "reps": reps,
            "big_ms": med("big_ms"), "enqueue_us": med("enqueue_us"), "offset_us": med("offset_us"),
            "small_us": [med("small_us", i) for i in range(2)],
            "end_after_landed_us": [med("end_after_landed_us", i) for i in range(2)],
            "waited": [sum(0 <= r["end_after_landed_us"][i] < 50 for r in rows) for i in range(2)]}


def main(argv=None) -> int:
    from hetpart.runtime import weight_stream

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big", type=int, default=92_000_000)
    p.add_argument("--small", type=int, default=8192)
    p.add_argument("--chunks", default=f"0,{weight_stream.REFILL_CHUNK_BYTES}",
                   help="chunk sizes in bytes, comma-separated; 0: one copy")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--delay-us", type=float, default=300.0)
    p.add_argument("--simulate", action="store_true", help="simulated streams (no GPU; timings meaningless)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.simulate:
        from hetpart.runtime.memory import SimulatedMemory
        from hetpart.runtime.streams import SimulatedStream

        memory, compute, copier = SimulatedMemory(), SimulatedStream("compute"), SimulatedStream("copy")
    else:
        from hetpart.runtime.memory import CudaMemory
        from hetpart.runtime.streams import CudaStream

        memory, compute, copier = CudaMemory(), CudaStream(), CudaStream()
    results = []
    try:
        for c in [int(x) for x in args.chunks.split(",") if x.strip()]:
            r = probe(memory, compute, copier, args.big, args.small, c or None, args.reps, args.delay_us * 1e-6)
            results.append(r)
            print(f"chunk {c or 'none':>9} ({r['chunks']:3d} copies): big {r['big_ms']:.3f} ms, enqueue "
                  f"{r['enqueue_us']:.0f} us, small starts {r['offset_us']:.0f} us in; small copies "
                  f"{r['small_us'][0]:.1f} / {r['small_us'][1]:.1f} us, end {r['end_after_landed_us'][0]:+.1f} / "
                  f"{r['end_after_landed_us'][1]:+.1f} us after the big one landed (waited: {r['waited'][0]} / "
                  f"{r['waited'][1]} of {r['reps']})", flush=True)
    finally:
        compute.close()
        copier.close()
        memory.close()
    if args.json:
        Path(args.json).write_text(json.dumps({"big": args.big, "small": args.small, "delay_us": args.delay_us,
                                               "simulated": args.simulate, "variants": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
