"""Does a small host-to-device copy wait for a big one on another stream (issue 19)?

bench/results/capped-decode-gap-s47.md: in llama_decode's streaming plan a CUDA
partition's 8 KB input copy (compute stream) ended 4-6 us after the in-flight 46-92 MB
weight refill (copy stream) landed, every time.  Here, per variant and ``--reps`` times:
a ``--big`` byte pinned copy handed to ``weight_stream.CopyEngine.submit`` for a copy
stream, then ``--delay-us`` later (host clock) two ``--small`` byte pinned copies on the
compute stream, each between two CUDA events.  Variants (one row each):

* ``--chunks``: the big copy as one copy (0) or chunks of at most CHUNK bytes, all
  enqueued at once (``CHUNKED_REFILLS``; step 120: the small copies still wait for all);
* ``--throttle K:CHUNK``: chunks submitted by the engine's copier thread with at most K
  in flight (``THROTTLED_REFILLS``; its copy stream with blocking events, as a session's);
* ``--kernel``: one big copy, the small copies by ``runtime.small_copy``'s kernel reading
  the mapped pinned buffer (``SMALL_H2D_BY_KERNEL``).

Medians per variant:

* ``big_ms``: the big copy's start to landed (chunking's / throttling's device cost);
* ``enqueue_us``: the caller's time in ``submit`` (one call per chunk when enqueued at
  once; throttled: handing it to the copier thread);
* ``submitted_us``, ``copier_cpu_us`` (throttled): when the copier thread had submitted the
  last chunk, and its CPU time for the refill (its per-chunk wakes: the host cost);
* ``offset_us``: the big copy's start to the first small copy's start event;
* ``small_us``: each small copy's duration;
* ``end_after_landed_us``: each small copy's end less the big copy's landing (>= 0 and
  small: it waited for the whole big copy; well below 0: it did not);
* ``small_bytes_identical``: the small destinations hold the sources' bytes (read back).

    python tools/copy_queue_probe.py --chunks 0,8388608 --throttle 1:8388608,2:8388608 --kernel \
        --json out.json [--simulate]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _spin(seconds: float) -> None:
    """Wait ``seconds`` on the host clock, giving the GIL away at every turn: a throttled
    engine's copier thread waking meanwhile would otherwise wait for a pure-Python spin
    (up to the interpreter's 5 ms switch interval) and stretch the refill."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0)


def probe(memory, compute, copier, big: int, small: int, chunk: int | None, reps: int, delay_s: float,
          throttle: int | None = None, kernel: bool = False) -> dict:
    """One variant's medians (see the module docstring); ``chunk`` None: one copy;
    ``throttle``: at most that many chunks in flight, submitted by the engine's copier
    thread; ``kernel``: the small copies by ``runtime.small_copy``'s kernel (mapped reads)."""
    from hetpart.compiler.artifact import TensorSpec
    from hetpart.runtime import small_copy
    from hetpart.runtime.weight_stream import CopyEngine

    spec = lambda name, n: TensorSpec(name, (n,), "uint8")  # noqa: E731
    src, dst = memory.pinned(spec("big src", big)), memory.device(spec("big dst", big))
    smalls = [(memory.pinned(spec(f"small src {i}", small)), memory.device(spec(f"small dst {i}", small)))
              for i in range(2)]
    src.array[:] = 7
    for i, (s, _) in enumerate(smalls):
        s.array[:] = np.random.default_rng(i).integers(0, 256, small, np.uint8)
    kernels = []
    if kernel:
        device = "cpu" if memory.simulated else "cuda"
        kernels = [small_copy.prepare(d, memory.mapped(s), device) for s, d in smalls]
        for k in kernels:  # the module's load and first launch, outside the timing
            compute.launch(k)
    engine = CopyEngine(compute, copier, chunk_bytes=chunk, throttle=throttle)
    rows = []
    try:
        for _ in range(reps + 1):  # the first: warm-up, dropped
            got, box = threading.Event(), []
            cpu0 = engine.copier_cpu_s
            t0 = time.perf_counter()
            engine.submit(dst, src, None, lambda m, e: (box.append((m, e, time.perf_counter())), got.set()))
            enqueue = time.perf_counter() - t0
            _spin(max(0.0, delay_s - enqueue))
            marks = []
            for i, (s, d) in enumerate(smalls):
                before = compute.record()
                if kernel:
                    compute.launch(kernels[i])
                else:
                    compute.copy(d, s, "h2d")
                marks.append((before, compute.record()))
            got.wait()
            (start, landed), error, submitted = box[0]
            if error is not None:
                raise error
            for _, after in marks:
                after.synchronize()
            landed.synchronize()
            rows.append({"big_ms": landed.seconds_since(start) * 1e3, "enqueue_us": enqueue * 1e6,
                         "submitted_us": (submitted - t0) * 1e6,
                         "copier_cpu_us": (engine.copier_cpu_s - cpu0) * 1e6,
                         "offset_us": marks[0][0].seconds_since(start) * 1e6,
                         "small_us": [a.seconds_since(b) * 1e6 for b, a in marks],
                         "end_after_landed_us": [a.seconds_since(landed) * 1e6 for _, a in marks]})
            for m in [start, landed] + [m for pair in marks for m in pair]:
                m.release()
        same = [bool(np.array_equal(_back(memory, compute, d), s.array)) for s, d in smalls]
    finally:
        engine.close() if throttle is not None else None  # the copier thread (the stream: the caller's)
        for k in kernels:
            k.release()
    rows = rows[1:]
    med = lambda key, i=None: statistics.median(r[key] if i is None else r[key][i] for r in rows)  # noqa: E731
    chunks = 1 if chunk is None else -(-big // chunk)
    return {"label": label_of(chunk, throttle, kernel), "chunk": chunk, "throttle": throttle, "kernel": kernel,
            "chunks": chunks, "reps": reps, "big_ms": med("big_ms"), "enqueue_us": med("enqueue_us"),
            "submitted_us": med("submitted_us"), "copier_cpu_us": med("copier_cpu_us"),
            "offset_us": med("offset_us"),
            "small_us": [med("small_us", i) for i in range(2)],
            "end_after_landed_us": [med("end_after_landed_us", i) for i in range(2)],
            "waited": [sum(0 <= r["end_after_landed_us"][i] < 50 for r in rows) for i in range(2)],
            "small_bytes_identical": same}


def _back(memory, stream, device_buf) -> np.ndarray:
    """``device_buf``'s bytes, copied back to the host (after everything on ``stream``)."""
    from hetpart.compiler.artifact import TensorSpec

    host = memory.pinned(TensorSpec("back", (device_buf.nbytes,), "uint8"))
    stream.copy(host, device_buf, "d2h")
    m = stream.record()
    m.synchronize()
    m.release()
    return host.array.copy()


def label_of(chunk: int | None, throttle: int | None, kernel: bool) -> str:
    size = "none" if chunk is None else (f"{chunk >> 20} MiB" if chunk % (1 << 20) == 0 else str(chunk))
    if kernel:
        return f"kernel copy, chunk {size}"
    if throttle is not None:
        return f"throttle K={throttle}, chunk {size}"
    return f"chunk {size}"


def variants(chunks: str, throttle: str, kernel: bool) -> list[tuple[int | None, int | None, bool]]:
    """``(chunk, throttle, kernel)`` per row: ``--chunks`` (0: one copy), then ``--throttle``
    ``K:CHUNK`` pairs, then with ``--kernel`` the small copies by kernel behind one copy."""
    out = [(int(c) or None, None, False) for c in chunks.split(",") if c.strip()]
    for item in [t for t in throttle.split(",") if t.strip()]:
        k, c = item.split(":")
        out.append((int(c), int(k), False))
    if kernel:
        out.append((None, None, True))
    return out


def main(argv=None) -> int:
    from hetpart.runtime import weight_stream

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big", type=int, default=92_000_000)
    p.add_argument("--small", type=int, default=8192)
    p.add_argument("--chunks", default=f"0,{weight_stream.REFILL_CHUNK_BYTES}",
                   help="chunk sizes in bytes, comma-separated, all enqueued at once; 0: one copy")
    p.add_argument("--throttle", default="",
                   help="throttled refills, K:CHUNK comma-separated (at most K chunks of CHUNK bytes in flight)")
    p.add_argument("--kernel", action="store_true", help="also: the small copies by the copy kernel (small_copy)")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--delay-us", type=float, default=300.0)
    p.add_argument("--simulate", action="store_true", help="simulated streams (no GPU; timings meaningless)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.simulate:
        from hetpart.runtime.memory import SimulatedMemory
        from hetpart.runtime.streams import SimulatedStream

        memory, compute = SimulatedMemory(), SimulatedStream("compute")
        make_copier = lambda blocking: SimulatedStream("copy")  # noqa: E731
    else:
        from hetpart.runtime.memory import CudaMemory
        from hetpart.runtime.streams import CudaStream

        memory, compute = CudaMemory(), CudaStream()
        # a throttled engine's copier waits on its chunks asleep, as a session's does
        make_copier = lambda blocking: CudaStream(spin_wait=not blocking)  # noqa: E731
    results = []
    try:
        for chunk, throttle, kernel in variants(args.chunks, args.throttle, args.kernel):
            copier = make_copier(throttle is not None)
            try:
                r = probe(memory, compute, copier, args.big, args.small, chunk, args.reps, args.delay_us * 1e-6,
                          throttle, kernel)
            finally:
                copier.close()
            results.append(r)
            extra = "" if throttle is None else (f", copier submitted all {r['submitted_us']:.0f} us in, "
                                                f"its CPU {r['copier_cpu_us']:.0f} us")
            print(f"{r['label']:>26} ({r['chunks']:3d} copies): big {r['big_ms']:.3f} ms, enqueue "
                  f"{r['enqueue_us']:.0f} us, small starts {r['offset_us']:.0f} us in; small copies "
                  f"{r['small_us'][0]:.1f} / {r['small_us'][1]:.1f} us, end {r['end_after_landed_us'][0]:+.1f} / "
                  f"{r['end_after_landed_us'][1]:+.1f} us after the big one landed (waited: {r['waited'][0]} / "
                  f"{r['waited'][1]} of {r['reps']}){extra}; small bytes identical: "
                  f"{all(r['small_bytes_identical'])}", flush=True)
    finally:
        compute.close()
        memory.close()
    if args.json:
        Path(args.json).write_text(json.dumps({"big": args.big, "small": args.small, "delay_us": args.delay_us,
                                               "simulated": args.simulate, "variants": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
