"""A/B of one CPU schedule-rule switch on layers or models, in one process, with ONNX Runtime.

Each model is built twice by :func:`hetpart.kernels.build`: "before" with the given
module attributes set (``--before hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS=0``),
"after" as the checkout has them (or with ``--after`` assignments).  ``--cores N`` builds both
for a target of N cores (a 16-core schedule's kernels timed per core on a 2-core box).  The two
VMs and an ONNX Runtime session (:func:`hetpart.bench.peers.ort_session`, same threads) then run in turns of ``--calls``
calls, each turn started after :func:`hetpart.bench.settle.settle` (the other sides'
pools quiet), on a leased thread with a TVM pool of ``--threads``; ``--rounds`` rounds.
Reported per side: the least call of all rounds and the range of the rounds' least
calls, ms ("min [lo-hi]").  Inputs: seeded standard normal with every 7th element set
to 0 (negatives and zeros); the outputs of before and after are compared to each
other (max abs difference) and to ORT's (max abs difference over max abs value).

    PYTHONPATH=. python tools/cpu_rule_ab.py r50_1x1_14 r50_ds_28 --batch 8 \\
        --before hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS=0
    PYTHONPATH=. python tools/cpu_rule_ab.py zoo:resnet50 --batch 32 --calls 2 --rounds 4 --before ...

On a machine shared with other jobs, ``--threads 1 --cpu-time`` times each call by the
calling thread's CPU time (TVM's pool of one and ORT's one intra-op thread both run on
it): another job's time slices on the core are not counted, its use of the caches is.

``--block N``: both sides imported channel-blocked (``load(model, conv_block=N)``).

``--precision-before FMT`` / ``--precision-after FMT`` (``fp32`` default, ``bf16``, ``fp16``): that
side's weights stored in FMT as ``--precision cpu=FMT`` compiles them
(:func:`hetpart.importer.low_precision.lower_weights` over every kernel); each side's error
against ONNX Runtime float32 is printed (``err b`` / ``err a``).  A/B of the precision alone:

    PYTHONPATH=. python tools/cpu_rule_ab.py zoo:moe:layers=1 --precision-after bf16 --threads 2

Layers are :data:`hetpart.bench.cpu_layers.LAYERS` (``with_batch``); ``zoo:`` specs
take ``batch=`` from ``--batch``; else an ONNX file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the one switch setter: ``with switched(["module.ATTR=value", ...]):`` (the tools that import it from here too)
from hetpart.bench.switches import switched  # noqa: E402


def _model(name: str, batch: int):
    import onnx

    from hetpart import models
    from hetpart.bench.cpu_layers import LAYERS, with_batch

    if name in LAYERS:
        m = LAYERS[name]()
        return m if batch == 1 else with_batch(m, batch)
    if name.startswith("zoo:"):
        spec = name + (f":batch={batch}" if batch != 1 else "")
        z = models.parse_zoo_spec(spec)
        return models.build(z[0], small=z[1], **z[2])
    m = onnx.load(name)  # a file: rebatched as the layers are (before, --batch was ignored for a file)
    return m if batch == 1 else with_batch(m, batch)


def _feeds(model, seed: int = 0) -> dict:
    from hetpart.models import example_inputs

    feeds = example_inputs(model, seed=seed)
    for k, v in feeds.items():
        if v.dtype == np.float32:
            v.reshape(-1)[::7] = 0.0
    return feeds


def first_output(out) -> np.ndarray:
    """A Relax VM's result (one tensor or a tuple of them) as its first output's array."""
    return np.asarray(out.numpy() if hasattr(out, "numpy") else out[0].numpy())


def turns(sides, calls: int, rounds: int, clock) -> list[list[float]]:
    """Per side, the least of ``calls`` calls (ms by ``clock``) in each of ``rounds`` rounds;
    the sides take turns, each turn after :func:`hetpart.bench.settle.settle`."""
    from hetpart.bench.settle import settle

    best = [[] for _ in sides]
    for _ in range(rounds):
        for i, fn in enumerate(sides):
            settle()
            ts = []
            for _ in range(calls):
                t = clock()
                fn()
                ts.append(clock() - t)
            best[i].append(min(ts) * 1e3)
    return best


def built(model, switches, cores: int | None, block: int | None, precision: str = "fp32"):
    """``model`` imported (``conv_block=block``), its weights stored in the CPU format
    ``precision`` (``fp32``: as they are), built for the CPU with ``switches`` set."""
    from hetpart import kernels, load
    from hetpart.contracts.precision import Precision
    from hetpart.importer.low_precision import lower_weights
    from hetpart.targets import cpu_tvm_target

    with switched(switches):
        graph = load(model, conv_block=block)
        graph = lower_weights(graph, list(graph.kernels), Precision(cpu=precision).storage("cpu"))
        return kernels.build(graph.module, cpu_tvm_target(cores))


def ab(name: str, batch: int, before: list[str], threads: int, calls: int, rounds: int,
       clock=time.perf_counter, cores: int | None = None, after: tuple[str, ...] = (),
       block: int | None = None, precisions: tuple[str, str] = ("fp32", "fp32")) -> dict:
    """In: a model, the sides' switches and CPU weight formats (``precisions``: before, after).
    Out: ``best`` (per side: before, after, ORT -- each round's least call, ms), ``diff_ab``
    (max|before - after|), ``err_sides`` (each side's max|x - ORT| / max|ORT|) and ``err_ort``
    (the larger)."""
    import tvm
    from tvm import relax

    from hetpart.bench.peers import ort_session
    from hetpart.runtime.threads import call_leased

    model = _model(name, batch)
    feeds = _feeds(model)
    exe_before = built(model, before, cores, block, precisions[0])
    exe_after = built(model, after, cores, block, precisions[1])
    session = ort_session(model, threads=threads)
    result: dict = {}

    def body():
        args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
        vms = [relax.VirtualMachine(e, tvm.cpu()) for e in (exe_before, exe_after)]
        sides = [lambda vm=vm: vm["main"](*args) for vm in vms] + [lambda: session.run(None, feeds)]
        outs = [sides[0](), sides[1](), sides[2]()]
        o = [first_output(outs[0]), first_output(outs[1]), np.asarray(outs[2][0])]
        scale = float(np.abs(o[2]).max()) or 1.0
        result["diff_ab"] = float(np.abs(o[0] - o[1]).max())
        result["err_sides"] = [float(np.abs(x - o[2]).max()) / scale for x in o[:2]]
        result["err_ort"] = max(result["err_sides"])
        result["best"] = turns(sides, calls, rounds, clock)

    call_leased("cpu rule ab", body, pool=threads, role="cpu")
    return result


def _fmt(b: list[float]) -> str:
    return f"{min(b):.3f} [{min(b):.3f}-{max(b):.3f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--before", action="append", default=[], help="module.ATTR=value for the before side")
    p.add_argument("--after", action="append", default=[],
                   help="module.ATTR=value for the after side (a rule forced further than its default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cores", type=int, default=None,
                   help="num-cores of the target both sides are built for (default: this host's); e.g. 16 on a "
                        "2-core box times a 16-core schedule's kernels per core")
    p.add_argument("--cpu-time", action="store_true",
                   help="time each call by the calling thread's CPU time (needs --threads 1: both runtimes then run "
                        "on the calling thread), not wall time: another job's time slices on the core do not count")
    p.add_argument("--block", type=int, default=None,
                   help="both sides imported channel-blocked, load(model, conv_block=N) (NCHW{N}c; default NCHW)")
    for side in ("before", "after"):
        p.add_argument(f"--precision-{side}", default="fp32", choices=("fp32", "bf16", "fp16"),
                       help=f"the {side} side's CPU weight format (as --precision cpu=FMT)")
    a = p.parse_args(argv)
    if a.cpu_time and a.threads != 1:
        p.error("--cpu-time needs --threads 1")
    clock = time.thread_time if a.cpu_time else time.perf_counter
    print(f"{'model':<16}{'before ms':>26}{'after ms':>26}{'ORT ms':>26}{'b/ORT':>7}{'a/ORT':>7}{'a/b':>7}"
          f"{'|b-a|':>10}{'err b':>10}{'err a':>10}   (batch {a.batch}, {a.threads} threads, {a.calls} calls x {a.rounds} rounds"
          f"{', CPU time' if a.cpu_time else ''}{f', built for {a.cores} cores' if a.cores else ''}"
          f"{f', NCHW{a.block}c' if a.block else ''}, weights {a.precision_before} / {a.precision_after})")
    for name in a.models:
        r = ab(name, a.batch, a.before, a.threads, a.calls, a.rounds, clock, a.cores, tuple(a.after), a.block,
               (a.precision_before, a.precision_after))
        b, af, o = (min(x) for x in r["best"])
        print(f"{name:<16}{_fmt(r['best'][0]):>26}{_fmt(r['best'][1]):>26}{_fmt(r['best'][2]):>26}"
              f"{b / o:7.2f}{af / o:7.2f}{af / b:7.2f}{r['diff_ab']:10.2e}{r['err_sides'][0]:10.2e}"
              f"{r['err_sides'][1]:10.2e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
