"""Where a streamed BERT run crashes on the GPU: one subprocess per variant, faulthandler on.

    python3 tools/stream_diag.py [graphs|nographs] [GPU_MEMORY]
Without an argument runs both variants (CUDA graphs for resident partitions on, as
before the fix; off, as the compiler now builds a plan that streams)
and prints each one's exit status and the tail of its output.
"""

import faulthandler
import subprocess
import sys

faulthandler.enable()


def variant(graphs: bool, cap: str) -> None:
    import numpy as np

    import hetpart
    from hetpart import models
    from hetpart.bench.peers import ort_session
    from hetpart.compiler import build as compiler_build
    from hetpart.importer import load

    if graphs:  # as before the fix: resident partitions captured as CUDA graphs beside streamed ones
        import dataclasses

        real = compiler_build.extract
        compiler_build.extract = lambda g, p: [dataclasses.replace(x, cuda_graph=not x.weights) for x in real(g, p)]
    model = models.build("bert")
    graph = load(model)
    plan = hetpart.partition(graph, gpu_memory=int(cap),
                             progress=False)
    print("streamed", len(plan.streamed), "slots", plan.stream_slots, flush=True)
    compiled = hetpart.compile(plan, graph)
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 1000, (1, 128)).astype(np.int64)}
    print("opening session", flush=True)
    with hetpart.Session(compiled) as s:
        print("first run", flush=True)
        out = s.run(feeds)
        print("second run", flush=True)
        out = s.run(feeds)
    ref = ort_session(model).run(None, feeds)
    for (k, v), r in zip(out.items(), ref):
        print(k, float(np.abs(v - r).max() / np.abs(r).max()), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        variant(sys.argv[1] == "graphs", sys.argv[2] if len(sys.argv) > 2 else str(160 << 20))
    else:
        procs = {name: subprocess.Popen([sys.executable, "-X", "faulthandler", __file__, name], text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("graphs", "nographs")}
        for name, p in procs.items():
            out, err = p.communicate()
            print(f"== {name}: rc {p.returncode}\n{out[-3000:]}\n{err[-4000:]}", flush=True)
