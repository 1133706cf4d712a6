"""A/B of the grouped-query attention rewrite (``importer.grouped_query_attention``), CPU or GPU.

In: a model (zoo spec or ONNX file with static shapes), a device, a thread count, rounds.
Out (stdout): the whole step's time with the rewrite off, on without its ``K @ Q^T`` form, and on -- each built for one
device by ``kernels.build`` in this one process, run by Relax VMs (``cpu``: on one
leased pool of ``--threads`` threads, each round the least of ``--runs`` runs;
``cuda``: inputs resident on the GPU, each round ``--runs`` runs between two syncs,
their mean), rounds interleaved (each round in the reverse order of the last) -- as min / median / max over
rounds; the outputs of every build against ONNX Runtime; then (``cpu`` only) each
variant's per-kernel medians (``bench.kernel_table``'s instrumented VM run), the largest
first.

Usage: ``PYTHONPATH=. python tools/gqa_ab.py zoo:llama_decode:layers=1,intermediate=512,vocab=1000
--threads 2 --rounds 8`` (``--device cuda`` on the GPU machine)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

import numpy as np


VARIANTS = {"off": None, "on Q@K^T": False, "on": True}
"""Variant -> the rewrite's ``transposed_scores`` (None: no rewrite)."""


@contextlib.contextmanager
def rewrite(variant: str):
    """The import stage with the rewrite as it is (``on``), without its ``K @ Q^T`` form
    (``on Q@K^T``) or replaced by the identity (``off``)."""
    from hetpart.importer.grouped_query_attention import group_query_attention

    flip = VARIANTS[variant]
    with mock.patch("hetpart.importer.onnx_source.group_query_attention",
                    lambda m, inplace=False: m if flip is None else
                    group_query_attention(m, inplace=inplace, transposed_scores=flip)):
        yield


def _build(model, variant: str, device: str):
    from hetpart import kernels, load
    from hetpart.kernels.options import resolve
    from hetpart.targets import cpu_tvm_target, cuda_tvm_target

    with rewrite(variant):
        graph = load(model)
    if device == "cuda":
        return graph, kernels.build(graph.module, cuda_tvm_target(), options=resolve())
    return graph, kernels.build(graph.module, cpu_tvm_target())


def _cuda_step_times(executables: dict, args: list, rounds: int, runs: int):
    """Per variant, the mean step time (ms) of ``runs`` runs between two syncs, per round."""
    import tvm
    from tvm import relax

    dev = tvm.cuda(0)
    vms = {name: relax.VirtualMachine(exe, dev) for name, exe in executables.items()}
    outs = {name: vm["main"](*args) for name, vm in vms.items()}  # warm-up (CUDA graph capture)
    times: dict[str, list[float]] = {name: [] for name in vms}
    order = list(vms)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:  # off, a, b, b, a, off, ...
            dev.sync()
            t0 = time.perf_counter()
            for _ in range(runs):
                vms[name]["main"](*args)
            dev.sync()
            times[name].append((time.perf_counter() - t0) / runs * 1e3)
    return times, outs


def _step_times(executables: dict, args: list, threads: int, rounds: int, runs: int):
    """Per variant, the least of ``runs`` step times (ms) in each of ``rounds`` interleaved rounds."""
    import tvm
    from tvm import relax

    from hetpart.runtime.threads import lease

    times: dict[str, list[float]] = {name: [] for name in executables}
    outs: dict[str, list] = {}
    err: dict = {}

    def body():
        try:
            vms = {name: relax.VirtualMachine(exe, tvm.cpu()) for name, exe in executables.items()}
            for name, vm in vms.items():
                outs[name] = vm["main"](*args)  # warm-up
            order = list(vms)
            for r in range(rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    best = float("inf")
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        vms[name]["main"](*args)
                        best = min(best, time.perf_counter() - t0)
                    times[name].append(best * 1e3)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            err["e"] = exc

    lease("gqa a/b", body, pool=threads, role="cpu").join()
    if "e" in err:
        raise err["e"]
    return times, outs


def _flatten(out) -> list[np.ndarray]:
    import tvm

    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [x for o in out for x in _flatten(o)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kernels", type=int, default=12, help="rows of each per-kernel table (0: none)")
    args = p.parse_args(argv)
    import onnx
    import tvm

    from hetpart import models
    from hetpart.bench import kernel_table
    from hetpart.bench.peers import ort_session

    zoo = models.parse_zoo_spec(args.model)
    model = models.build(zoo[0], small=zoo[1], **zoo[2]) if zoo else onnx.load(args.model)
    feeds = models.example_inputs(model, seed=0)
    built = {name: _build(model, name, args.device) for name in VARIANTS}
    for name, (graph, _) in built.items():
        print(f"rewrite {name}: {len(graph.kernels)} kernels")
    executables = {n: exe for n, (_, exe) in built.items()}
    if args.device == "cuda":
        tensors = [tvm.runtime.tensor(feeds[i.name], device=tvm.cuda(0)) for i in model.graph.input]
        times, outs = _cuda_step_times(executables, tensors, args.rounds, args.runs)
        print(f"whole step on the GPU, inputs resident, {args.rounds} interleaved rounds, mean of {args.runs} "
              "runs each (ms):")
    else:
        tensors = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
        times, outs = _step_times(executables, tensors, args.threads, args.rounds, args.runs)
        print(f"whole step, {args.threads} thread(s), {args.rounds} interleaved rounds, least of {args.runs} "
              "runs each (ms):")
    for name, ts in times.items():
        print(f"  rewrite {name:<9} min {min(ts):8.3f}  median {float(np.median(ts)):8.3f}  max {max(ts):8.3f}")
    for other in [v for v in VARIANTS if v != "on"]:
        ratios = [a / b for a, b in zip(times[other], times["on"])]  # one round's runs are neighbours
        print(f"  {other} / on, per round: min {min(ratios):.2f}  median {float(np.median(ratios)):.2f}  "
              f"max {max(ratios):.2f}")
    want = ort_session(model).run(None, feeds)
    for name, out in outs.items():
        err = max(float(np.max(np.abs(g - w))) for g, w in zip(_flatten(out), want))
        print(f"  rewrite {name}: max |hetpart - ORT| over outputs {err:.3g}")
    for name in VARIANTS:
        if not args.kernels or args.device != "cpu":
            break
        with rewrite(name):
            rows, builtin_us, _ = kernel_table._hetpart_calls(model, feeds, args.threads, 20)
        print(f"per-kernel medians, rewrite {name} (us; sum {sum(t for _, t in rows):.0f}, "
              f"VM builtins {builtin_us:.0f}):")
        for kname, us in rows[:args.kernels]:
            print(f"  {kname[:72]:<74}{us:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
