"""Do two builds of one model (batch 1 and batch 2, all-CUDA) answer the same row alike?
(The serving bench's "wrong" answers once batched requests ran on another bucket.)
Prints, for a row run at batch 1 and inside a batch of 2: max|diff| elementwise
relative to |ref| and relative to max|ref|, and each against ONNX Runtime.

    python3 tools/bucket_numerics.py [zoo spec, default zoo:resnet50] [--simulate]
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import hetpart
from hetpart import models
from hetpart.backend import forced_plan
from hetpart.bench.peers import ort_session


def main(spec: str = "zoo:resnet50", simulate: bool = False) -> None:
    graphs = {b: hetpart.load(f"{spec}:batch={b}") for b in (1, 2)}
    with ThreadPoolExecutor(2) as ex:
        builds = dict(zip(graphs, ex.map(lambda b: hetpart.compile(forced_plan(graphs[b], "cuda"), graphs[b],
                                                                    simulate=simulate, progress=False), graphs)))
    name, small, cfg = models.parse_zoo_spec(spec)
    proto = models.build(name, small=small, **cfg)
    pay = [models.example_inputs(proto, seed=100 + k) for k in range(2)]
    both = {k: np.concatenate([p[k] for p in pay]) for k in pay[0]}
    ort = ort_session(proto)
    with hetpart.Session(builds[1]) as s1, hetpart.Session(hetpart.bucket_batches(builds)) as sb:
        for row in (0, 1):
            alone, batched = s1.run(pay[row]), sb.run(both)
            want = dict(zip([o.name for o in ort.get_outputs()], ort.run(None, pay[row])))
            for out, ref in alone.items():
                got, r = batched[out][row], ref[0]
                d = np.abs(got - r)
                print(f"row {row} {out}: b2-vs-b1 elementwise max {np.max(d / (np.abs(r) + 1e-30)):.2e}, "
                      f"vs scale {d.max() / np.abs(r).max():.2e}; vs ORT: b1 {np.abs(r - want[out][0]).max() / np.abs(want[out]).max():.2e}, "
                      f"b2 {np.abs(got - want[out][0]).max() / np.abs(want[out]).max():.2e}", flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--simulate"]
    main(*args, simulate="--simulate" in sys.argv)
