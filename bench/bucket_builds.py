"""Build time of shape buckets: what reusing identical partition code across buckets saves.

Run from the repository root (CPU only is fine; ``--simulate`` builds "cuda" partitions
for the CPU)::

    PYTHONPATH=. python3 bench/bucket_builds.py --models mlp:small resnet18:small bert:small
    PYTHONPATH=. python3 bench/bucket_builds.py --buckets 1,2,4,8 --no-simulate   # GPU machine

Each zoo model is rebuilt with a symbolic batch (``batch`` at axis 0 of its inputs
and outputs); models whose graph bakes the batch into a Reshape fail to import and
are reported as such.  Per model it prints: the kernels of each bucket and how many
kernel signatures (same computation and shapes) two or more buckets share, then the
wall time of :func:`hetpart.compile_buckets` with the library cache (partitions whose
module is the same are built once) and without, and the libraries built and reused.

``--symbolic-build`` measures the alternative instead: one CPU build with the batch
left symbolic (TVM Relax keeps the ``dim_param`` as a shape variable; hetpart's
schedule rules then find no static shape to tile) against a static build per batch,
build time and run time at batch 1, 8 and 32 (single-input models).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import hetpart
from hetpart import models
from hetpart.buckets import plan_buckets


def symbolic_batch(spec: str):
    name, _, small = spec.partition(":")
    model = models.build(name, small=small == "small")
    for v in (*model.graph.input, *model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and v.name not in {i.name for i in model.graph.initializer}:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return model


def symbolic_build(spec: str) -> None:
    """Print build and run times of a symbolic-batch CPU build against static ones."""
    import warnings

    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from hetpart import kernels, targets
    from hetpart.importer.fusion import fuse

    model = symbolic_batch(spec)
    target, dev = targets.cpu_tvm_target(), tvm.cpu()
    inp = model.graph.input[0]
    feat = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]

    def build(shape_dict):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = from_onnx(model, shape_dict=shape_dict, sanitize_input_names=False)
        return kernels.build(fuse(mod), target), time.perf_counter() - start

    def run_ms(executable, n, reps=20):
        vm = relax.VirtualMachine(executable, dev)
        x = tvm.runtime.tensor(np.random.rand(n, *feat).astype("float32"), dev)
        vm["main"](x)
        start = time.perf_counter()
        for _ in range(reps):
            vm["main"](x)
        return (time.perf_counter() - start) / reps * 1e3

    dynamic, seconds = build(None)
    print(f"{spec}: symbolic-batch build {seconds:.1f} s")
    for n in (1, 8, 32):
        static, seconds = build({inp.name: [n, *feat]})
        print(f"  batch {n}: static build {seconds:.1f} s; run: static {run_ms(static, n):.3f} ms, "
              f"symbolic {run_ms(dynamic, n):.3f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mlp:small", "resnet18:small", "bert:small"])
    ap.add_argument("--buckets", default="1,2,4,8")
    ap.add_argument("--no-simulate", action="store_true")
    ap.add_argument("--symbolic-build", action="store_true",
                    help="compare one symbolic-batch CPU build with static builds instead")
    args = ap.parse_args()
    if args.symbolic_build:
        for spec in args.models:
            symbolic_build(spec)
        return
    sizes = [int(s) for s in args.buckets.split(",")]
    for spec in args.models:
        model = symbolic_batch(spec)
        try:
            planned = list(plan_buckets(model, {"batch": sizes}))
        except hetpart.HetpartError as exc:
            print(f"{spec}: cannot be bucketed ({type(exc).__name__}: {str(exc)[:160]})")
            continue
        sigs = [Counter(k.signature for k in p.graph.nodes) for p in planned]
        shared = set.union(*(set(a) & set(b) for i, a in enumerate(sigs) for b in sigs[i + 1:])) if len(sigs) > 1 else set()
        print(f"{spec}: kernels per bucket {[sum(s.values()) for s in sigs]}, distinct signatures per bucket "
              f"{[len(s) for s in sigs]}, signatures shared by two or more buckets: {len(shared)}")
        for reuse in (True, False):
            start = time.perf_counter()
            built = hetpart.compile_buckets(model, {"batch": sizes}, simulate=not args.no_simulate,
                                            reuse_libraries=reuse)
            print(f"  compile_buckets reuse_libraries={reuse}: {time.perf_counter() - start:.1f} s "
                  f"{built.build_stats or ''}", flush=True)


if __name__ == "__main__":
    main()
