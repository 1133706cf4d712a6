"""Issue 19, device probe: a weight-heavy CUDA kernel reading its weights from device memory,
from mapped pinned host memory (zero copy), or after a whole copy from pinned host memory.

    PYTHONPATH=. python3 tools/gpu_mapped_weights_probe.py --json OUT.json        # ~1-2 min on an H100
    PYTHONPATH=. python tools/gpu_mapped_weights_probe.py --simulate --small      # no GPU: CPU target, host memory
    PYTHONPATH=. python tools/gpu_mapped_weights_probe.py --build-only            # no GPU: the sm_90 builds only

Two kernels, each built alone by hetpart's own build (:func:`hetpart.kernels.build` with its
rules, as :func:`hetpart.costmodel.kernel_bench.single_kernel_module` cuts it from the model):

* ``moe_expert``: zoo moe's first expert projection with the expert Gather fused
  (:data:`hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER`): ``x [1,1,1,1024] @ W[ids]``,
  ``W [8, 1024, 2816]`` (92.3 MB), top-2 ids (two distinct experts), rule ``GpuGatheredGemv``:
  a call reads 2/8 of the table (23.1 MB);
* ``decode_gemv``: zoo llama_decode's MLP up projection ``x [1,1,2048] @ W [2048, 5632]``
  (46.1 MB), a dense decode GEMV reading every byte once.

Each is timed with its weight

* ``resident``: in device memory (``tvm.runtime.tensor``);
* ``mapped``: in pinned host memory (``cudaHostAlloc``, mapped) bound through its mapped
  device pointer (:meth:`hetpart.runtime.memory.CudaMemory.mapped`): the kernel reads it
  over PCIe, each row it reads crossing once;
* ``mapped_wc``: the same in write-combined pinned memory (``cudaHostAllocWriteCombined``: not
  cached on the host, which the weights never need; the GPU's reads of it may go faster);
* ``copied``: in pinned host memory, copied whole into one device buffer on the kernel's
  stream before each call (today's streaming: ``runtime.weight_stream``'s refill), the copy
  timed with the call.

So that no call finds its weights in the L2 (50 MB), there are ``--copies`` distinct weight
copies per mode and a call reads the next one.  ``resident`` and ``mapped`` are timed as one
VM call of a module calling the kernel ``--calls`` times on the copies in turn (few host
turns: a resident expert GEMV takes ~10 us, about one Python-level VM call); ``copied`` as
``--copies`` pairs (copy, call) from Python.  Each mode: ``--sweeps`` sweeps after one
unrecorded, the least per call.  Per mode the JSON gives ``us`` (per call), ``gbs`` (the
bytes the call actually reads, ``read_bytes``: the chosen experts' rows, or the whole dense
weight, over ``us``) and for ``copied`` also ``copy_gbs`` (whole weight bytes over ``us``).

Checked on every run: the three modes give the same output on the same values (``equal``:
bit for bit, one kernel on the same bytes; ``max_abs_diff``), and the resident output against
numpy (``ref_rel_err``: max |out - ref| / max |ref|, float64 reference), inputs with
negatives and zeros.  The kernels are built without CUDA graphs (a graph would replay the
first call's weight pointers).

``--set module.ATTR=value`` holds a hetpart switch for the whole probe (a rule's constant, e.g.
``hetpart.kernels.rules.gpu_gathered_gemv.COLUMNS=32``: wider rows a warp over PCIe).
``--simulate``: the CPU target and :class:`~hetpart.runtime.memory.SimulatedMemory` (a mapped
view is the host buffer itself, a copy ``np.copyto``): the whole probe but the CUDA calls,
for CI; its times mean nothing.  ``--small``: narrow widths (CI).  Without a GPU and without
``--simulate``: one line naming the problem (:class:`hetpart.errors.NoGPUError`), exit 1.

JSON (``--json``): ``{"schema": "hetpart-mapped-weights-probe", "version": 1, "device",
"simulated", "settings", "kernels": [{"name", "spec", "kernel", "func", "rule",
"weight_bytes", "read_bytes", "ids", "modes": {"resident" | "mapped" | "mapped_wc" | "copied":
{"us", "gbs", "samples_us", ["copy_gbs"]}}, "equal", "max_abs_diff": {"mapped", "mapped_wc", "copied"},
"ref_rel_err"}], "elapsed_s"}``.  Results: bench/results/capped-mapped-weights.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCHEMA = "hetpart-mapped-weights-probe"
VERSION = 1
MODES = ("resident", "mapped", "mapped_wc", "copied")

MOE_SPEC = "zoo:moe:layers=1,vocab=1000"
"""One full-width layer of zoo moe: its expert projections are the 8-layer model's."""
DECODE_SPEC = "zoo:llama_decode:layers=1,vocab=1000"
"""One full-width layer of zoo llama_decode: its MLP GEMVs are the 22-layer model's."""
SMALL = {"moe_expert": "zoo:moe:layers=1,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=100",
         "decode_gemv": "zoo:llama_decode:layers=1,hidden=64,heads=4,kv_heads=2,intermediate=160,cache_len=16,"
                        "vocab=100"}
"""``--small``: the same kernels at narrow widths (CI)."""


@dataclass
class Case:
    """One kernel to probe: ``kmod`` (inputs, then weights), its op graph kernel and what a call reads."""

    name: str
    spec: str
    kernel: object
    kmod: object


def pick(name: str, spec: str) -> Case:
    """The kernel of ``spec`` the probe times as ``name``: the first fused expert projection
    (``moe_expert``: its op :data:`~hetpart.importer.expert_matmul.OP` alone, no epilogue), or
    the largest plain dense matmul (``decode_gemv``); HetpartError when there is none."""
    from hetpart import load, models
    from hetpart.costmodel import kernel_bench
    from hetpart.errors import HetpartError
    from hetpart.importer.expert_matmul import OP

    model, small, cfg = models.parse_zoo_spec(spec)
    graph = load(models.build(model, small, **cfg))
    kernels = sorted(graph.kernels.values(), key=lambda k: k.index)
    if name == "moe_expert":
        found = [k for k in kernels if tuple(k.ops) == (OP,)]
    else:
        found = sorted((k for k in kernels if tuple(k.ops) == ("matmul",) and k.param_bytes),
                       key=lambda k: (-k.param_bytes, k.index))
    if not found:
        raise HetpartError(f"{spec} has no kernel to probe as {name} (is the expert Gather fused?)")
    k = found[0]
    return Case(name, spec, k, kernel_bench.single_kernel_module(graph, k))


def repeated_module(kmod, calls: int, copies: int):
    """A module whose ``main(*inputs, *weights_0, ..., *weights_{copies-1})`` calls ``kmod``'s
    kernel ``calls`` times, call ``i`` on weights ``i % copies``, returning every output (so
    none is dead code); ``num_input`` = the inputs."""
    from tvm import relax

    main = kmod.mod["main"]
    (call,) = [b.value for blk in main.body.blocks for b in blk.bindings]
    n = kmod.num_inputs
    old = list(main.params)

    def var(name, spec):
        return relax.Var(name, relax.TensorType(list(spec.shape), spec.dtype))

    inputs = [var(f"in{i}", s) for i, s in enumerate(kmod.args[:n])]
    weights = [[var(f"w{c}_{i}", s) for i, s in enumerate(kmod.args[n:])] for c in range(copies)]
    bb = relax.BlockBuilder()
    gv = bb.add_func(kmod.mod[call.args[0]], call.args[0].name_hint)
    with bb.function("main", inputs + [w for ws in weights for w in ws]):
        with bb.dataflow():
            outs = []
            for i in range(calls):
                swap = dict(zip(old, inputs + weights[i % copies]))
                fields = [swap[a] for a in call.args[1].fields]
                outs.append(bb.emit(relax.Call(call.op, [gv, relax.Tuple(fields), *call.args[2:]], call.attrs,
                                               call.ty_args)))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    mod = bb.get()
    mod["main"] = mod["main"].with_attr("num_input", n)
    return mod


def build(mod, target, dev):
    """``(main, pack)`` of ``mod`` built by hetpart's one build without CUDA graphs (a graph
    would replay its first call's weight pointers), in a VM on ``dev``: ``pack`` turns one
    copy's weights (numpy) into what ``main`` takes, through ``main_transform_params`` where
    the build repacks them (CPU panels), as the compiled model stores them."""
    import tvm
    from tvm import relax

    from hetpart import kernels
    from hetpart.costmodel.kernel_bench import _has_function
    from hetpart.kernels.weight_prepack import TRANSFORM_PARAMS

    vm = relax.VirtualMachine(kernels.build(mod, target, cuda_graph=False), dev)
    transform = vm[TRANSFORM_PARAMS] if _has_function(vm, TRANSFORM_PARAMS) else None

    def pack(weights: list) -> list:
        if transform is None:
            return weights
        return [t.numpy() for t in transform([tvm.runtime.tensor(w, dev) for w in weights])]

    return vm["main"], pack


def rule_of(kmod, target) -> str:
    from hetpart import kernels

    return ",".join(sorted(set(kernels.rules_applied(kernels.schedule(kmod.mod, target)).values()))) or "none"


# --- values ----------------------------------------------------------------------------
def values(kmod, rng) -> tuple[list, list]:
    """``(inputs, weights)`` as numpy arrays: floats normal with every 7th zero (negatives
    and zeros), ids distinct along their last axis (each token's choices two experts)."""
    out = []
    for spec in kmod.args:
        if spec.value is not None:
            out.append(spec.value)
        elif "int" in spec.dtype:
            bound = spec.index_bound or 1
            rows = [rng.choice(bound, size=spec.shape[-1], replace=spec.shape[-1] > bound)
                    for _ in range(int(np.prod(spec.shape[:-1], dtype=np.int64)))]
            out.append(np.array(rows, dtype=spec.dtype).reshape(spec.shape))
        else:
            a = (rng.standard_normal(spec.shape) * (0.05 if spec.weight else 1.0)).astype(spec.dtype)
            a.reshape(-1)[::7] = 0
            out.append(a)
    n = kmod.num_inputs
    return out[:n], out[n:]


def reference(case: Case, inputs: list, weights: list) -> np.ndarray:
    """The kernel's output in float64: ``x @ W`` (dense) or per token and choice
    ``x @ W[id]`` (gathered, out ``[b, choice, 1, N]``)."""
    x = inputs[0].astype(np.float64)
    w = weights[0].astype(np.float64)
    if case.name == "decode_gemv":
        return x @ w
    ids = inputs[1]
    b = x.shape[0]
    return np.stack([np.stack([x[t, 0] @ w[ids[t, c]] for c in range(ids.shape[1])]) for t in range(b)])


def read_bytes(case: Case, inputs: list, weights: list) -> int:
    """Bytes of weights one call reads: the distinct chosen experts' tables (gathered), or all."""
    w = weights[0]
    if case.name == "decode_gemv":
        return w.nbytes
    return w.nbytes * len(np.unique(inputs[1])) // w.shape[0]


# --- where the weights live --------------------------------------------------------------
class Backend:
    """The probe's memory and device: a real GPU (:class:`CudaMemory`) or simulation."""

    def __init__(self, simulate: bool):
        import tvm

        from hetpart.runtime.memory import CudaMemory, SimulatedMemory

        self.simulated = simulate
        self.memory = SimulatedMemory() if simulate else CudaMemory()
        self.dev = tvm.cpu(0) if simulate else tvm.cuda(0)
        self._wc: list[int] = []  # write-combined pinned buffers (freed by close)

    def resident(self, arr: np.ndarray):
        import tvm

        return tvm.runtime.tensor(arr, self.dev)

    def pinned(self, arr: np.ndarray, name: str):
        from hetpart.compiler.artifact import TensorSpec

        buf = self.memory.pinned(TensorSpec(name, arr.shape, str(arr.dtype)))
        np.copyto(buf.array, arr)
        return buf

    def mapped(self, buf):
        """A tensor the kernel reads ``buf``'s pinned bytes through (zero copy)."""
        return self.memory.mapped(buf).tensor

    def mapped_wc(self, arr: np.ndarray):
        """A ``cuda`` tensor over a write-combined mapped pinned copy of ``arr`` (simulated: a
        host copy, as :meth:`mapped` has it)."""
        if self.simulated:
            return self.mapped(self.pinned(arr, "write-combined"))
        import ctypes

        from hetpart.runtime import cuda_api
        from hetpart.runtime.dlpack import tensor_view

        ptr = cuda_api.host_alloc(max(arr.nbytes, 1), mapped=True, write_combined=True)
        self._wc.append(ptr)
        ctypes.memmove(ptr, np.ascontiguousarray(arr).ctypes.data, arr.nbytes)  # written once, never read here
        return tensor_view(cuda_api.host_device_pointer(ptr), arr.shape, str(arr.dtype), device="cuda", owner=self)

    def slot(self, arr: np.ndarray, name: str):
        from hetpart.compiler.artifact import TensorSpec

        return self.memory.device(TensorSpec(name, arr.shape, str(arr.dtype)))

    def copy(self, dst, src) -> None:
        """Enqueue ``src`` (pinned) -> ``dst`` (device) on the kernels' stream (the default)."""
        if self.simulated:
            np.copyto(dst.array, src.array)
            return
        from hetpart.runtime import cuda_api

        cuda_api.memcpy_async(dst.ptr, src.ptr, src.nbytes, cuda_api.H2D, 0)

    def sync(self) -> None:
        self.dev.sync()

    def name(self) -> str:
        if self.simulated:
            return "simulated (cpu)"
        import tvm

        return str(tvm.cuda(0).device_name)

    def close(self) -> None:
        self.memory.close()
        if self._wc:
            from hetpart.runtime import cuda_api

            for ptr in self._wc:
                cuda_api.host_free(ptr)
            self._wc = []


def probe(case: Case, backend: Backend, target, copies: int, calls: int, sweeps: int, seed: int = 0) -> dict:
    """One kernel's row (module docstring)."""
    rng = np.random.default_rng(seed)
    inputs, w0 = values(case.kmod, rng)
    copies_w = [w0] + [[(rng.standard_normal(w.shape) * 0.05).astype(w.dtype) for w in w0] for _ in range(copies - 1)]
    many, pack_many = build(repeated_module(case.kmod, calls, copies), target, backend.dev)
    one, pack = build(repeated_module(case.kmod, 1, 1), target, backend.dev)
    packed = [pack(ws) for ws in copies_w]  # the bytes bound: as the compiled model stores them
    # ``many``'s weight arguments: the copies in turn, or (repacked: CPU only) its own packing of them
    packed_many = pack_many([w for ws in copies_w for w in ws])
    ins = [backend.resident(a) for a in inputs]
    resident = [backend.resident(w) for w in packed_many]
    pinned_many = [backend.pinned(w, f"{case.name} weight {i}") for i, w in enumerate(packed_many)]
    mapped = [backend.mapped(b) for b in pinned_many]
    mapped_wc = [backend.mapped_wc(w) for w in packed_many]
    pinned = [[backend.pinned(w, f"{case.name} copy {c} weight {i}") for i, w in enumerate(ws)]
              for c, ws in enumerate(packed)]
    slots = [backend.slot(w, f"{case.name} slot {i}") for i, w in enumerate(packed[0])]

    def sweep_many(weights):
        def run():
            many(*ins, *weights)
        return run, calls

    def sweep_copied():
        def run():
            for bs in pinned:
                for dst, src in zip(slots, bs):
                    backend.copy(dst, src)
                one(*ins, *[s.tensor for s in slots])
        return run, copies

    timed = {"resident": sweep_many(resident), "mapped": sweep_many(mapped), "mapped_wc": sweep_many(mapped_wc),
             "copied": sweep_copied()}
    samples = {m: [] for m in MODES}
    for m, (run, _) in timed.items():  # one unrecorded sweep each: lazy loads, pages touched
        run()
        backend.sync()
    for _ in range(sweeps):
        for m, (run, n) in timed.items():
            t0 = time.perf_counter()
            run()
            backend.sync()
            samples[m].append((time.perf_counter() - t0) / n * 1e6)
    nread = read_bytes(case, inputs, w0)
    whole = sum(w.nbytes for w in packed[0])
    modes = {}
    for m, s in samples.items():
        us = min(s)
        modes[m] = {"us": us, "gbs": nread / us / 1e3, "samples_us": [round(x, 2) for x in s]}
    modes["copied"]["copy_gbs"] = whole / modes["copied"]["us"] / 1e3

    def out(weights):
        r = one(*ins, *weights)
        backend.sync()
        return (r[0] if len(r) == 1 else r).numpy()

    res = out([backend.resident(w) for w in packed[0]])
    got = {"mapped": out([backend.mapped(b) for b in pinned[0]]),
           "mapped_wc": out([backend.mapped_wc(w) for w in packed[0]])}
    for dst, src in zip(slots, pinned[0]):
        backend.copy(dst, src)
    got["copied"] = out([s.tensor for s in slots])
    ref = reference(case, inputs, w0)
    return {"name": case.name, "spec": case.spec, "kernel": case.kernel.id, "func": case.kernel.func,
            "rule": rule_of(case.kmod, target), "weight_bytes": whole, "read_bytes": nread,
            "ids": inputs[1].tolist() if case.name == "moe_expert" else None, "modes": modes,
            "equal": all(np.array_equal(res, g) for g in got.values()),
            "max_abs_diff": {m: float(np.max(np.abs(res - g))) for m, g in got.items()},
            "ref_rel_err": float(np.max(np.abs(res - ref.reshape(res.shape))) / (np.max(np.abs(ref)) or 1.0))}


def describe(row: dict) -> str:
    m = row["modes"]
    s = (f"{row['name']:<12} {row['rule']:<16} {row['weight_bytes'] / 1e6:6.1f} MB "
         f"(reads {row['read_bytes'] / 1e6:5.1f})")
    for mode in MODES:
        s += f" | {mode} {m[mode]['us']:8.1f} us {m[mode]['gbs']:7.1f} GB/s"
    return s + f" | copy {m['copied']['copy_gbs']:.1f} GB/s | equal {row['equal']} ref {row['ref_rel_err']:.1e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the results here (schema hetpart-mapped-weights-probe)")
    ap.add_argument("--simulate", action="store_true", help="no GPU: the CPU target and host memory (CI)")
    ap.add_argument("--small", action="store_true", help="narrow widths (CI)")
    ap.add_argument("--only", choices=("moe_expert", "decode_gemv"), action="append", help="one kernel (repeatable)")
    ap.add_argument("--moe-spec", default=MOE_SPEC)
    ap.add_argument("--decode-spec", default=DECODE_SPEC)
    ap.add_argument("--copies", type=int, default=8, help="distinct weight copies a sweep reads in turn (> L2)")
    ap.add_argument("--calls", type=int, default=32, help="calls per VM call (resident, mapped)")
    ap.add_argument("--sweeps", type=int, default=5)
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--set", dest="switches", action="append", default=[], metavar="module.ATTR=value",
                    help="a hetpart switch held for the whole probe (repeatable), e.g. "
                         "hetpart.kernels.rules.gpu_gathered_gemv.COLUMNS=32")
    ap.add_argument("--build-only", action="store_true",
                    help="no GPU needed: build each kernel's modules for --arch and print its rule")
    args = ap.parse_args(argv)
    from hetpart.bench.switches import switched
    from hetpart.errors import HetpartError

    try:
        with switched(args.switches):
            return _run(args)
    except HetpartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from hetpart.contracts.jsonfile import write_json
    from hetpart.errors import NoGPUError
    from hetpart.targets import cpu_tvm_target, cuda_available, cuda_tvm_target

    if args.build_only:
        return build_only(args)
    if not args.simulate and not cuda_available():
        raise NoGPUError("tools/gpu_mapped_weights_probe.py needs a CUDA GPU (none is usable here); "
                         "--simulate runs it on the CPU")
    t0 = time.time()
    target = cpu_tvm_target() if args.simulate else cuda_tvm_target(args.arch)
    specs = {"moe_expert": args.moe_spec, "decode_gemv": args.decode_spec}
    if args.small:
        specs = dict(SMALL)
    backend = Backend(args.simulate)
    rows = []
    try:
        for name in args.only or list(specs):
            row = probe(pick(name, specs[name]), backend, target, args.copies, args.calls, args.sweeps)
            rows.append(row)
            print(describe(row), flush=True)
            if args.json:
                _write(write_json, args, backend, rows, t0)
    finally:
        backend.close()
    if args.json:
        _write(write_json, args, backend, rows, t0)
    return 0 if all(r["equal"] for r in rows) else 1


def build_only(args) -> int:
    """Each kernel's two modules (``--calls`` calls, one call) built for ``--arch``; one line each."""
    from hetpart import kernels
    from hetpart.targets import cuda_tvm_target

    target = cuda_tvm_target(args.arch)
    specs = dict(SMALL) if args.small else {"moe_expert": args.moe_spec, "decode_gemv": args.decode_spec}
    for name in args.only or list(specs):
        case = pick(name, specs[name])
        for calls, copies in ((args.calls, args.copies), (1, 1)):
            kernels.build(repeated_module(case.kmod, calls, copies), target, cuda_graph=False)
        print(f"{name}: {case.kernel.id} {case.kernel.func} rule {rule_of(case.kmod, target)}, "
              f"{case.kernel.param_bytes / 1e6:.1f} MB of weights, built for {args.arch}", flush=True)
    return 0


def _write(write_json, args, backend, rows, t0) -> None:
    settings = {k: getattr(args, k) for k in ("copies", "calls", "sweeps", "arch", "small", "switches")}
    write_json(args.json, SCHEMA, VERSION, {"device": backend.name(), "simulated": backend.simulated,
                                            "settings": settings, "kernels": rows,
                                            "elapsed_s": round(time.time() - t0, 1)})


if __name__ == "__main__":
    raise SystemExit(main())
