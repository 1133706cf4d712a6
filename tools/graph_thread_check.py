"""Do CUDA graphs captured on a thread that exits survive it?  (The serving bench's
illegal address.)  Compiles the zoo ResNet-50 all-CUDA once, then in one process each:
``old`` (the first run inline on a short-lived thread, as before the fix) and ``new``
(the session's default); a second run on another thread is checked against ONNX Runtime.

    python3 tools/graph_thread_check.py
"""

import subprocess
import sys
import threading

ART = "/tmp/graph-thread-check"


def variant(name: str) -> None:
    import numpy as np

    import hetpart
    from hetpart import models
    from hetpart.bench.peers import ort_session

    cm = hetpart.load_compiled(ART)
    m = models.build("resnet50")
    inp = m.graph.input[0]
    x = np.random.default_rng(0).standard_normal([d.dim_value for d in inp.type.tensor_type.shape.dim])
    feeds = {inp.name: x.astype(np.float32)}
    with hetpart.Session(cm) as s:
        if name == "old":
            s._captured = True  # the behaviour before the fix: inline from the first run
        t = threading.Thread(target=lambda: s.run(feeds))
        t.start()
        t.join()
        out = {}
        t = threading.Thread(target=lambda: out.update(s.run(feeds)))
        t.start()
        t.join()
        out = s.run(feeds)
    ref = ort_session(m).run(None, feeds)
    err = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(out.values(), ref))
    print(name, "OK", err, flush=True)


def main() -> None:
    import hetpart
    from hetpart import importer, models
    from hetpart.backend import forced_plan

    g = importer.load(models.build("resnet50"))
    hetpart.compile(forced_plan(g, "cuda"), g, progress=False).save(ART)
    for v in ("new", "old"):
        p = subprocess.run([sys.executable, __file__, v], capture_output=True, text=True)
        lines = [ln for ln in (p.stdout + p.stderr).splitlines() if "Warning" not in ln]
        print(f"== {v}: rc {p.returncode}\n" + "\n".join(lines[-6:]), flush=True)


if __name__ == "__main__":
    variant(sys.argv[1]) if len(sys.argv) > 1 else main()
