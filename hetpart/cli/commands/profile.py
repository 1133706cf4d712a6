from __future__ import annotations

import time

from ..options import add_kernel_options, add_precision_option, kernel_options, parse_precision, parse_shapes
from ..registry import register


@register
class ProfileCommand:
    """Measure this machine for the cost model: kernels of MODEL, overheads, transfers.

    Compiles each distinct kernel of MODEL alone for every device (in parallel), times
    it with random inputs, and stores the timings in this machine's profile (one JSON
    file per machine; default in the user cache, or --profile PATH / $HETPART_PROFILE).
    Kernels already in the profile -- from any model -- are not measured again, and
    Ctrl-C keeps everything measured so far: run it again to resume.

    --transfer measures host<->GPU copies (pinned and pageable, 4 KiB .. 256 MiB) and
    fits latency + bytes/bandwidth, and what hetpart's runtime adds per partition of a
    run (tiny models through a real Session); it needs a CUDA GPU.  On a machine without a GPU
    only the CPU is measured; plans then use the recorded profile shipped with hetpart
    (both devices from one machine), unless --profile names this one.

    examples:
      partition profile zoo:resnet50
      partition profile model.onnx --shape input=1,3,224,224 --profile prof.json
      partition profile --transfer
      partition profile --weight-read
      partition profile zoo:bert --precision cuda=bf16

    --precision measures a device's kernels as built in its format (bf16/fp16: with
    their weights stored in it), what `partition MODEL --precision` then prices.

    --weight-read measures the CPU's cold weight-read bandwidth (no GPU needed): every
    kernel is timed with its weights cached, and plans for models whose weights do not
    fit in the CPU's last-level cache (recorded in the profile) price each CPU kernel no
    faster than its weight bytes at that bandwidth.  Profiling such a model measures it
    too where the profile lacks it (~12 s, once); a model that fits does not need it.
    """

    name = "profile"

    def add_arguments(self, parser):
        m = parser.add_argument_group("model")
        m.add_argument("model", nargs="*", metavar="MODEL",
                       help="an .onnx file or zoo:NAME[:small]; several may be given (optional with --transfer)")
        m.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,...",
                       help="fix an input's shape, e.g. --shape input=1,3,224,224 (repeatable)")
        g = parser.add_argument_group("profiling")
        g.add_argument("--profile", metavar="PATH", default=None,
                       help="profile file to measure into (default: $HETPART_PROFILE, else this machine's "
                            "profile in the user cache)")
        g.add_argument("--device", action="append", default=[], choices=["cpu", "cuda"],
                       help="measure only this device (repeatable; default: cpu, and cuda if a GPU is present)")
        g.add_argument("--transfer", action="store_true", help="measure (again) the host<->GPU transfer model")
        g.add_argument("--weight-read", action="store_true",
                       help="measure (again) how fast the CPU reads weights no cache holds (a GEMV over 1 GiB); "
                            "--transfer, and profiling a MODEL whose weights exceed the CPU's last-level cache, "
                            "measure it too where the profile lacks it")
        g.add_argument("--quick", action="store_true", help="fewer repeats: faster, noisier")
        g.add_argument("--retry-failed", action="store_true", help="measure again kernels recorded as failed")
        g.add_argument("--jobs", type=int, default=None, help="parallel build processes (default: all cores)")
        add_precision_option(g)
        add_kernel_options(parser)

    def run(self, args) -> int:
        import os

        from ... import importer
        from ...costmodel.build_pool import BuildPool
        from ...costmodel.kernel_bench import MeasureSettings
        from ...costmodel.locate import ENV_PROFILE, default_profile_path
        from ...errors import HetpartError
        from ...targets import cuda_available, num_cores

        if not args.model and not args.transfer and not args.weight_read:
            raise HetpartError("give a MODEL to profile, --transfer to measure the transfer model, or "
                               "--weight-read to measure the CPU's cold weight reads")
        args.precision = parse_precision(args.precision)
        path = args.profile or os.environ.get(ENV_PROFILE) or default_profile_path()
        gpu = cuda_available()
        if args.transfer and not gpu:
            from ...errors import NoGPUError

            raise NoGPUError("--transfer measures copies between the host and a CUDA GPU, and this machine has "
                             "none; run `partition profile --transfer` on the machine with the GPU")
        devices = tuple(args.device) or (("cpu", "cuda") if gpu else ("cpu",))
        if not gpu and "cuda" not in args.device:
            print("note: no CUDA GPU here: measuring the CPU only. Plans on this machine use the recorded "
                  "profile (CPU and GPU of one machine) unless --profile names this file.")
        settings = MeasureSettings.quick() if args.quick else MeasureSettings()
        shapes = parse_shapes(args.shape)
        with BuildPool(args.jobs or num_cores()) as pool:  # workers shared by all models
            for model in args.model:
                self._profile_one(importer.load(model, shapes), devices, path, settings, pool, args)
            if args.transfer:
                self._overheads(path, settings, pool)  # session overheads are stored beyond them
            if args.transfer or args.weight_read:
                self._weight_read(path, settings, pool, again=args.weight_read)
        if args.transfer:
            self._transfers(path, args.quick)
            self._session(path, args.quick)
        print(f"profile: {path}")
        return 0

    def _profile_one(self, graph, devices, path, settings, pool, args) -> None:
        """Measure ``graph`` on ``devices``; a device of a bf16/fp16 format measures the
        graph with its weights in that format (other kernels, listed apart in the profile)."""
        from ...costmodel import profile
        from ...importer.low_precision import LOW_DTYPES
        from ...partitioner.precision_costs import priced_graph

        seconds = 0.0
        plain = [d for d in devices if args.precision.storage(d) not in LOW_DTYPES]
        runs = [(graph, tuple(plain), None)] if plain else []
        for d in devices:
            if d not in plain:
                low = priced_graph(graph, d, args.precision.storage(d))  # what the planner prices
                runs.append((low, (d,), f"{graph.name}:{d}={args.precision.of(d)}"))
        for g, devs, label in runs:
            rep = profile(g, devs, path, settings=settings, pool=pool, retry_failed=args.retry_failed,
                          options=kernel_options(args), label=label).last_report
            seconds += rep.seconds
            for d in devs:
                print(f"{label or graph.name} on {d}: measured {rep.measured[d]} kernels ({rep.failed[d]} failed "
                      f"to build or run), reused {rep.reused[d]}")
            if rep.weight_read:
                self._print_weight_read(path, "its weights exceed the CPU's last-level cache")
        print(f"{graph.name}: {seconds:.1f} s")

    def _overheads(self, path, settings, pool) -> None:
        """Measure the CPU's and GPU's per-call overheads where the profile lacks them
        (a fresh machine profiled with --transfer alone)."""
        from ...costmodel.profiler import ensure_overheads, open_profile
        from ...targets import resolve

        prof = open_profile(path)
        for device in ("cpu", "cuda"):
            if device not in prof.overheads:
                ensure_overheads(prof, resolve(device), settings, pool)

    def _weight_read(self, path, settings, pool, again: bool) -> None:
        """The CPU's cold weight-read bandwidth into the profile (``again``: even where it has
        one), after the CPU's overheads it is stored beside."""
        from dataclasses import replace

        from ...costmodel.profiler import ensure_overheads, ensure_weight_read, open_profile
        from ...targets import resolve

        prof = open_profile(path)
        ensure_overheads(prof, resolve("cpu"), settings, pool)  # measured where missing; the cache recorded
        if again:
            prof.overheads["cpu"] = replace(prof.overheads["cpu"], weight_read_Bps=None)
        t0 = time.perf_counter()
        if ensure_weight_read(prof):
            prof.save()
            self._print_weight_read(path, f"{time.perf_counter() - t0:.1f} s")

    @staticmethod
    def _print_weight_read(path, why: str) -> None:
        from ...costmodel.profiler import open_profile
        from ...importer.summary import human_bytes

        prof = open_profile(path)
        llc = f", last-level cache {human_bytes(prof.cpu_llc_bytes)}" if prof.cpu_llc_bytes else ""
        print(f"cpu cold weight reads {prof.overheads['cpu'].weight_read_Bps / 1e9:6.2f} GB/s ({why}{llc})")

    def _transfers(self, path, quick: bool) -> None:
        from ...costmodel import measure_transfers
        from ...costmodel.profiler import open_profile

        prof = open_profile(path)
        t0 = time.perf_counter()
        prof.transfers = measure_transfers(repeats=10 if quick else 20)
        prof.save()
        for key, fit in sorted(prof.transfers.fits.items()):
            print(f"transfer {key:<14} latency {fit.latency_s * 1e6:7.1f} us  "
                  f"bandwidth {fit.bandwidth_Bps / 1e9:6.2f} GB/s")
        print(f"transfers: {time.perf_counter() - t0:.1f} s")

    def _session(self, path, quick: bool) -> None:
        from ...costmodel.profiler import open_profile
        from ...runtime.overhead import session_overheads

        prof = open_profile(path)
        t0 = time.perf_counter()
        prof.set_session_overheads(session_overheads(repeats=100 if quick else 300))
        prof.save()
        for device, oh in sorted(prof.overheads.items()):
            print(f"session overhead per {device} partition: {oh.session_s * 1e6:7.1f} us")
        print(f"session overheads: {time.perf_counter() - t0:.1f} s")
