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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mlp:small", "resnet18:small", "bert:small"])
    ap.add_argument("--buckets", default="1,2,4,8")
    ap.add_argument("--no-simulate", action="store_true")
    args = ap.parse_args()
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
