"""All-CPU hetpart against ONNX Runtime, whole models at a batch, in one process (issue 18).

Each model is built once by :func:`hetpart.kernels.build` (as the compiler builds a CPU
partition) and run in a Relax VM beside an ONNX Runtime session of the same threads, in
turns of ``--calls`` calls, each turn after :func:`hetpart.bench.settle.settle`;
``--rounds`` rounds.  Reported per side: the least call and the range of the rounds'
least calls, ms; the ratio of the leasts; the outputs' max difference over ORT's max.
``--threads 1 --cpu-time`` times each call by the calling thread's CPU time (a shared box).

Models (``MODELS``): the corpus CNNs this box can build without torch --
``mobilenet_v2`` (tools/mobilenet_v2_onnx.py), ``densenet121`` (tools/densenet_onnx.py),
``googlenet`` / ``inception_v3`` (tools/inception_onnx.py),
``efficientnet_b0`` / ``mobilenet_v3_large`` / ``convnext_tiny`` / ``resnet50`` (the zoo's
stand-ins) -- or any spec :func:`tools.cpu_rule_ab._model` takes.

    PYTHONPATH=. python tools/cpu_model_ratio.py mobilenet_v2 densenet121 --batch 8 \\
        --threads 1 --cpu-time --calls 2 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ZOO = {"efficientnet_b0": "zoo:efficientnet", "mobilenet_v3_large": "zoo:mobilenet",
       "convnext_tiny": "zoo:convnext", "resnet50": "zoo:resnet50"}


def model(name: str, batch: int):
    """The ONNX model ``name`` at ``batch`` (a name of ``MODELS`` or a cpu_rule_ab spec)."""
    import cpu_rule_ab

    if name == "mobilenet_v2":
        import mobilenet_v2_onnx
        return mobilenet_v2_onnx.build(batch=batch)
    if name == "densenet121":
        import densenet_onnx
        from hetpart.bench.cpu_layers import with_batch
        return with_batch(densenet_onnx.build(), batch)
    if name in ("googlenet", "inception_v3"):
        import inception_onnx
        from hetpart.bench.cpu_layers import with_batch
        return with_batch(getattr(inception_onnx, name)(), batch)
    return cpu_rule_ab._model(ZOO.get(name, name), batch)


MODELS = ("mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large", "densenet121", "convnext_tiny", "resnet50")


def measure(name: str, batch: int, threads: int, calls: int, rounds: int, clock=time.perf_counter,
            assignments: tuple[str, ...] = ()) -> dict:
    """``{"hetpart": [least per round], "ort": [...], "err_ort": float}`` for one model."""
    import tvm
    from tvm import relax

    import cpu_rule_ab
    from hetpart import kernels, load
    from hetpart.bench.peers import ort_session
    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target

    m = model(name, batch)
    feeds = cpu_rule_ab._feeds(m)
    with cpu_rule_ab.switched(assignments):
        exe = kernels.build(load(m).module, cpu_tvm_target())
    session = ort_session(m, threads=threads)
    result: dict = {}

    def body():
        args = [tvm.runtime.tensor(feeds[i.name]) for i in m.graph.input]
        vm = relax.VirtualMachine(exe, tvm.cpu())
        sides = [lambda: vm["main"](*args), lambda: session.run(None, feeds)]
        out = sides[0]()
        h = cpu_rule_ab.first_output(out)
        o = np.asarray(sides[1]()[0])
        result["err_ort"] = float(np.abs(h - o).max()) / (float(np.abs(o).max()) or 1.0)
        result["hetpart"], result["ort"] = cpu_rule_ab.turns(sides, calls, rounds, clock)

    call_leased("cpu model ratio", body, pool=threads, role="cpu")
    return result


def _fmt(b: list[float]) -> str:
    return f"{min(b):.1f} [{min(b):.1f}-{max(b):.1f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", default=list(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu-time", action="store_true")
    p.add_argument("--set", action="append", default=[], help="module.ATTR=value for the build")
    a = p.parse_args(argv)
    if a.cpu_time and a.threads != 1:
        p.error("--cpu-time needs --threads 1")
    clock = time.thread_time if a.cpu_time else time.perf_counter
    print(f"| model | batch | hetpart ms | ORT ms | hetpart/ORT | err/ORT |   ({a.threads} threads, {a.calls} calls x "
          f"{a.rounds} rounds{', CPU time' if a.cpu_time else ', wall'}{', ' + ' '.join(a.set) if a.set else ''})")
    for name in a.models:
        t0 = time.time()
        r = measure(name, a.batch, a.threads, a.calls, a.rounds, clock, tuple(a.set))
        print(f"| {name} | {a.batch} | {_fmt(r['hetpart'])} | {_fmt(r['ort'])} | "
              f"{min(r['hetpart']) / min(r['ort']):.2f} | {r['err_ort']:.1e} |   ({time.time() - t0:.0f} s, "
              f"{time.strftime('%H:%M', time.gmtime())})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
