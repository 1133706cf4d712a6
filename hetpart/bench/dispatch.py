"""What one more kernel costs the CPU runtime: the per-kernel dispatch overhead.

In: a thread count.  Out: :class:`DispatchCost` per chain shape: ``Session.run`` of an
all-CPU chain of ``m`` MatMuls (``[rows, 16] @ [16, 16]``, which fusion cannot merge)
for a short and a long chain, and the slope, the cost of one more kernel call: the VM's
call, its output allocation, and, for rows enough to run in parallel, the thread
pool's fork-join; and the one-kernel chain's whole run, nearly all the fixed cost of
a ``Session.run`` (feeds checked and staged, outputs handed back).  ONNX Runtime runs
the same chains on the same threads.

``rows=1`` is a serial kernel of 256 multiply-adds (the slope is nearly all runtime);
``rows=256`` is large enough that the CPU rules run it in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHORT, LONG = 1, 65


@dataclass(frozen=True)
class DispatchCost:
    """Microseconds: per added kernel (``*_us``) and a whole run of the one-kernel chain
    (``*_run_us``: the fixed cost of a run), hetpart's ``Session.run`` and ONNX Runtime's."""

    rows: int
    threads: int
    hetpart_us: float
    ort_us: float
    hetpart_run_us: float
    ort_run_us: float

    def render(self) -> str:
        return (f"  [{self.rows}, 16] @ [16, 16] chain, {self.threads} thread(s): one more kernel costs "
                f"hetpart {self.hetpart_us:6.2f} us, ONNX Runtime {self.ort_us:6.2f} us; a one-kernel run "
                f"hetpart {self.hetpart_run_us:6.1f} us, ONNX Runtime {self.ort_run_us:6.1f} us")


def chain_model(m: int, rows: int):
    """An ONNX model of ``m`` chained MatMuls with seeded 16x16 weights."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16)) / 4).astype(np.float32), f"w{i}")
             for i in range(m)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"y{i - 1}", f"w{i}"], [f"y{i}"]) for i in range(m)]
    graph = helper.make_graph(nodes, f"chain{m}", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                  [rows, 16])],
                              [helper.make_tensor_value_info(f"y{m - 1}", onnx.TensorProto.FLOAT, [rows, 16])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def measure(threads: int, rows: int, settings) -> DispatchCost:
    """The slope between a chain of :data:`SHORT` and of :data:`LONG` MatMuls, both sides."""
    from .. import compile as hp_compile
    from .. import load
    from ..backend import forced_plan
    from ..runtime import Session
    from .peers import ort_session
    from .settle import settle
    from .timing import time_calls

    feeds = {"x": np.random.default_rng(1).standard_normal((rows, 16)).astype(np.float32)}
    hetpart_s, ort_s = {}, {}
    for m in (SHORT, LONG):
        model = chain_model(m, rows)
        graph = load(model)
        with Session(hp_compile(forced_plan(graph, "cpu"), graph, progress=False), cpu_threads=threads) as s:
            settle()  # an earlier chain's ORT workers spin on after its runs
            hetpart_s[m] = time_calls(lambda s=s: s.run(feeds), settings).median_s
        ort = ort_session(model, threads=threads)
        settle()
        ort_s[m] = time_calls(lambda ort=ort: ort.run(None, feeds), settings).median_s
    per = lambda t: (t[LONG] - t[SHORT]) / (LONG - SHORT) * 1e6  # noqa: E731
    return DispatchCost(rows, threads, per(hetpart_s), per(ort_s), hetpart_s[SHORT] * 1e6, ort_s[SHORT] * 1e6)
