"""Attention layers before/after branch cpu-vit-attn2's CPU kernel changes, and ONNX Runtime,
in one process (issue 18).

The changes, each a module constant (the "before" build sets them off):

* ``register_tile.SPLIT_RAGGED_COPY_BACK``: a padded tile's copy-back vectorised on its
  whole panels (ViT's scores over 197 tokens, whisper's over 1500 on AVX-512);
* ``cpu_reduction.VECTOR_ROW_TAIL``: softmax's ``exp`` over a ragged row's tail as one vector;
* ``cpu_reduction.RECIPROCAL_DIVISOR``: softmax scaled by the reciprocal of the row's sum;
* ``cpu_reduction.ROW_MAX_EXP``: softmax's exp over a ragged row without overflow handling;
* ``cpu_matmul.NARROW_LANES``: 4-lane vector dims padded to full vectors on wider targets
  (whisper's scores on AVX2; AVX-512 decisions unchanged).

For each layer of ``bench/cpu_layers.py`` named: both builds made here, ``same`` when their
scheduled modules are identical text (then any difference is noise); the Relax VM of each
and ``peers.ort_session`` on ``--threads`` threads (hetpart's pool leased as the benchmark
does), in turns of ``--calls`` calls each started after ``settle()``, the order rotated per
round; per side the least call of each round, printed as min [min-max over rounds], and
the largest difference from ORT's output.

    python3 tools/attn_ab.py vit_attn vit_softmax whisper_attn --threads 16 --rounds 10
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextlib.contextmanager
def before():
    """The module constants as they were before the branch."""
    from hetpart.kernels import register_tile as rt
    from hetpart.kernels.rules import cpu_matmul as cm
    from hetpart.kernels.rules import cpu_reduction as cr

    saved = rt.SPLIT_RAGGED_COPY_BACK, cr.VECTOR_ROW_TAIL, cr.RECIPROCAL_DIVISOR, cr.ROW_MAX_EXP, cm.NARROW_LANES
    rt.SPLIT_RAGGED_COPY_BACK, cr.VECTOR_ROW_TAIL, cr.RECIPROCAL_DIVISOR, cr.ROW_MAX_EXP, cm.NARROW_LANES = (
        False, False, False, False, 0)
    try:
        yield
    finally:
        (rt.SPLIT_RAGGED_COPY_BACK, cr.VECTOR_ROW_TAIL, cr.RECIPROCAL_DIVISOR, cr.ROW_MAX_EXP,
         cm.NARROW_LANES) = saved


def _scripts(mod) -> dict[str, str]:
    from tvm import tirx

    return {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def layer(name: str, threads: int, rounds: int, calls: int) -> str:
    """One line: ``name``'s before / after / ORT times and output differences."""
    import numpy as np
    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.bench.cpu_layers import LAYERS
    from hetpart.bench.peers import ort_session
    from hetpart.bench.settle import settle
    from hetpart.kernels import weight_prepack
    from hetpart.models import example_inputs
    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target

    model = LAYERS[name]()
    feeds = example_inputs(model, seed=0)
    target = cpu_tvm_target()
    mod = load(model).module
    with before():
        old = kernels.build(mod, target)
        old_text = _scripts(kernels.schedule(weight_prepack.mark_weights(mod), target))
    new = kernels.build(mod, target)
    same = old_text == _scripts(kernels.schedule(weight_prepack.mark_weights(mod), target))
    session = ort_session(model, threads=threads)

    def body():
        vms = {"before": relax.VirtualMachine(old, tvm.cpu()), "after": relax.VirtualMachine(new, tvm.cpu())}
        args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
        want = session.run(None, feeds)[0]
        diff = {n: float(np.max(np.abs(vm["main"](*args).numpy() - want))) for n, vm in vms.items()}
        sides = {n: (lambda vm=vm: vm["main"](*args)) for n, vm in vms.items()}
        sides["ORT"] = lambda: session.run(None, feeds)
        names = list(sides)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                settle()
                best = float("inf")
                for _ in range(calls):
                    t0 = time.perf_counter()
                    sides[n]()
                    best = min(best, time.perf_counter() - t0)
                times[n].append(best * 1e3)
        return (f"{name}{' (same schedule)' if same else ''}, {threads} threads, {rounds} rounds: "
                   + "  ".join(f"{n} {min(v):.3f} [{min(v):.3f}-{max(v):.3f}]" for n, v in times.items())
                   + "   max|diff| vs ORT " + " ".join(f"{n} {d:.2e}" for n, d in diff.items()))

    return call_leased("attn ab", body, pool=threads, role="cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layers", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=10)
    a = ap.parse_args(argv)
    for name in a.layers:
        print(layer(name, a.threads, a.rounds, a.calls), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
