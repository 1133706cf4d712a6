"""The capped-GPU-memory benchmark (issue 19, "Bigger than the GPU"): each workload
under GPU memory caps smaller than its weights, against the tools users run today.

For each workload and cap (bytes, or a fraction of the workload's weight bytes) it
records, per contender (the names are fixed; the table and the goals read them):

* ``hetpart`` -- ``hetpart.partition(graph, gpu_memory=cap)`` (the latency
  objective), compiled and run in a Session: whatever placement the partitioner
  makes, weight streaming included once it is there; a decode step's caches
  (:func:`graph_state_pairs`) planned as device state (``partition(state=)``), as
  :func:`open_stepping` binds them (the memory rules' placements are priced so too);
* ``hetpart bf16`` -- the same with ``precision="cuda=bf16,cpu=fp32"``
  (:mod:`hetpart.contracts.precision`): CUDA kernels hold and stream their
  contraction/gather weights in bfloat16 (half the bytes), compute stays float32.
  Its outputs are checked against ONNX Runtime's float32 ones (``rel_error``, at most
  :data:`BF16_TOLERANCE` of the largest reference value, as the precision's tests);
  its ``limit_ms`` is the physical limit with the bytes it holds and streams
  (:func:`precision_weight_bytes`);
* ``hetpart bf16 cpu-bf16`` -- opt-in (:data:`OPT_IN`: run only when named): ``hetpart bf16``
  with the CPU's weights in bfloat16 too (``cuda=bf16,cpu=bf16``), so the CPU kernels of weights
  left off the GPU read half the bytes (precision label ``bf16 both``; its limit counts the
  bf16 bytes on both devices);
* ``llama.cpp-style rule bf16``, ``ORT-style rule bf16`` -- opt-in: the memory rules below placing
  and running the ``bf16 both`` weights (``cuda=bf16,cpu=bf16``), the rules hetpart's bf16 contenders
  are measured against at the same bytes (llama.cpp and ONNX Runtime run low-precision weights too);
* ``hetpart all-CPU`` -- every kernel on the CPU (measured once per workload);
* ``onnxruntime_cpu``, ``torch_cpu`` -- the peers (:mod:`.peers`) on the same model
  (once per workload);
* ``accelerate`` -- the same PyTorch module through accelerate's
  ``infer_auto_device_map`` + ``dispatch_model`` with ``max_memory={0: cap}``: the
  modules left over are offloaded and their weights copied in at each call;
* ``llama.cpp-style rule``, ``ORT-style rule`` -- the memory-only placements of
  :mod:`hetpart.partitioner.memory_rules`, compiled and run like hetpart's plan.

Every record carries ``limit_ms``, the physical limit of the workload under the cap
(:func:`limit_s`) from bandwidths measured in the run (:func:`measure_bandwidths`)
for the record's ``precision`` (``fp32``: float32 weight bytes; ``bf16``: the
``hetpart bf16`` contender's), and ``predicted_ms`` where a plan predicts one; float32 records
also the chain bound (``chain_bound_ms``, :func:`chain_bound_s`) and the limit with the CPU's
compute counted (``cpu_compute_limit_ms``, :func:`cpu_compute_limit_s`: the issue's
``limit_ms`` is unchanged).  A contender that cannot run here
is a record with ``ms`` None and ``skipped`` saying why (no torch, no GPU, a plan
that cannot meet the cap ...).

Costs.  Kernels the profile has not measured are predicted, and the LLM/MoE
workloads have none of theirs in the recorded H200 profile: their first plans were
priced on guesses (llama_decode predicted 34.6 ms, ran 214 ms;
bench/results/capped-predictions.md).  So with ``Options.measure`` (the front end's
default on a machine with a GPU) each workload's kernels are measured first on both
devices; whatever is still predicted is counted per device in the workload's header
(``predicted_kernels``) and per plan in its record (``predicted_kernels``: its kernels
priced by prediction on the device they run on), and the table says so.  With
``Options.cold_weights`` (default) the cost model reads CPU weights no faster than its
cold weight-read bandwidth (:meth:`hetpart.costmodel.CostModel.with_weight_bandwidth`):
in a model bigger than the GPU no weight stays in a cache from one run to the next, while
a kernel timed alone keeps its weights there (the cost model lifts the floor only for a
graph whose weights fit in the CPU's last-level cache, ``CostModel.weights_stay_cached``:
never one of these workloads).  That bandwidth is the profile's own
measurement (the compiler's GEMV over 1 GiB of weights, :mod:`hetpart.costmodel.weight_read_bench`,
taken into the profile by ``Options.measure``), else the run's torch sum
(:func:`cold_weight_bandwidth`); each workload's header says which (``cold_weight_Bps``,
``cold_weight_from``).

Records go to a JSON file (schema ``hetpart-capped``) as they come, with a markdown
table beside it; ``deadline`` (``time.monotonic()``) stops the run between two
contenders, so a time-limited call ends with what it finished written, and
``skip_done`` resumes.  The front end is ``bench/capped.py``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import HetpartError
from ..kernels.options import DEFAULT
from ..partitioner.costs import cost_origin
from .builds import BuildCache
from .timing import Settings, time_calls

SCHEMA, VERSION = "hetpart-capped", 7
# 2: Record.precision, Record.rel_error, the bf16 contender; 3: chain_bound_ms; 4: Record.predicted_kernels;
# 5: Record.cpu_compute_limit_ms; 6: both limits with the stream beside the CPU's reads (:func:`limit_s`);
# 7: Record.variant, Record.source, Record.host_gemv_gbps (records of tools/capped_rules_ab.py's interleaved A/Bs)
READS = (1, 2, 3, 4, 5, 6, 7)  # version 1's records read as precision fp32, before 3 without a chain bound, before 4
# without a count of predicted kernels, before 5 without the CPU-compute limit (None: not counted), before 6
# with their limits kept as serial_limit_ms / serial_cpu_compute_limit_ms (the old form) and limit_ms None
CONTENDERS = ("hetpart", "hetpart bf16", "hetpart all-CPU", "onnxruntime_cpu", "torch_cpu", "accelerate",
              "llama.cpp-style rule", "ORT-style rule")
# Measured once per workload: their placement does not depend on the cap.
CAP_FREE = ("hetpart all-CPU", "onnxruntime_cpu", "torch_cpu")
DEFAULT_CAPS = ("1/2", "1/3", "1/4")
# The precision (hetpart.contracts.precision) each hetpart contender plans and builds
# with, by its record's label; every other contender is float32 ("fp32").
PRECISIONS = {"hetpart bf16": ("bf16", "cuda=bf16,cpu=fp32"),
              "hetpart bf16 cpu-bf16": ("bf16 both", "cuda=bf16,cpu=bf16"),
              "llama.cpp-style rule bf16": ("bf16 both", "cuda=bf16,cpu=bf16"),
              "ORT-style rule bf16": ("bf16 both", "cuda=bf16,cpu=bf16")}
# The memory rules at a low precision: the rule of :data:`RULE_OF` placing bf16 weight bytes.
RULE_OF = {"llama.cpp-style rule bf16": "llama.cpp-style rule", "ORT-style rule bf16": "ORT-style rule"}
OPT_IN = ("hetpart bf16 cpu-bf16", "llama.cpp-style rule bf16", "ORT-style rule bf16")
"""Contenders run only when ``Options.contenders`` (``--contenders``) names them; a column of
the table only where a record has them."""
KNOWN = CONTENDERS + OPT_IN
BF16_TOLERANCE = 2e-2
"""Largest ``max|hetpart - ORT| / max|ORT|`` over the outputs for a bf16 record to be
right: the tolerance hetpart's precision is tested to (README, tests/test_compiler_precision.py)."""
LIMIT = ("the best placement's time if every byte moved at the bandwidths measured (host-to-device in this run; "
         "the CPU's the faster of this run's torch sum and the profile's GEMV over cold weights): "
         "streaming the weights over the cap (host-to-device) beside a chain of the CPU reading the rest "
         "at its memory bandwidth and the GPU computing, or the CPU reading all of them, counting only the "
         "weights a step reads (a MoE step its chosen experts'); a lower bound")
# History: until branch big-weights a plan with a partition embedding over 4 GiB of weights
# (LIBRARY_WEIGHT_LIMIT) was skipped before its build: the llama_decode all-CPU build (one
# partition, 4.40 GB in its library) crashed the process in tvm::ffi::Module::LoadFromFile on
# the H200 (2026-12-04, device step 33).  The cause (TVM's LLVM writes a library blob of
# >= 4 GiB cut to its size mod 2**32) and the fix (a partition's weights over 256 MiB kept in a
# file beside its library) are in hetpart.compiler.external; no plan is skipped for its size now.
COMPUTE_LIMIT = ("`limit + CPU compute ms` (float32; not the issue's limit, which it leaves unchanged; "
                 "bench/results/capped-bert-limit.md): the same placements as `limit ms`, but a kernel left to the "
                 "CPU costs at least its CPU time as the profile timed it (with its weights cached), not only "
                 "its bytes at memory bandwidth, frees its weights from the GPU and its time from the GPU's "
                 "compute; at batch 1 and sequence 128 a transformer's CPU matmuls are compute-bound, ~5x their "
                 "read time")
CHAIN = ("`chain bound ms` (float32, not the issue's limit; bench/results/capped-limit-analysis.md): the least "
         "predicted latency any placement could have by the cost model's kernel times, at this run's "
         "host-to-device bandwidth: each kernel resident, streamed or on the CPU (a fraction of each allowed), "
         "CPU and GPU kernels one after another as on a dependency chain at batch 1, the weight copies "
         "overlapped, resident weights within the cap less one ring slot")


# ========================================================================================
# Workloads
# ========================================================================================
@dataclass
class Workload:
    """A model to run under caps.  ``model`` is a ``zoo:`` spec, a path or a ModelProto;
    ``torch`` a zero-argument function returning ``(nn.Module, input names)`` (None:
    no PyTorch twin, ``torch_note`` says why)."""

    name: str
    model: object
    torch: Callable | None = None
    torch_note: str = ""


def transformers_workload(name: str, twin: str, export_dir: Path) -> Workload:
    """A twin of :mod:`.export` exported to ``export_dir`` once (reused later)."""
    from .export import TWINS, _export, _record_limits

    # A directory per twin: past 2 GB torch writes each weight as a file beside the model.
    path = Path(export_dir) / twin / "model.onnx"
    module_and_names = {}

    def make_torch():
        if "module" not in module_and_names:
            module, _, names, _ = TWINS[twin](1)
            module_and_names.update(module=module.eval(), names=names)
        return module_and_names["module"], module_and_names["names"]

    if not path.exists():
        try:
            import torch
            import transformers  # noqa: F401 - the twins are transformers models
        except ImportError as exc:
            raise HetpartError(f"workload {name} needs PyTorch and transformers ({exc.name} is not installed)") \
                from None

        module, args, names, limits = TWINS[twin](1)
        module.eval()
        module_and_names.update(module=module, names=names)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name("partial.onnx")  # a cut-off export is never reused
        with torch.no_grad():
            _export(torch, module, args, names, partial)
        _record_limits(partial, limits)
        partial.replace(path)
    return Workload(name, path, make_torch)


def zoo_workload(spec: str, name: str | None = None) -> Workload:
    """A zoo model; the LLaMA decode step with its PyTorch twin (:mod:`.decode_twin`)."""
    from .. import models

    model_name, small, cfg = models.parse_zoo_spec(spec)
    if model_name != "llama_decode":
        return Workload(name or spec, spec, None, "a zoo model has no PyTorch twin")
    model = models.build(model_name, small, **cfg)  # once: hetpart, ORT and the twin share it

    def make_torch():
        from .decode_twin import decode_twin

        return decode_twin(model)

    return Workload(name or spec, model, make_torch)


MOE_SPEC = "zoo:moe"
"""The mixture-of-experts stack: 8 LLaMA-style layers, hidden 1024, 8 experts of SwiGLU
(intermediate 2816) routed top-2 through TopK + Gather, one token (2.5 GB of float32)."""
DLRM_SPEC = "zoo:dlrm:table_rows=1000000,num_tables=26"
"""DLRM at several GB: Criteo's 26 sparse features as tables of a million rows of 64
floats (6.7 GB of float32), batch 256."""

# The zoo workloads of issue 19: spec -> the name their records carry.
NAMED_SPECS = {"zoo:llama_decode": "llama_decode", MOE_SPEC: "moe", DLRM_SPEC: "dlrm"}
# The workloads of issue 19 by name; zoo:... specs are workloads too.
NAMED = {
    "bert_large": lambda d: transformers_workload("bert_large", "bert_large_transformers", d),
    "llama_prefill": lambda d: transformers_workload("llama_prefill", "llama_1b_transformers", d),
    **{name: (lambda d, spec=spec, name=name: zoo_workload(spec, name)) for spec, name in NAMED_SPECS.items()},
}


def record_name(workload_arg: str) -> str:
    """The ``workload`` a record of ``workload_arg`` (a name of :data:`NAMED` or a ``zoo:``
    spec, as tools take it) carries: a spec of :data:`NAMED_SPECS` its name
    (``zoo:llama_decode`` -> ``llama_decode``), so a tool's records meet the benchmark's
    under one key; any other spec itself (as :func:`workload` names it)."""
    return NAMED_SPECS.get(workload_arg.strip(), workload_arg.strip())


def split_names(text: str) -> list[str]:
    """Workload names from a comma list, where a ``zoo:`` spec keeps its own commas:
    ``bert_large,zoo:dlrm:table_rows=9,num_tables=4`` -> ``[bert_large, zoo:dlrm:table_rows=9,num_tables=4]``."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if names and names[-1].startswith("zoo:") and "=" in part and not part.startswith("zoo:"):
            names[-1] += "," + part
        else:
            names.append(part)
    return names


def workload(name: str, export_dir: Path) -> Workload:
    if name.startswith("zoo:"):
        return zoo_workload(name)
    if name not in NAMED:
        raise HetpartError(f"unknown capped workload {name!r}; known: {', '.join(NAMED)} or zoo:NAME[...]")
    return NAMED[name](export_dir)


@dataclass
class Prepared:
    """A workload imported: op graph, feeds (by graph and by ONNX input name), weights."""

    workload: Workload
    graph: object
    onnx_model: object  # what ONNX Runtime opens: the path where there is one
    feeds: dict
    onnx_feeds: dict
    weight_bytes: int
    reference: dict | None = None  # ONNX Runtime's outputs on onnx_feeds, by output name (first asked: reference())


def prepare(w: Workload) -> Prepared:
    from .harness import Workload as HarnessWorkload
    from .harness import prepare as harness_prepare

    p = harness_prepare(HarnessWorkload(w.name, w.model))
    # Text models run unpadded: an all-ones attention mask (the seeded feeds would mask every token).
    onnx_feeds = {n: (np.ones_like(v) if "attention_mask" in n else v) for n, v in p.onnx_feeds.items()}
    feeds = dict(zip(p.feeds, onnx_feeds.values()))
    source = w.model if isinstance(w.model, (str, os.PathLike)) and not str(w.model).startswith("zoo:") \
        else p.onnx_model
    return Prepared(w, p.graph, source, feeds, onnx_feeds, initializer_bytes(p.onnx_model))


def reference(prep: Prepared) -> dict:
    """ONNX Runtime's (CPU, float32) outputs of ``prep`` by output name, computed once."""
    if prep.reference is None:
        from .peers import ort_session

        session = ort_session(prep.onnx_model)
        names = [o.name for o in session.get_outputs()]
        prep.reference = dict(zip(names, session.run(None, prep.onnx_feeds)))
    return prep.reference


def rel_error(got: dict, want: dict) -> float:
    """``max|got - want| / max|want|``, the largest over ``want``'s outputs (a missing
    or misshapen output is an error of ``inf``)."""
    worst = 0.0
    for name, ref in want.items():
        ref = np.asarray(ref, np.float64)
        out = got.get(name)
        if out is None or np.shape(out) != ref.shape:
            return float("inf")
        if ref.size:
            diff = float(np.abs(np.asarray(out, np.float64) - ref).max())
            worst = max(worst, diff / max(float(np.abs(ref).max()), 1e-30))
    return worst


def initializer_bytes(model) -> int:
    """Bytes of the model's initializers from their shapes and types (never their data)."""
    import onnx

    total = 0
    for t in model.graph.initializer:
        size = int(np.prod(t.dims)) if len(t.dims) else 1
        total += size * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


# ========================================================================================
# Caps, bandwidths, the physical limit
# ========================================================================================
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_cap(text: str, weight_bytes: int) -> int:
    """``"1/3"`` or ``"0.5"`` (of ``weight_bytes``), or ``"512MiB"``/``"2GB"``/``"1000"`` bytes."""
    t = text.strip()
    m = re.fullmatch(r"([0-9.]+)\s*([a-zA-Z]*)", t)
    try:
        if "/" in t or (m and "." in m.group(1) and not m.group(2)):
            share = Fraction(t)
            if not 0 < share <= 1:
                raise ValueError
            return int(weight_bytes * share)
        if m and m.group(2).lower() in _UNITS and float(m.group(1)) > 0:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    except (ValueError, ZeroDivisionError):
        pass
    raise HetpartError(f"bad GPU memory cap {text!r}: give a share of the weights (1/3, 0.5) or bytes "
                       "(512MiB, 2GB)")


@dataclass(frozen=True)
class Bandwidths:
    """Bytes per second measured in this run, and how."""

    h2d_bytes_per_s: float | None
    cpu_bytes_per_s: float
    how: dict = field(default_factory=dict)


def measure_bandwidths(nbytes: int = 1 << 30, costs=None) -> Bandwidths:
    """Host-to-device over PCIe (pinned, through torch; else the cost model's link,
    else None) and the CPU's memory read bandwidth (a multi-threaded torch sum over
    ``nbytes``; numpy's single-threaded sum without torch, an underestimate)."""
    how = {}
    h2d = _torch_h2d(nbytes)
    if h2d is not None:
        how["h2d"] = f"torch pinned copy of {nbytes} bytes to cuda:0, best of 5"
    elif costs is not None:
        h2d = (1 << 30) / costs.transfer_cost(1 << 30, "cpu", "cuda")
        how["h2d"] = "the cost model's host-to-device link (no GPU measured here)"
    cpu, how["cpu"] = _cpu_read(nbytes)
    return Bandwidths(h2d, cpu, how)


def _torch_h2d(nbytes: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    host = torch.empty(nbytes // 4, dtype=torch.float32).pin_memory()
    dev = torch.empty_like(host, device="cuda")
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    del host, dev
    torch.cuda.empty_cache()
    return nbytes / best


def _cpu_read(nbytes: int) -> tuple[float, str]:
    try:
        import torch

        data = torch.ones(nbytes // 4, dtype=torch.float32)
        reduce, how = (lambda: float(data.sum())), f"torch sum over {nbytes} bytes, {torch.get_num_threads()} threads"
    except ImportError:
        data = np.ones(nbytes // 4, dtype=np.float32)
        reduce, how = (lambda: float(data.sum())), f"numpy sum over {nbytes} bytes (one thread: an underestimate)"
    reduce()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        reduce()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best, how + ", best of 5"


def limit_s(gpu_compute_s: float, weight_bytes: int, cap_bytes: int, bw: Bandwidths,
            gpu_weight_bytes: int | None = None, read_share: float = 1.0) -> float:
    """The physical limit of a workload under ``cap_bytes``: the least of

    * all on the CPU: ``weight_bytes / cpu``;
    * the GPU computing everything with the weights over the cap split between
      streaming (``s / h2d``) and the CPU (``c / cpu``): ``max(c / cpu + gpu_compute_s,
      s / h2d)``, ``c + s = weights - cap``, at its best split (an end or where the two
      meet).  The CPU's reads and the GPU's compute are one chain (a step's layers run
      one after another), the copies run beside both.

    Version 6 of the records: until then the stream ran beside the GPU's compute only,
    ``c / cpu + max(gpu_compute_s, s / h2d)``, which is not a lower bound: hetpart's
    timeline overlaps the copies with the CPU partitions too, and llama_decode at 1/2
    was predicted under it (22.45 ms against 22.78; bench/results/capped-decode-gap-s47.md).

    ``gpu_weight_bytes``: the weights' bytes as the GPU holds and streams them (a
    low precision's, :func:`precision_weight_bytes`; default ``weight_bytes``, float32
    on both devices).  The GPU then holds or streams ``gpu_weight_bytes - cap`` bytes
    over the cap, and a GPU byte left to the CPU costs ``weight_bytes /
    gpu_weight_bytes`` bytes read there (the CPU keeps float32).  Without a
    host-to-device bandwidth only the all-CPU term counts.

    ``read_share`` (:func:`read_share`): the share of the weight bytes one inference
    reads -- 1 for a dense model; a mixture-of-experts step reads the chosen experts'
    (2 of 8: MoE's gathers read a quarter of their tables), a lookup a few rows of its
    table.  The bytes a step moves or reads off the GPU are that share of those held
    off it (the routing spread evenly over the experts).  Before it counted every
    byte, zoo moe's limit at 1/2 was 26.7 ms while the ORT-style rule ran in 11.2 ms.
    """
    share = min(max(float(read_share), 0.0), 1.0)
    cpu_all = share * weight_bytes / bw.cpu_bytes_per_s
    if bw.h2d_bytes_per_s is None:
        return cpu_all
    gpu_bytes = weight_bytes if gpu_weight_bytes is None else gpu_weight_bytes
    per_gpu_byte = weight_bytes / gpu_bytes if gpu_bytes else 1.0  # CPU bytes per GPU byte left to the CPU
    over = share * max(0, gpu_bytes - cap_bytes)  # the bytes over the cap one step reads
    cpu_s, h2d_s = per_gpu_byte / bw.cpu_bytes_per_s, 1.0 / bw.h2d_bytes_per_s  # seconds a byte
    c = overlapped_cpu_bytes(over, gpu_compute_s, cpu_s, h2d_s)
    return min(cpu_all, max(c * cpu_s + gpu_compute_s, (over - c) * h2d_s))


def profile_limit_ms(graph, weight_bytes: int, cap_bytes: int, costs, cpu_bytes_per_s: float,
                     how: str = "") -> tuple[float, Bandwidths]:
    """``(ms, bandwidths)``: the float32 :func:`limit_s` of ``graph`` under ``cap_bytes``
    where no torch measured the run's bandwidths (tools/capped_rules_ab.py): host-to-device
    at the cost model's link (the profile's ``transfers``), the CPU's reads at the faster of
    ``cpu_bytes_per_s`` (the run's fastest measured rate) and the profile's GEMV
    (:func:`limit_bandwidths`), the GPU's compute :func:`gpu_compute_s` of ``costs``.  The
    bench measures host-to-device with torch instead (:func:`measure_bandwidths`); both are
    :func:`limit_s` of the same terms."""
    h2d = (1 << 30) / costs.transfer_cost(1 << 30, "cpu", "cuda")
    bw = limit_bandwidths(Bandwidths(h2d, float(cpu_bytes_per_s),
                                     {"h2d": "the cost model's host-to-device link (the profile's)",
                                      "cpu": how or "the run's fastest CPU read"}), costs)
    return limit_s(gpu_compute_s(graph, costs), weight_bytes, cap_bytes, bw, None, read_share(graph)) * 1e3, bw


def overlapped_cpu_bytes(over: float, gpu_compute_s: float, cpu_s: float, h2d_s: float) -> float:
    """The bytes (of ``over``, those over the cap) :func:`limit_s` leaves to the CPU, the
    rest streamed: where the chain ``c * cpu_s + gpu_compute_s`` (rising with ``c``) meets
    the stream ``(over - c) * h2d_s`` (falling), clamped to ``[0, over]`` -- the least of
    their max, the max being convex.  ``cpu_s`` / ``h2d_s``: seconds a byte."""
    meet = (over * h2d_s - gpu_compute_s) / (cpu_s + h2d_s)
    return min(float(over), max(0.0, meet))


def compute_limit_s(gpu_compute_s: float, weight_bytes: int, cap_bytes: int, bw: Bandwidths,
                    kernels: list[tuple[float, float, float, float]], read_share: float = 1.0,
                    iterations: int = 100) -> float:
    """:func:`limit_s` with the CPU's compute counted: the same placements (all on the CPU,
    or the GPU computing with the bytes over the cap streamed behind its compute or left
    to the CPU), but a kernel left to the CPU costs ``max(its bytes read / cpu, its CPU
    seconds)`` instead of its bytes at memory bandwidth, frees its weights from the GPU
    and takes its GPU seconds off the compute term.

    ``kernels``: ``(weight bytes, bytes one step reads, CPU seconds, GPU seconds)`` each
    (a kernel the GPU cannot run: its CPU seconds twice).  Any fraction of each weighted
    kernel may go to the CPU, so the value is the least ``max(T + G, S / h2d)`` of a
    linear programme (``T`` CPU seconds, ``G`` GPU compute left, ``S`` the read share of
    the bytes still over the cap; the chain and the stream beside it, as :func:`limit_s`
    since version 6), found through its dual over the weight ``lam`` of ``T + G`` against
    ``S / h2d`` (concave; ternary search, ``iterations`` steps).  Reduces to
    :func:`limit_s` when a CPU kernel costs its bytes over ``cpu`` and no GPU seconds.

    Why (bench/results/capped-bert-limit.md): at sequence 128 BERT-large's CPU computes an
    FFN matmul in 1.0 ms, 5.7x its 16.8 MB's read at 95.8 GB/s; the limit's CPU term
    priced 634 MB of matmul weights at 6.6 ms where computing them takes ~38 ms."""
    share = min(max(float(read_share), 0.0), 1.0)
    cpu_bw = bw.cpu_bytes_per_s
    cost = [max(r / cpu_bw, c) for _, r, c, _ in kernels]
    all_cpu = float(sum(cost))
    if bw.h2d_bytes_per_s is None:
        return all_cpu
    h2d = bw.h2d_bytes_per_s
    over = share * max(0, weight_bytes - cap_bytes) / h2d  # seconds of streaming with nothing on the CPU
    moves = [(t, g, share * w / h2d) for (w, _, _, g), t in zip(kernels, cost) if w > 0]

    def dual(lam: float) -> float:
        return lam * gpu_compute_s + (1 - lam) * over + sum(min(0.0, lam * (t - g) - (1 - lam) * s) for t, g, s in moves)

    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if dual(a) < dual(b):
            lo = a
        else:
            hi = b
    mixed = max(dual(lo), dual(hi), dual(0.0), dual(1.0))
    return min(all_cpu, mixed)


def cpu_compute_limit_s(graph, costs, cap_bytes: int, bw: Bandwidths, gpu_compute: float,
                        weight_bytes: int, read_share: float = 1.0) -> float:
    """:func:`compute_limit_s` of ``graph`` under ``cap_bytes``, each kernel's CPU seconds
    as timed with its weights cached (``costs.with_hot_weights()`` where there is one: the
    bandwidth term is ``bw``'s, the limit's) and its GPU seconds from ``costs``."""
    from ..costmodel.kernel_shape import weight_bytes_read
    from ..costmodel.profile_db import KernelFeatures
    from ..partitioner.problem import build_problem

    hot = costs.with_hot_weights() if hasattr(costs, "with_hot_weights") else costs
    problem = build_problem(graph, hot)
    rows = []
    for k in problem.order:
        kern, secs = graph.kernels[k], problem.seconds[k]
        cpu = secs.get("cpu", float("inf"))
        rows.append((kern.param_bytes, weight_bytes_read(KernelFeatures.of(kern)), cpu, secs.get("cuda", cpu)))
    return compute_limit_s(gpu_compute, weight_bytes, cap_bytes, bw, rows, read_share)


def read_share(graph) -> float:
    """The share of ``graph``'s weight bytes one inference reads
    (:func:`hetpart.costmodel.kernel_shape.weight_bytes_read`: a gather reads the rows
    it outputs, every other kernel all its weights); 1.0 without weights."""
    from ..costmodel.kernel_shape import weight_bytes_read
    from ..costmodel.profile_db import KernelFeatures

    total = sum(k.param_bytes for k in graph.nodes)
    read = sum(weight_bytes_read(KernelFeatures.of(k)) for k in graph.nodes)
    return read / total if total else 1.0


def precision_weight_bytes(graph, weight_bytes: int, precision) -> int:
    """The workload's weight bytes as the GPU holds them in ``precision``'s CUDA format:
    ``weight_bytes`` (the initializers, float32) less what storing each converted
    kernel's weights in that format saves, by the graph's own accounting
    (:func:`hetpart.importer.low_precision.param_bytes`, what the partitioner sizes
    the cap and the streams with).  Float32 and TF32: ``weight_bytes``.

    This is the one term of :func:`limit_s` a precision changes: its compute stays
    float32, so its GPU compute term is float32's (a bf16 kernel reads fewer weight
    bytes from GPU memory, which the bound does not credit: negligible beside the
    host-to-device stream it halves)."""
    from ..contracts.precision import coerce
    from ..importer.low_precision import param_bytes

    sizes = param_bytes(graph, coerce(precision).storage("cuda"))
    saved = sum(graph.kernels[k].param_bytes - size for k, size in sizes.items())
    return max(0, weight_bytes - saved)


def chain_bound_s(graph, costs, cap_bytes: int, bw: Bandwidths) -> float:
    """The chain bound of ``graph`` under ``cap_bytes`` (:mod:`hetpart.partitioner.chain_bound`:
    no placement the partitioner can make is predicted faster), with the copies at the
    run's measured host-to-device bandwidth where there is one (else the cost model's)."""
    from ..partitioner.chain_bound import chain_bound
    from ..partitioner.problem import build_problem

    return chain_bound(build_problem(graph, costs, (), cap_bytes, True), bw.h2d_bytes_per_s).seconds


def gpu_compute_s(graph, costs) -> float:
    """Seconds of every kernel on the GPU per the cost model (the CPU's where it cannot)."""
    from ..partitioner.problem import build_problem

    problem = build_problem(graph, costs)
    return sum(problem.seconds[k].get("cuda", problem.seconds[k]["cpu"]) for k in problem.order)


# ========================================================================================
# Where the costs come from
# ========================================================================================
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Coverage:
    """How many of a workload's kernels the cost model prices by prediction rather
    than a measurement, per device (``kernels``: the graph's kernel count)."""

    kernels: int
    predicted: dict[str, int]

    def describe(self) -> str:
        """``"cpu measured; cuda 447 of 450 predicted"``."""
        return "; ".join(f"{d} measured" if not n else f"{d} {n} of {self.kernels} predicted"
                         for d, n in self.predicted.items())


def coverage(graph, costs, devices: tuple[str, ...] = DEVICES) -> Coverage:
    """:class:`Coverage` of ``graph``'s kernels under ``costs`` on ``devices`` (a device
    the costs cannot price at all, no profile for it, is left out)."""
    predicted = {}
    for device in devices:
        try:
            predicted[device] = sum(bool(costs.is_predicted(k, device)) for k in graph.nodes)
        except HetpartError:
            continue
    return Coverage(len(graph.kernels), predicted)


def plan_predicted_kernels(plan, graph, costs) -> int:
    """How many of ``plan``'s kernels (of ``graph``) are priced by prediction on the
    device the plan runs them on (by the plan's own costs where it has them: they price
    a bf16 kernel as built)."""
    priced = plan.costs if plan.costs is not None else costs
    return sum(bool(priced.is_predicted(graph.kernels[k], device)) for k, device in plan.assignment.items())


def cold_weight_bandwidth(costs, bw: Bandwidths) -> tuple[float, str]:
    """``(bytes per second, where from)`` of the CPU's cold weight reads: the profile's
    measurement with the compiler's own GEMV chain where it has one
    (:meth:`hetpart.costmodel.CostModel.cold_weight_bandwidth`), else ``bw``'s torch sum.

    Why the profile first: the torch sum is one snapshot of another library's loop,
    taken at the start of the run.  On the H200 it read 66.4 GB/s in the run whose
    ORT-style plan then read its 2.34 GB of CPU weights at >= 100 GB/s; priced at 66.4,
    both memory rules were predicted 10-14 ms slow
    (bench/results/capped-pricing-nvidia-h200.md)."""
    measured = getattr(costs, "cold_weight_bandwidth", lambda device: None)("cpu")
    if measured:
        return float(measured), "profile: the compiler's GEMV over cold weights (weight_read_Bps)"
    return bw.cpu_bytes_per_s, f"this run's {bw.how.get('cpu', 'CPU read')}"


def limit_bandwidths(bw: Bandwidths, costs) -> Bandwidths:
    """``bw`` with the CPU's read bandwidth the faster of the run's torch sum and the
    profile's GEMV measurement (:func:`cold_weight_bandwidth`): the limit is a lower
    bound, so it takes the fastest rate measured.  (On the H200 the torch sum read
    66.4 GB/s and made the limit 31.65 ms, above the ORT-style rule's measured 24.70.)"""
    measured = getattr(costs, "cold_weight_bandwidth", lambda device: None)("cpu")
    if not measured or measured <= bw.cpu_bytes_per_s:
        return bw
    return Bandwidths(bw.h2d_bytes_per_s, float(measured), {**bw.how, "cpu": "the profile's GEMV over cold weights"})


def cold_weight_costs(costs, bw: Bandwidths, options: "Options"):
    """``costs`` with CPU weights read at least at :func:`cold_weight_bandwidth`
    (:meth:`hetpart.costmodel.CostModel.with_weight_bandwidth`) when
    ``options.cold_weights``; costs that cannot take a floor (a test's table) as they are."""
    if not hasattr(costs, "with_weight_bandwidth"):
        return costs
    if not options.cold_weights:  # --hot-weights: every kernel at its (cached) timing
        return costs.with_hot_weights()
    return costs.with_weight_bandwidth({"cpu": cold_weight_bandwidth(costs, bw)[0]})


def measure_by_default(simulate: bool) -> bool:
    """Whether a run measures its workloads' kernels before planning when not told:
    yes on a machine with a GPU (nothing is simulated), where the plans are timed."""
    from ..targets import cuda_available

    return not simulate and cuda_available()


# ========================================================================================
# Contenders
# ========================================================================================
@dataclass
class Options:
    """How to run: ``profile`` (None, a path or a Profile) or ``cost_model`` for the
    plans; ``simulate`` compiles CUDA partitions for the CPU (tests); ``deadline``
    (``time.monotonic()``) stops between contenders; ``bandwidth_bytes`` the buffer
    the bandwidths are measured with; ``measure``: before planning a workload, measure
    its kernels on both devices (few repeats) and the link into this machine's
    profile, so plans use this GPU's costs, not a recording's predictions (the front
    end's default where there is a GPU: :func:`measure_by_default`); ``cold_weights``:
    no CPU kernel is priced below reading its weights at the CPU's cold weight-read
    bandwidth (:func:`cold_weight_bandwidth`; the module docstring says why)."""

    settings: Settings = field(default_factory=Settings.quick)
    profile: object = None
    cost_model: object = None
    simulate: bool = False
    deadline: float = float("inf")
    bandwidth_bytes: int = 1 << 30
    measure: bool = False  # measure each workload's kernels (quick) into this machine's profile first
    cold_weights: bool = True  # CPU weights priced at the cold weight-read bandwidth at least
    progress: bool = False
    contenders: tuple[str, ...] = CONTENDERS  # which to run (a subset keeps a short call short)
    kernel_options: object = None  # KernelOptions of every build and measurement (None: the default)

    def costs(self, measured: bool = False):
        """The cost model the run plans with; ``measured``: after :func:`measure_kernels` wrote
        this machine's own profile (``profile`` None), that profile, whatever ``$HETPART_PROFILE``
        names (else the measurements would go unused: session 54's step 149 planned moe on 260 of
        261 predicted kernels so)."""
        if self.cost_model is not None:
            return self.cost_model
        from ..costmodel.locate import default_profile_path
        from ..partitioner.planning import cost_model_for

        if measured and self.profile is None:
            return cost_model_for(default_profile_path())
        return cost_model_for(self.profile)


@dataclass
class Record:
    workload: str
    cap_bytes: int
    contender: str
    ms: float | None
    predicted_ms: float | None
    limit_ms: float | None
    placement: str = ""
    skipped: str = ""
    note: str = ""
    precision: str = "fp32"  # PRECISIONS' label: "fp32" (float32 everywhere), "bf16" (GPU weights bf16), "bf16 both"
    rel_error: float | None = None  # max|out - ORT| / max|ORT| where checked (hetpart bf16)
    chain_bound_ms: float | None = None  # float32 records: :func:`chain_bound_s` under the cap
    cpu_compute_limit_ms: float | None = None  # float32 records: :func:`cpu_compute_limit_s` under the cap
    predicted_kernels: int | None = None  # plans: kernels priced by prediction (not measured) where they run
    # Version 7.  ``variant``: "" for a contender of :data:`CONTENDERS`; else what the record's plan or build
    # changes against hetpart's (an A/B's "hetpart before", "hetpart graphs": switches), its name kept as the A/B
    # named it.  ``source``: "" for this benchmark's run; else the run it came from (tools/capped_ab_records.py:
    # "capped_rules_ab <file>, <date>, ...").  ``host_gemv_gbps``: an A/B run's median CPU weight-read rate (the
    # compiler's GEMV over cold weights, measured between its rounds), None where not measured.
    variant: str = ""
    source: str = ""
    host_gemv_gbps: float | None = None

    def key(self) -> tuple:
        return (self.workload, self.cap_bytes, self.contender)


class Skip(Exception):
    """A contender cannot run here; the message says why."""


def plan_of_placement(prep: Prepared, costs, cap: int, placement: dict):
    """The latency Plan of ``placement`` (device or ``stream`` per kernel, as
    :func:`hetpart.partitioner.plan_report.placement_of` reads a plan's) under ``cap``,
    priced as the contenders' plans are: a decode step's caches bound as state, weights
    that do not fit streamed, the ring re-chosen by the evaluation.  For re-pricing a
    measured plan with other costs (tools/capped_pricing.py, tools/wake_predictions.py)."""
    from ..partitioner import plan_for_assignment
    from ..partitioner.problem import build_problem

    problem = build_problem(prep.graph, costs, (), cap, stream_weights=True, state=graph_state_pairs(prep.graph))
    return plan_for_assignment(problem, placement)


def _plan_contender(name: str, prep: Prepared, costs, cap: int):
    """The Plan contender ``name`` runs under ``cap`` (Skip if it has none)."""
    from ..errors import PlanError
    from ..partitioner import partition, plan_for_assignment
    from ..partitioner.baselines import BASELINES
    from ..partitioner.memory_rules import RULES
    from ..partitioner.problem import build_problem

    try:
        # issue 19: a decode step's caches priced as every plan's session keeps them
        # (open_stepping): on their writer's device, no host copy per step
        state = graph_state_pairs(prep.graph)
        if name == "hetpart":
            return partition(prep.graph, "latency", cost_model=costs, gpu_memory=cap, progress=False,
                             stream_weights=True, state=state)  # weights that do not fit may stream
        if name in RULE_OF:
            return _rule_plan_at(RULE_OF[name], PRECISIONS[name][1], prep, costs, cap, state)
        if name in PRECISIONS:  # the plan records its precision; compile() builds with it
            return partition(prep.graph, "latency", cost_model=costs, gpu_memory=cap, progress=False,
                             stream_weights=True, precision=PRECISIONS[name][1], state=state)
        problem = build_problem(prep.graph, costs, (), cap, state=state)
        a = BASELINES["all_cpu"](problem) if name == "hetpart all-CPU" else RULES[name](problem)
        if a is None:
            raise Skip(f"{name}: nothing fits under the cap")
        return plan_for_assignment(problem, a)
    except PlanError as exc:
        raise Skip(f"no plan: {exc}") from None


def _rule_plan_at(rule: str, precision: str, prep: Prepared, costs, cap: int, state):
    """The Plan memory rule ``rule`` makes for ``prep.graph`` with its weights in ``precision``
    (the weight bytes and kernel prices that precision gives, as :func:`hetpart.partition` plans
    with them), recording the precision so compile() builds with it.  Skip if nothing fits."""
    from ..contracts.precision import coerce
    from ..importer.low_precision import with_weight_bytes
    from ..partitioner import plan_for_assignment
    from ..partitioner.memory_rules import RULES
    from ..partitioner.precision_costs import with_precision
    from ..partitioner.problem import build_problem

    p = coerce(precision)
    graph = with_weight_bytes(prep.graph, p.storage("cuda"))
    problem = build_problem(graph, with_precision(costs, prep.graph, p), (), cap, state=state)
    a = RULES[rule](problem)
    if a is None:
        raise Skip(f"{rule} at {precision}: nothing fits under the cap")
    plan = plan_for_assignment(problem, a)
    plan.precision = p
    return plan


class Builds:
    """One :class:`~.builds.BuildCache` per precision (its key is the placement alone:
    a bf16 build must never stand in for the float32 build of the same placement), and
    each checked build's relative error against ONNX Runtime."""

    def __init__(self, graph, options: Options):
        self.graph, self.options = graph, options
        self.caches: dict[str, BuildCache] = {}
        self.errors: dict[tuple[str, str], float] = {}
        self.state_notes: dict[tuple[str, str], str] = {}  # open_stepping's note per build

    def cache(self, precision: str) -> BuildCache:
        if precision not in self.caches:
            self.caches[precision] = BuildCache(self.graph, simulate=self.options.simulate,
                                                kernel_options=self.options.kernel_options or DEFAULT)
        return self.caches[precision]

    def clear(self) -> None:
        for c in self.caches.values():
            c.clear()


def cpu_weight_bytes(label: str, weight_bytes: int, low_bytes: int) -> int:
    """The weight bytes the CPU reads for records of precision ``label`` (:data:`PRECISIONS`):
    ``low_bytes`` (the low format's, :func:`precision_weight_bytes`) where that precision
    stores the CPU's weights low too, else ``weight_bytes`` (float32).  In: byte counts."""
    from ..contracts.precision import coerce

    text = next((t for lab, t in PRECISIONS.values() if lab == label), None)
    return low_bytes if text is not None and coerce(text).cpu != "fp32" else weight_bytes


def precision_label(contender: str) -> str:
    """The record label of ``contender``'s precision: ``"bf16"`` for ``hetpart bf16``, ``"bf16 both"``
    for ``hetpart bf16 cpu-bf16`` (:data:`PRECISIONS`), ``"fp32"`` for every other contender."""
    return PRECISIONS[contender][0] if contender in PRECISIONS else "fp32"


def _time_plan(plan, name: str, prep: Prepared, builds: Builds, options: Options) -> tuple[float, str, float | None]:
    """Median seconds of ``plan`` in a Session; a placement already built and timed (the
    same as another contender's of the same precision) is measured once.  A low-precision
    contender's outputs are checked against ONNX Runtime's once per build:
    (seconds, note, relative error or None)."""
    precision = PRECISIONS[name][1] if name in PRECISIONS else "fp32"  # the build's formats, both devices
    build = builds.cache(precision).get(plan, name)
    key = (precision, build.name)
    if build.latency is None:
        session, feeds, builds.state_notes[key] = open_stepping(build.compiled, prep.feeds)
        with session:
            build.latency = time_calls(lambda: session.run(feeds), options.settings)
            if name in PRECISIONS:
                got = session.run(feeds)
                builds.errors[key] = rel_error(got, {k: v for k, v in reference(prep).items() if k in got})
    same = "" if build.plan_name == name else f"same placement as {build.plan_name}: measured once"
    note = "; ".join(filter(None, [same, builds.state_notes.get(key, "")]))
    return build.latency.median_s, note, builds.errors.get(key)


def state_pairs(compiled) -> dict[str, str]:
    """A decode step's cache pairs, output ``present.X`` -> input ``past.X`` (the zoo's
    ``llama_decode``): the state a Session keeps on its device between steps (issue 19:
    the cache never copied through the host); {} for a workload without them."""
    return _cache_pairs(compiled.model_output_names, {t.name for t in compiled.inputs})


def graph_state_pairs(graph) -> dict[str, str]:
    """:func:`state_pairs` of an op graph, before it is planned: what the hetpart
    contenders pass to ``partition(state=)``, so the plan prices the caches as the
    session will keep them."""
    return _cache_pairs(graph.model_output_names, set(graph.inputs))


def _cache_pairs(outputs, inputs) -> dict[str, str]:
    """``present.X`` -> ``past.X`` for every output so named whose input is in ``inputs``."""
    return {name: "past." + name[len("present."):] for name in outputs
            if name.startswith("present.") and "past." + name[len("present."):] in inputs}


def open_stepping(compiled, feeds: dict):
    """``(session, feeds, note)`` to time one step of ``compiled``: with its
    :func:`state_pairs` bound on their devices (``Session(state=)``, the cache feeds as
    the initial state, the step's feeds without them; note ``"caches on device"``),
    or, where the plan splits a cache's producer and readers across devices
    (:class:`~hetpart.errors.StateError`), a plain session fed through the host with
    the reason in the note.  A workload without pairs: a plain session, no note."""
    from ..errors import StateError
    from ..runtime import Session

    pairs = state_pairs(compiled)
    if not pairs:
        return Session(compiled), feeds, ""
    try:
        session = Session(compiled, state=pairs, initial_state={i: feeds[i] for i in pairs.values()})
    except StateError as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        return Session(compiled), feeds, f"caches through the host ({first})"
    step = {k: v for k, v in feeds.items() if k not in set(pairs.values())}
    return session, step, "caches on device"


def _peer_seconds(name: str, prep: Prepared, options: Options) -> float:
    from .peers import PEERS, PeerModel, PeerUnavailable

    w = prep.workload
    module, names = (None, list(prep.onnx_feeds))
    if name == "torch_cpu":
        if w.torch is None:
            raise Skip(w.torch_note or "no PyTorch twin")
        try:
            module, names = w.torch()
        except ImportError as exc:
            raise Skip(f"PyTorch not installed ({exc.name})") from None
    try:
        runner = PEERS[name].make(PeerModel(w.name, prep.onnx_model, names, module), options.simulate)
    except PeerUnavailable as exc:
        raise Skip(str(exc)) from None
    return time_calls(lambda: runner(prep.onnx_feeds), options.settings).median_s


def _accelerate_seconds(prep: Prepared, cap: int, options: Options) -> tuple[float, str]:
    """The workload's PyTorch module offloaded by accelerate under ``cap`` on GPU 0."""
    w = prep.workload
    if options.simulate:
        raise Skip("no GPU used under simulate")
    if w.torch is None:
        raise Skip(w.torch_note or "no PyTorch twin")
    try:
        import torch
        from accelerate import dispatch_model, infer_auto_device_map
    except ImportError as exc:
        raise Skip(f"{exc.name} not installed") from None
    if not torch.cuda.is_available():
        raise Skip("PyTorch sees no CUDA GPU")
    base, names = w.torch()
    module = copy.deepcopy(base).eval()  # dispatch_model hooks the module: keep the original clean
    no_split = sorted({c for m in module.modules() for c in (getattr(m, "_no_split_modules", None) or [])})
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    device_map = infer_auto_device_map(module, max_memory={0: cap, "cpu": host}, no_split_module_classes=no_split)
    module = dispatch_model(module, device_map=device_map)
    on_gpu = sum(1 for d in device_map.values() if d not in ("cpu", "disk"))
    note = f"{on_gpu} modules on the GPU, {len(device_map) - on_gpu} offloaded"
    # Inputs on the main device, as accelerate's users pass them: the model's own code
    # outside its hooked modules (masks, positions) must not mix CPU and GPU tensors.
    device = "cuda:0" if on_gpu else "cpu"

    def run():
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(prep.onnx_feeds[n])).to(device) for n in names]
            outs = module(*args)
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            return [o.cpu().numpy() for o in outs]

    try:
        return time_calls(run, options.settings).median_s, note
    finally:
        module = None  # the hooked copy's GPU memory goes back before the next contender  # noqa: F841
        torch.cuda.empty_cache()


# ========================================================================================
# The run
# ========================================================================================
def bench(names: list[str], caps: list[str], options: Options, export_dir: Path,
          done: set | None = None) -> Iterator[Record | dict]:
    """Records of every workload in ``names`` under every cap in ``caps``, as they come.

    Yields first a dict (the run's header: bandwidths, costs' origin), then Records.
    Stops (returns) when ``options.deadline`` has passed, between two contenders.
    ``done``: keys (:meth:`Record.key`) already recorded, skipped here.
    """
    done = done or set()
    costs = options.costs()
    bw = measure_bandwidths(options.bandwidth_bytes, costs)
    costs = cold_weight_costs(costs, bw, options)
    yield {"bandwidths": asdict(bw), "costs": cost_origin(costs), "measure": options.measure,
           "cold_weights": options.cold_weights and hasattr(costs, "with_weight_bandwidth")}
    for name in names:
        if _late(options):
            return
        try:
            prep = prepare(workload(name, export_dir))
        except (HetpartError, ImportError) as exc:  # this workload cannot run here; the next may
            yield {"workload": name, "skipped": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"}
            continue
        if options.measure:
            measure_kernels(prep.graph, options)
            costs = cold_weight_costs(options.costs(measured=True), bw, options)
        costs.add_graph(prep.graph)
        priced = coverage(prep.graph, costs)
        compute = gpu_compute_s(prep.graph, costs)
        share = read_share(prep.graph)
        cap_bytes = [parse_cap(c, prep.weight_bytes) for c in caps]
        # The GPU weight bytes of each precision a contender runs in (its limit's only change:
        # compute stays float32, so the compute term is float32's, :func:`precision_weight_bytes`).
        gpu_bytes = {"fp32": prep.weight_bytes} | {
            label: precision_weight_bytes(prep.graph, prep.weight_bytes, text)
            for label, text in (PRECISIONS[c] for c in options.contenders if c in PRECISIONS)}
        floor = getattr(costs, "weight_bandwidth", {}).get("cpu")
        yield {"workload": name, "weight_bytes": prep.weight_bytes, "gpu_compute_ms": compute * 1e3,
               "kernels": len(prep.graph.kernels), "predicted_kernels": priced.predicted, "read_share": share,
               "cold_weight_Bps": floor, "cold_weight_from": cold_weight_bandwidth(costs, bw)[1] if floor else None,
               **{f"{label.replace(' ', '_')}_gpu_weight_bytes": b for label, b in gpu_bytes.items() if label != "fp32"}}
        cap_free: dict[str, Record] = {}
        builds = Builds(prep.graph, options)
        for cap in cap_bytes:
            limits = {label: limit_s(compute, cpu_weight_bytes(label, prep.weight_bytes, b), cap,
                                     limit_bandwidths(bw, costs), b, share) * 1e3
                      for label, b in gpu_bytes.items()}
            limit = limits["fp32"]
            chain_ms = chain_bound_s(prep.graph, costs, cap, bw) * 1e3
            cpu_limit_ms = cpu_compute_limit_s(prep.graph, costs, cap, limit_bandwidths(bw, costs), compute,
                                               prep.weight_bytes, share) * 1e3
            for contender in (c for c in KNOWN if c in options.contenders):
                if (name, cap, contender) in done:
                    continue
                if _late(options):
                    return
                if contender in CAP_FREE and contender in cap_free:
                    r = copy.copy(cap_free[contender])
                    r.cap_bytes, r.limit_ms = cap, limit
                    r.note = "cap-independent: measured once per workload"
                else:
                    r = _measure(contender, prep, cap, limits[precision_label(contender)], costs, builds, options)
                    if contender in CAP_FREE:
                        cap_free[contender] = r
                if r.precision == "fp32":
                    r.chain_bound_ms, r.cpu_compute_limit_ms = chain_ms, cpu_limit_ms
                yield r
        builds.clear()


def measure_kernels(graph, options: Options) -> None:
    """Measure ``graph``'s kernels the profile lacks on both devices (few repeats), the
    CUDA kernels as each low-precision contender builds them (weights stored in its
    format: other kernels, which the cost model would otherwise only predict), and the
    link if the profile has none, into this machine's profile (needs a GPU); with
    ``options.cold_weights`` also the CPU's cold weight-read bandwidth where the profile
    lacks it (:func:`measure_weight_read_into`)."""
    from ..contracts.precision import coerce
    from ..costmodel import measure_transfers, profile
    from ..costmodel.kernel_bench import MeasureSettings
    from ..costmodel.profiler import open_profile
    from ..importer.low_precision import LOW_DTYPES, lower_weights

    quick, kopts = MeasureSettings.quick(), options.kernel_options or DEFAULT
    prof = profile(graph, ("cpu", "cuda"), options.profile, settings=quick, progress=options.progress, options=kopts)
    wanted = {(d, coerce(PRECISIONS[c][1]).storage(d)) for c in options.contenders if c in PRECISIONS
              for d in ("cuda", "cpu")}
    for device, fmt in sorted(wanted):
        if fmt in LOW_DTYPES:
            low = lower_weights(graph, list(graph.kernels), fmt)
            prof = profile(low, (device,), prof, settings=quick, progress=options.progress, options=kopts,
                           label=f"{graph.name}:{device}={LOW_DTYPES[fmt]}")
    if prof.transfers is None:
        prof = open_profile(prof)
        prof.transfers = measure_transfers(progress=options.progress)
        prof.save()
    if options.cold_weights and measure_weight_read_into(prof):
        prof.save()


def measure_weight_read_into(prof) -> bool:
    """:func:`hetpart.costmodel.profiler.ensure_weight_read`: the CPU's cold weight-read
    bandwidth into ``prof`` where it lacks it; True when it measured."""
    from ..costmodel.profiler import ensure_weight_read

    return ensure_weight_read(prof)


def _measure(contender: str, prep: Prepared, cap: int, limit_ms: float, costs, builds,
             options: Options) -> Record:
    r = Record(prep.workload.name, cap, contender, None, None, limit_ms, precision=precision_label(contender))
    try:
        if contender in ("onnxruntime_cpu", "torch_cpu"):
            r.ms = _peer_seconds(contender, prep, options) * 1e3
        elif contender == "accelerate":
            seconds, r.note = _accelerate_seconds(prep, cap, options)
            r.ms = seconds * 1e3
        else:
            from .harness import placement

            plan = _plan_contender(contender, prep, costs, cap)
            r.predicted_ms = float(plan.predicted["latency_s"]) * 1e3
            r.placement = placement(plan)
            r.predicted_kernels = plan_predicted_kernels(plan, prep.graph, costs)
            seconds, r.note, r.rel_error = _time_plan(plan, contender, prep, builds, options)
            r.ms = seconds * 1e3
            if r.rel_error is not None and not r.rel_error <= BF16_TOLERANCE:
                r.note = "; ".join(filter(None, [r.note, f"WRONG: outputs off by {r.rel_error:.2e} of the largest "
                                                          f"ONNX Runtime value (tolerance {BF16_TOLERANCE:g})"]))
    except Skip as exc:
        r.skipped = str(exc)
    except HetpartError as exc:
        r.skipped = f"failed: {str(exc).splitlines()[0][:300]}"
    except Exception as exc:  # noqa: BLE001 - one broken contender must not lose the table
        r.skipped = f"failed (bug?): {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    return r


def _late(options: Options) -> bool:
    return time.monotonic() > options.deadline


# ========================================================================================
# Results file and table
# ========================================================================================
def new_results(gpu: str) -> dict:
    return {"schema": SCHEMA, "version": VERSION, "gpu": gpu, "limit": LIMIT, "chain": CHAIN,
            "compute_limit": COMPUTE_LIMIT, "runs": [],
            "workloads": {},
            "records": []}


def load_results(path: Path, gpu: str) -> dict:
    """The results at ``path`` (any version of :data:`READS`, brought to this one: a
    version-1 record is float32), else new ones."""
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA and data.get("version") in READS:
            for r in data["records"]:
                if data["version"] < 6:  # the old limits, not lower bounds: kept under their own names
                    r["serial_limit_ms"] = r.pop("limit_ms", None)
                    r["serial_cpu_compute_limit_ms"] = r.pop("cpu_compute_limit_ms", None)
                    r["limit_ms"] = None
                r.setdefault("precision", "fp32")
                r.setdefault("rel_error", None)
                r.setdefault("chain_bound_ms", None)
                r.setdefault("cpu_compute_limit_ms", None)
                r.setdefault("predicted_kernels", None)
                r.setdefault("variant", "")
                r.setdefault("source", "")
                r.setdefault("host_gemv_gbps", None)
            data["version"] = VERSION
            data.setdefault("chain", CHAIN)
            data.setdefault("compute_limit", COMPUTE_LIMIT)
            return data
    return new_results(gpu)


def add(results: dict, item: Record | dict) -> None:
    """Put one item :func:`bench` yielded into ``results`` (a record replaces its key's)."""
    if isinstance(item, Record):
        rec = asdict(item)
        results["records"] = [r for r in results["records"] if _key(r) != item.key()] + [rec]
    elif "workload" in item:
        results["workloads"][item["workload"]] = {k: v for k, v in item.items() if k != "workload"}
    else:
        results["runs"].append(item)


def _key(r: dict) -> tuple:
    return (r["workload"], r["cap_bytes"], r["contender"])


def save(path: Path, results: dict) -> None:
    """The JSON (atomically) and the markdown table beside it."""
    from ..contracts.jsonfile import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown(results))


LOW = ("bf16",)  # the low precisions with a limit column in every table (an opt-in one's: where it has records)


def markdown(results: dict) -> str:
    """One row per workload and cap, one column per contender (ms; ``–`` skipped; a
    checked record off by more than :data:`BF16_TOLERANCE` marked ``wrong``), the
    float32 limit and each low precision's (``bf16 limit ms``)."""
    from ..importer.summary import human_bytes

    shown = CONTENDERS + tuple(c for c in OPT_IN if any(r["contender"] == c for r in results["records"]))
    low = LOW + tuple(dict.fromkeys(PRECISIONS[c][0] for c in shown if c in PRECISIONS and PRECISIONS[c][0] not in LOW))
    head = ["workload", "cap", "limit ms", *(f"{p} limit ms" for p in low), "limit + CPU compute ms",
            "chain bound ms", *shown,
            *(f"{c} predicted ms" for c in shown if c == "hetpart" or c in PRECISIONS)]
    rows = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    by_row: dict[tuple, dict] = {}
    for r in results["records"]:
        by_row.setdefault((r["workload"], r["cap_bytes"]), {})[r["contender"]] = r
    notes = [f"{wl}: {info['skipped']}" for wl, info in results.get("workloads", {}).items() if info.get("skipped")]
    errors = []
    for (wl, cap), recs in sorted(by_row.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        cells = [wl, human_bytes(cap), *(_ms(_limit(recs, p)) for p in ("fp32", *low)),
                 *(_ms(next((r[f] for r in recs.values() if r.get(f) is not None), None))
                   for f in ("cpu_compute_limit_ms", "chain_bound_ms"))]
        for c in shown:
            r = recs.get(c)
            cells.append("" if r is None else _ms(r["ms"]) + _wrong(r))
            if r is not None and r.get("skipped"):
                notes.append(f"{wl} @ {human_bytes(cap)}, {c}: {r['skipped']}")
            if r is not None and r.get("rel_error") is not None:
                errors.append(f"{wl} @ {human_bytes(cap)}, {c}: {r['rel_error']:.2e}")
        cells += [_ms((recs.get(c) or {}).get("predicted_ms")) for c in shown if c == "hetpart" or c in PRECISIONS]
        rows.append("| " + " | ".join(cells) + " |")
    runs = results.get("runs") or [{}]
    bw = runs[-1].get("bandwidths") or {}
    gbs = lambda v: "–" if v is None else f"{v / 1e9:.1f} GB/s"  # noqa: E731
    text = (f"# Bigger than the GPU: capped GPU memory ({results['schema']} v{results['version']}, "
            f"{results.get('gpu', '?')})\n\n"
            f"Median ms per inference. `limit ms`: {results['limit']}. Bandwidths measured: host-to-device "
            f"{gbs(bw.get('h2d_bytes_per_s'))}, CPU memory read {gbs(bw.get('cpu_bytes_per_s'))}"
            f"{' (the last run: ' + runs[-1]['source'] + ')' if runs[-1].get('source') else ''}. "
            f"Costs: {runs[-1].get('costs', '?')}. {results.get('compute_limit', COMPUTE_LIMIT)}. "
            f"{results.get('chain', CHAIN)}. Written by `bench/capped.py`.\n\n")
    text += "\n".join(rows) + "\n"
    if errors:
        text += (f"\n`hetpart bf16`: CUDA weights held and streamed in bfloat16 (`cuda=bf16,cpu=fp32`), compute "
                 f"float32; `bf16 limit ms` counts the bytes it holds and streams. Outputs against ONNX Runtime "
                 f"float32, max|error| / max|reference| (right at most {BF16_TOLERANCE:g}):\n\n"
                 + "\n".join(f"* {e}" for e in errors) + "\n")
    guessed = [f"{wl}: {Coverage(info.get('kernels', 0), info['predicted_kernels']).describe()}"
               for wl, info in results.get("workloads", {}).items()
               if any((info.get("predicted_kernels") or {}).values())]
    if guessed:
        text += ("\nKernels priced by prediction, not measured (plans and limits of these workloads rest on "
                 "guesses; `--profile quick` measures them):\n\n" + "\n".join(f"* {g}" for g in guessed) + "\n")
    if notes:
        text += "\nSkipped:\n\n" + "\n".join(f"* {n}" for n in sorted(set(notes))) + "\n"
    return text + _ab_notes(results["records"])


def _ab_notes(records: list[dict]) -> str:
    """The markdown of records from A/B runs (``source``) and of variants (not a column):
    where each row's cells came from, and the variants' times beside them; "" without any."""
    order = lambda r: (r["workload"], -r["cap_bytes"], r["contender"])  # noqa: E731
    sourced = sorted((r for r in records if r.get("source") and r["contender"] in CONTENDERS), key=order)
    variants = sorted((r for r in records if r["contender"] not in KNOWN), key=order)
    if not sourced and not variants:
        return ""
    from ..importer.summary import human_bytes

    def line(r: dict) -> str:
        gemv = "" if r.get("host_gemv_gbps") is None else f", host GEMV {r['host_gemv_gbps']:.1f} GB/s"
        return (f"* {r['workload']} @ {human_bytes(r['cap_bytes'])}, `{r['contender']}`: {_ms(r['ms'])} ms "
                f"(predicted {_ms(r.get('predicted_ms'))}{gemv}); {r.get('source') or 'this benchmark'}"
                + (f"; {r['note']}" if r.get("note") else ""))

    text = ""
    if sourced:
        text += ("\nCells from interleaved A/B runs (tools/capped_rules_ab.py: the median of its rounds' medians, "
                 "tools/capped_ab_records.py):\n\n" + "\n".join(line(r) for r in sourced) + "\n")
    if variants:
        text += ("\nVariants (not a column: hetpart with other switches, named as their A/B named them):\n\n"
                 + "\n".join(line(r) + f"; variant: {r.get('variant') or '?'}" for r in variants) + "\n")
    return text


def _limit(recs: dict, precision: str) -> float | None:
    """The limit of the row's records of ``precision`` (records before version 2: fp32)."""
    return next((r["limit_ms"] for r in recs.values()
                 if r.get("limit_ms") is not None and r.get("precision", "fp32") == precision), None)


def _wrong(r: dict) -> str:
    err = r.get("rel_error")
    return " (wrong)" if err is not None and not err <= BF16_TOLERANCE and r.get("ms") is not None else ""


def _ms(v) -> str:
    return "–" if v is None else f"{v:.2f}"
