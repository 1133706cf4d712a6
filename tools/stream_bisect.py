"""Which streamed plans crash on the GPU: each variant in its own process, in parallel.

    python3 tools/stream_bisect.py            # all variants, a line each
    python3 tools/stream_bisect.py NAME       # one variant (what the parent runs)
"""

import subprocess
import sys

sys.path.insert(0, "tests")

VARIANTS = ["small_all_cuda", "small_no_pooler", "small_partitioner", "full_int_resident", "full_one_slot_each"]


def run(name: str) -> None:
    import numpy as np

    import hetpart
    from hetpart import compiler, importer, models
    from hetpart.bench.peers import ort_session
    from streaming_plans import plan_with_devices

    small = name.startswith("small")
    m = models.build("bert", small=small)
    g = importer.load(m)
    if name == "small_all_cuda":
        plan = plan_with_devices(g, ["cuda"] * 3, streamed=True, slots=2)
    elif name == "small_no_pooler":
        plan = plan_with_devices(g, ["cuda", "cuda", "cpu"], streamed=True, slots=2)
    elif name == "small_partitioner":
        w = sum(k.param_bytes for k in g.kernels.values())
        plan = hetpart.partition(g, gpu_memory=w // 4, progress=False)
    else:
        plan = hetpart.partition(g, gpu_memory=160 << 20, progress=False)
        for p in plan.partitions:
            if name == "full_int_resident" and p.weights == "streamed" and p is plan.streamed[-1]:
                p.weights = "resident"
        if name == "full_one_slot_each":
            plan.stream_slots = len(plan.streamed)
    print(name, "streamed", [(p.name, p.weight_bytes) for p in plan.streamed][:6], "slots", plan.stream_slots,
          flush=True)
    cm = compiler.compile(plan, g, progress=False)
    inp = m.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    feeds = {inp.name: np.random.default_rng(0).integers(0, 100, shape).astype(np.int64)}
    print(name, "compiled; running", flush=True)
    with hetpart.Session(cm) as s:
        out = s.run(feeds)
        out = s.run(feeds)
    ref = ort_session(m).run(None, feeds)
    print(name, "OK", [float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(out.values(), ref)], flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(sys.argv[1])
    else:
        procs = {v: subprocess.Popen([sys.executable, __file__, v], text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT) for v in VARIANTS}
        for v, p in procs.items():
            out, _ = p.communicate()
            lines = [ln for ln in out.splitlines() if "Warning" not in ln and '"<unknown>"' not in ln]
            print(f"== {v}: rc {p.returncode}\n" + "\n".join(lines[-12:]), flush=True)
