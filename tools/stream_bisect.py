"""Which streamed plans crash on the GPU: each variant in its own process, in parallel.

    python3 tools/stream_bisect.py            # all variants, a line each
    python3 tools/stream_bisect.py NAME       # one variant (what the parent runs)
"""

import subprocess
import sys

VARIANTS = ["full", "r160"]
# gdb's backtrace of a crash, where the machine has gdb (the crash is native)
GDB = ["gdb", "-q", "-batch", "-ex", "run", "-ex", "bt 40", "-ex", "info registers rip", "--args"]


def run(name: str) -> None:
    import numpy as np

    import hetpart
    from hetpart import compiler, importer, models
    from hetpart.kernels.options import resolve
    from hetpart.bench.peers import ort_session

    m = models.build("bert")
    g = importer.load(m)
    import faulthandler
    faulthandler.enable(all_threads=True)  # after TVM's handler: Python stacks, then TVM's native one
    from hetpart.runtime import partition_runner
    call = partition_runner.PartitionRunner.call

    def traced(self, *a, **k):  # which partition was running when it crashed
        print("call", self.artifact.name, flush=True)
        out = call(self, *a, **k)
        print("done", self.artifact.name, flush=True)
        return out
    partition_runner.PartitionRunner.call = traced
    if name.startswith("r160"):  # the same cap without streaming: CPU takes the rest
        plan = hetpart.partition(g, gpu_memory=160 << 20, stream_weights=False, progress=False)
    else:
        plan = hetpart.partition(g, gpu_memory=160 << 20, stream_weights=True, progress=False)
    print(name, "streamed", [(p.name, p.weight_bytes) for p in plan.streamed][:6], "slots", plan.stream_slots,
          flush=True)
    options = resolve(tf32="tf32_off" not in name, split_k="off" if "split_k_off" in name else "all")
    cm = compiler.compile(plan, g, progress=False, options=options)
    inp = m.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    feeds = {inp.name: np.random.default_rng(0).integers(0, 100, shape).astype(np.int64)}
    print(name, "compiled; running", flush=True)
    handoff = "copy" if "_copy" in name else "mapped" if "_mapped" in name else "auto"
    with hetpart.Session(cm, handoff=handoff, inline="noinline" not in name) as s:
        out = s.run(feeds)
        out = s.run(feeds)
    ref = ort_session(m).run(None, feeds)
    print(name, "OK", [float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(out.values(), ref)], flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(sys.argv[1])
    else:
        import shutil
        wrap = GDB if shutil.which("gdb") else []
        procs = {v: subprocess.Popen(wrap + [sys.executable, "-X", "faulthandler", __file__, v], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for v in VARIANTS}
        for v, p in procs.items():
            out, _ = p.communicate()
            lines = [ln for ln in out.splitlines() if "Warning: Fast mode" not in ln]
            print(f"== {v}: rc {p.returncode}\n" + "\n".join(lines[-120:]), flush=True)
