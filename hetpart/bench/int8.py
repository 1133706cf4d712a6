"""int8 on the CPU (issue 18): models quantised by ONNX Runtime's own tool, run all-CPU
through hetpart, timed against ONNX Runtime's int8 CPU run of the same file.

For every model and quantisation (``dynamic``: ``quantize_dynamic``, MatMulInteger/
ConvInteger fed by DynamicQuantizeLinear; ``qdq``: ``quantize_static`` in QDQ format,
calibrated on 8 seeded random feeds):

1. quantise the float model (cached beside it as ``<stem>.<quant>.onnx``);
2. ORT CPU on the quantised file (and on the float one): outputs and median time;
3. hetpart: ``load`` -> every kernel pinned to the CPU -> ``compile`` -> ``Session``:
   outputs and median time; compare with ORT's int8 outputs.

A record (``hetpart-corpus`` schema, precision ``int8``) carries the corpus records' common
fields (``bench/corpus.py``: ``model``, ``batch``, ``device``, ``precision``, ``hetpart_ms``,
``peer``, ``peer_ms``), the peer being ONNX Runtime's int8 CPU run (:data:`PEER`; records
written before session 46, ``bench/results/int8-*.json``, name its time ``ort_int8_ms``
instead, with no ``peer``).  ``status`` pass when both the
relative error ``max|a - b| / max|b|`` to ORT's int8 output (a: hetpart) and hetpart's
own error to the float model are at most the quantised model's own tolerance:
:data:`SLACK` times ORT's int8 error to the float model, at least :data:`FLOOR`;
``wrong`` otherwise; ``error`` naming the stage that failed.  Both runtimes use the
same number of threads: ``threads``, by default hetpart's CPU pool (one per physical
core); another number is hetpart's ``Session(cpu_threads=)`` and ORT's intra-op pool.
With ``kernels``, the record carries the per-kernel table of the quantised model
(:mod:`hetpart.bench.kernel_table`: each hetpart kernel's median beside ORT's profiled
nodes, same threads) as ``kernel_table`` (its rendered text).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .timing import Settings, time_calls

SCHEMA, VERSION = "hetpart-corpus", 1
PEER = "onnxruntime_cpu_int8"
"""A record's ``peer``: ONNX Runtime's CPU run of the quantised file (the corpus names its CPU
peer ``onnxruntime_cpu``, its autocast peers ``torch_cuda_graph_autocast_<precision>``)."""
QUANTIZATIONS = ("dynamic", "qdq")
SLACK, FLOOR = 1.5, 1e-3
"""The quantised model's own tolerance: hetpart and ORT round activations to the same
grid, but a value a float rounding away from a tie lands one step off and the step
travels through the layers, so a QDQ model's two int8 results differ by about as much
as either differs from the float model (BERT small: 6.9 % to ORT int8, ORT int8 6.1 %
from float); dynamic models' integer contractions agree to ~1e-7."""


def feeds_for(model, seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for ``model``'s graph inputs: floats normal, integers in [0, 100)."""
    import onnx

    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for i in (i for i in model.graph.input if i.name not in inits):
        shape = [d.dim_value if d.dim_value > 0 else (batch or 1) for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif i.type.tensor_type.elem_type == onnx.TensorProto.BOOL:
            out[i.name] = np.ones(shape, dtype=bool)
        else:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            out[i.name] = (np.ones(shape) if "mask" in i.name else rng.integers(0, 100, shape)).astype(dtype)
    return out


def quantize(float_path: Path, quant: str, out_path: Path, batch: int | None = None) -> Path:
    """``float_path`` quantised by ORT (``quant`` in :data:`QUANTIZATIONS`) into ``out_path``."""
    import onnx
    from onnxruntime import quantization as q

    if quant == "dynamic":
        q.quantize_dynamic(str(float_path), str(out_path))
        return out_path
    model = onnx.load(str(float_path), load_external_data=False)

    class Calibration(q.CalibrationDataReader):
        def __init__(self):
            self._feeds = iter([feeds_for(model, seed, batch) for seed in range(8)])

        def get_next(self):
            return next(self._feeds, None)

    q.quantize_static(str(float_path), str(out_path), Calibration(), quant_format=q.QuantFormat.QDQ)
    return out_path


def median_ms(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in ms over exactly ``repeat`` runs after 3 warm-up runs."""
    settings = Settings(warmup=3, min_repeats=repeat, max_repeats=repeat, budget_s=0.0)
    return time_calls(fn, settings).median_s * 1e3


def rel_err(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """``max|a - b| / max|b|``, the largest over the outputs."""
    return max(float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))
               for a, b in zip(got, want))


def run_model(name: str, float_path: Path, quant: str, *, batch: int = 1, repeat: int = 20,
              work_dir: Path | None = None, threads: int | None = None, kernels: bool = False) -> dict:
    """One record (see the module doc) for model ``name`` at ``float_path``, on ``threads``
    threads (None: hetpart's CPU pool); with ``kernels``, its per-kernel table too."""
    import onnx

    import hetpart
    from hetpart.bench.peers import ort_session
    from hetpart.bench.settle import settle
    from hetpart.cpu_cores import pool_size
    from hetpart.partitioner import Pin

    default_pool = threads is None or threads == pool_size()
    threads = threads or pool_size()
    record = {"model": name, "batch": batch, "device": "cpu", "precision": "int8", "quantization": quant,
              "threads": threads}
    stage = "quantize"
    try:
        work_dir = Path(work_dir or float_path.parent)
        qpath = work_dir / f"{Path(float_path).stem}.{quant}.onnx"
        if not qpath.exists():
            quantize(Path(float_path), quant, qpath, batch)
        qmodel = onnx.load(str(qpath))
        feeds = feeds_for(qmodel, seed=100, batch=batch)
        stage = "onnxruntime"
        ort_int8, ort_fp32 = ort_session(qmodel, threads=threads), ort_session(str(float_path), threads=threads)
        want, ref = ort_int8.run(None, feeds), ort_fp32.run(None, feeds)
        # each timing starts once the other sessions' pool threads stop spinning (.settle)
        waits = [settle()]
        record.update(peer=PEER, peer_ms=round(median_ms(lambda: ort_int8.run(None, feeds), repeat), 4))
        waits.append(settle())
        record["ort_fp32_ms"] = round(median_ms(lambda: ort_fp32.run(None, feeds), repeat), 4)
        stage = "import"
        graph = hetpart.load(qmodel)
        stage = "compile"
        plan = hetpart.partition(graph, pins=[Pin(k.id, "cpu") for k in graph.nodes], progress=False)
        compiled = hetpart.compile(plan, graph, progress=False)
        stage = "run"
        with hetpart.Session(compiled, cpu_threads=None if default_pool else threads) as session:
            got = list(session.run(feeds).values())
            waits.append(settle())
            record["hetpart_ms"] = round(median_ms(lambda: session.run(feeds), repeat), 4)
        record["settle_ms"] = [round(w.waited_s * 1e3, 1) for w in waits]
        stage = "compare"
        err, ort_err, own_err = rel_err(got, want), rel_err(want, ref), rel_err(got, ref)
        tolerance = max(FLOOR, SLACK * ort_err)
        ok = err <= tolerance and own_err <= tolerance
        record.update(status="pass" if ok else "wrong", rel_err=err, ort_int8_vs_fp32=ort_err,
                      hetpart_vs_fp32=own_err, detail=f"tolerance {tolerance:.3g}",
                      speedup_vs_ort_int8=round(record["peer_ms"] / record["hetpart_ms"], 3))
        if kernels:
            from .kernel_table import measure

            try:
                record["kernel_table"] = measure(qmodel, feeds, threads, runs=repeat).render()
            except Exception as exc:  # noqa: BLE001 - the table is extra: the record keeps its status
                record["kernel_table"] = f"failed: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - any failure is this record's result
        first = (str(exc).strip().splitlines() or [""])[0]
        record.update(status="error", rel_err=None, detail=f"{stage}: {type(exc).__name__}: {first[:400]}")
    return record
