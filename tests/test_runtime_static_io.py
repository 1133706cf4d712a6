"""CUDA graphs over a partition's inputs and outputs (compiler.extract.STATIC_IO_CUDA_GRAPHS).

A CUDA partition of a streaming plan is built with every parameter fixed (``num_input``
0), so TVM captures the kernels reading its inputs and writing its outputs too, and a
graph replays the addresses of its VM's first call.  The runtime keeps one VM per
distinct set of argument addresses (handoff slot x state parity x ring slot), meets them
all in the session's capture runs and then refuses a new set (InternalError, never a
stale pointer).  In simulation the bookkeeping is the product's (no graph is captured on
the CPU); the ``cuda``-marked test runs a small llama_decode with its KV cache bound,
streamed, for several steps on a GPU against onnx.reference:

    PYTHONPATH=. python -m pytest tests/test_runtime_static_io.py -q -m cuda
"""

from __future__ import annotations

import contextlib
import functools
import importlib

import numpy as np
import pytest

from hetpart import compiler, importer, kernels, models
from hetpart.kernels import static_graphs
from hetpart.errors import InternalError
from hetpart.runtime import Session

from streaming_plans import plan_with_devices

EXTRACT = importlib.import_module("hetpart.compiler.extract")  # the module (compiler.extract is its function)


@pytest.fixture(autouse=True)
def _switch_on(monkeypatch):
    """The switch under test, on (its default; set here so a run with it turned off still tests it)."""
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", True)

# embedding etc. on the CPU, then four CUDA partitions: three streamed through two slots
# (each meets both slots: two ring phases), the last (the tail) resident
DEVICES = ["cpu", "cuda", "cuda", "cuda", "cuda"]


@functools.lru_cache(maxsize=1)
def _llama():
    """The small llama_decode, its import and its state pairs: built once for the file (nothing
    here changes a model or a graph; each test plans and extracts its own)."""
    model = models.build("llama_decode", small=True)
    pairs = {o.name: o.name.replace("present.", "past.") for o in model.graph.output if o.name.startswith("present.")}
    return model, importer.load(model), pairs


def _plan(graph):
    plan = plan_with_devices(graph, DEVICES, streamed=True, slots=2)
    plan.partitions[-1].weights = "resident"
    return plan


def _steps(n, first=0):
    return [{"input_ids": np.array([[3 + 5 * k % 60]], np.int64), "position": np.array([k], np.int64)}
            for k in range(first, first + n)]


def _reference_steps(model, steps, pairs, state):
    """onnx.reference's steps, each bound output fed back as its input through numpy."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    state, results = dict(state), []
    for feeds in steps:
        out = dict(zip(names, ref.run(None, {**feeds, **state})))
        results.append(out)
        state = {inp: out[o] for o, inp in pairs.items()}
    return results, state


# --- compiler --------------------------------------------------------------------------
def test_cuda_partitions_of_a_streaming_plan_fix_every_parameter_under_the_switch(monkeypatch):
    _, graph, _ = _llama()
    plan = _plan(graph)

    def built():
        return {p.name: (p.cuda_graph, p.static_io, p.slot_graphs) for p in compiler.extract(graph, plan)}

    # on: every CUDA partition with graphs and fixed parameters (the streamed ones with weights last)
    assert built() == {"p0_cpu": (True, False, False), "p1_cuda": (True, True, True), "p2_cuda": (True, True, True),
                       "p3_cuda": (True, True, True), "p4_cuda": (True, True, False)}
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", False)  # before: resident ones only, inputs not captured
    assert built() == {"p0_cpu": (True, False, False), "p1_cuda": (False, False, False),
                       "p2_cuda": (False, False, False), "p3_cuda": (False, False, False),
                       "p4_cuda": (True, False, False)}
    monkeypatch.setattr(EXTRACT, "STATIC_IO_CUDA_GRAPHS", True)
    monkeypatch.setattr(EXTRACT, "STREAMING_CUDA_GRAPHS", False)  # no graphs in a plan that streams at all
    assert not any(g or s for g, s, _ in built().values())
    resident = plan_with_devices(graph, DEVICES, streamed=False)  # a plan that does not stream: as before
    assert not any(p.static_io for p in compiler.extract(graph, resident))


def test_a_layer_is_one_graph_with_every_parameter_fixed():
    """Built for sm_90 here (no GPU needed): with every parameter fixed, a decode layer's
    streamed partition launches no kernel outside a captured region in ``main_dps``
    (without: 0 captured of its 11 launches), and the tail likewise (TVM's rewrite needs
    :func:`hetpart.kernels.static_graphs.hoist_static_storage` for it, else the VM codegen fails), each
    launch's result in a register (:func:`hetpart.kernels.static_graphs.keep_graph_launch_results`)."""
    from hetpart.compiler.extract import slot_graph_signature, static_io_signature
    from hetpart.targets import cuda_tvm_target

    _, graph, _ = _llama()
    programs = compiler.extract(graph, _plan(graph))
    for prog in (programs[1], programs[4]):  # a streamed layer; the resident tail (one output, an alias)
        assert prog.static_io
        lift = static_io_signature(prog, slot_graph_signature(prog) if prog.slot_graphs else None)
        text = kernels.build(prog.module, cuda_tvm_target("sm_90"), cuda_graph=True, lift=lift).as_text()
        launches = _calls(text, "main_dps")
        assert "vm.builtin.cuda_graph.run_or_capture" in text and launches == [], (prog.name, launches)
        # every graph launch's result in a register, none in the void one (device step 116's failure)
        void = [ln for ln in text.splitlines() if "cuda_graph.run_or_capture in:" in ln and ln.endswith("%void")]
        assert void == [], (prog.name, void)


def _calls(text: str, function: str) -> list[str]:
    """The kernels ``function`` of a VM executable's text launches itself (not its builtins)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("@"):
            inside = line[1:].rstrip(":") == function
        elif inside and line.strip().startswith("call") and "vm.builtin" not in line:
            out.append(line.split()[1])
    return out


def test_static_io_signature_sets_num_input_zero():
    from hetpart.compiler.extract import static_io_signature

    _, graph, _ = _llama()
    prog = compiler.extract(graph, _plan(graph))[4]
    mod = static_io_signature(prog)(prog.module)
    for name in ("main", "main_dps"):
        if name in [gv.name_hint for gv in mod.get_global_vars()]:
            assert int(mod[name].attrs["num_input"]) == 0



# --- TVM's CUDA-graph rewrite run on the CPU ---------------------------------------------------
_GRAPH_BUILTINS = ("vm.builtin.cuda_graph.run_or_capture", "vm.builtin.cuda_graph.get_cached_alloc")


@contextlib.contextmanager
def _cpu_graph_builtins():
    """Python stand-ins for the VM's CUDA-graph builtins, restored after: a launch's first
    call runs the captured function through the VM (``vm.builtin.invoke_closure``, the path
    TVM's ``run_or_capture`` takes) and keeps its arguments and result; a later call runs it
    again with the kept arguments (a graph replays the addresses it captured)."""
    import tvm
    import tvm_ffi

    invoke, kept = tvm.get_global_func("vm.builtin.invoke_closure"), {}

    def run_or_capture(vm, func, args, index, *_shape):
        if index not in kept:
            kept[index] = (list(args), invoke(vm, func, *args))
        else:
            invoke(vm, func, *kept[index][0])
        return kept[index][1]

    def get_cached_alloc(vm, func, index):
        if ("alloc", index) not in kept:
            kept["alloc", index] = invoke(vm, func)
        return kept["alloc", index]

    before = {n: tvm_ffi.get_global_func(n, allow_missing=True) for n in _GRAPH_BUILTINS}
    for name, f in zip(_GRAPH_BUILTINS, (run_or_capture, get_cached_alloc)):
        tvm_ffi.register_global_func(name, f, override=True)
    try:
        yield
    finally:
        for name, f in before.items():
            if f is None:
                tvm_ffi.remove_global_func(name)
            else:
                tvm_ffi.register_global_func(name, f, override=True)


def _cpu_build_with_graphs(mod):
    """``mod`` built for llvm through TVM's CPU pipeline with ``RewriteCUDAGraph`` after memory
    planning and hetpart's passes around it (:func:`hetpart.kernels.static_graphs.static_graph_passes`)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    target = tvm.target.Target("llvm")
    finalize = []
    for p in cpu.finalize_passes(target):
        finalize.append(p)
        if p.info.name == "StaticPlanBlockMemory":
            finalize.append(relax.transform.RewriteCUDAGraph())

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(m, _ctx):
        with target:
            return tvm.transform.Sequential(cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                                            + cpu.dataflow_lower_passes(target)
                                            + static_graphs.static_graph_passes(finalize))(m)

    with tvm.transform.PassContext(opt_level=3, config={"relax.backend.use_cuda_graph": True}):
        return tvm.compile(mod, target, relax_pipeline=pipeline)


def _tiny_dps():
    """``main_dps(x, out)``, every parameter fixed: ``out = 2 * x + x`` (a temporary, then an
    in-place write), the region TVM captures writing only parameters: it returns nothing."""
    from tvm import relax, te

    def prim(name, *tensors):
        return te.create_prim_func(list(tensors)).with_attr("global_symbol", name)

    a, c = te.placeholder((4,), "float32", "a"), te.placeholder((4,), "float32", "c")
    double = prim("double", a, te.compute((4,), lambda i: a[i] * 2.0, "b"))
    add_into = prim("add_into", a, c, te.compute((4,), lambda i: a[i] + c[i], "o"))
    bb, t = relax.BlockBuilder(), relax.TensorType((4,), "float32")
    x, out = relax.Var("x", t), relax.Var("out", t)
    with bb.function("main_dps", [x, out], {"num_input": 0}):
        with bb.dataflow():
            y = bb.emit(relax.call_tir(bb.add_func(double, "double"), (x,), out_ty=t))
            z = bb.emit(relax.call_tir_inplace(bb.add_func(add_into, "add_into"), (y, x, out), [2], out_ty=t))
            gv = bb.emit_output(z)
        bb.emit_func_output(gv)
    return bb.get()


@pytest.mark.parametrize("keep", [False, True])
def test_a_launch_capturing_only_parameter_writes_runs_in_the_vm(monkeypatch, keep):
    """Device step 116's failure on the CPU: TVM's rewrite of a function writing only its
    parameters launches a region returning nothing; the VM codegen sends that launch's
    result to the void register and the captured function's ``Ret`` writes it there on the
    first call ("Check failed: reg < frame->register_file.size()").  With
    :func:`hetpart.kernels.static_graphs.keep_graph_launch_results` it has a register: first call
    (capture) and second (replay) right."""
    import tvm
    from tvm import relax

    monkeypatch.setattr(static_graphs, "KEEP_GRAPH_LAUNCH_RESULTS", keep)
    ex = _cpu_build_with_graphs(_tiny_dps())
    launch = [ln for ln in ex.as_text().splitlines() if "cuda_graph.run_or_capture in:" in ln]
    assert len(launch) == 1 and launch[0].endswith("dst: %void") != keep, launch
    x = np.arange(4, dtype="float32")
    with _cpu_graph_builtins():
        vm = relax.VirtualMachine(ex, tvm.cpu())
        xt, out = tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros(4, "float32"))
        if not keep:
            with pytest.raises(tvm.error.InternalError, match="register_file"):
                vm["main_dps"](xt, out)
            return
        for k in range(2):
            out.copyfrom(np.zeros(4, "float32"))
            vm["main_dps"](xt, out)
            np.testing.assert_array_equal(out.numpy(), 3 * x, err_msg=f"call {k}")



def test_a_decode_layer_with_graphs_over_every_parameter_runs_right_in_the_vm():
    """The small llama_decode's streamed layer and resident tail, every parameter fixed, built
    for the CPU through TVM's CUDA-graph rewrite and hetpart's passes around it, called
    twice (capture, then replay with new values in the same buffers) with the graph builtins'
    stand-ins: every output equals the build without the rewrite's."""
    import tvm
    from tvm import relax

    from hetpart.compiler.extract import slot_graph_signature, static_io_signature

    _, graph, _ = _llama()
    rng = np.random.default_rng(0)
    for prog in compiler.extract(graph, _plan(graph))[1::3]:  # p1 (streamed), p4 (the tail)
        mod = static_io_signature(prog, slot_graph_signature(prog) if prog.slot_graphs else None)(prog.module)
        plain = tvm.compile(prog.module, "llvm")
        graphs = _cpu_build_with_graphs(mod)
        assert "cuda_graph.run_or_capture" in graphs.as_text()
        params = [p for p in mod["main_dps"].params]
        base = [p for p in prog.module["main_dps"].params]

        def value(p):
            t = p.ty
            shape = [int(d) for d in t.shape]
            dtype = str(t.dtype)
            return (rng.random(shape) < 0.5) if dtype == "bool" else rng.standard_normal(shape).astype(dtype)

        with _cpu_graph_builtins():
            vm = relax.VirtualMachine(graphs, tvm.cpu())
            bound = {p.name: tvm.runtime.tensor(value(p)) for p in params}
            for k in range(2):
                for p in params:
                    bound[p.name].copyfrom(value(p))
                want = {p.name: tvm.runtime.tensor(bound[p.name].numpy()) for p in base}
                relax.VirtualMachine(plain, tvm.cpu())["main_dps"](*[want[p.name] for p in base])
                vm["main_dps"](*[bound[p.name] for p in params])
                for p in params:
                    np.testing.assert_allclose(bound[p.name].numpy(), want[p.name].numpy(), rtol=1e-5, atol=1e-6,
                                               err_msg=f"{prog.name} {p.name} call {k}")


# --- runtime, simulated ----------------------------------------------------------------------
_BUILT: dict = {}


def _compiled(graph):
    if "model" not in _BUILT:
        _BUILT["model"] = compiler.compile(_plan(graph), simulate=True, progress=False)
    return _BUILT["model"]


def test_capture_runs_meet_every_address_set_then_seal(monkeypatch):
    """The session's capture runs (forced in simulation) call each fixed-parameter partition
    with every handoff slot x state parity x ring slot, restore the state, and seal the
    runners; steps inline, submitted and pipelined then meet no new set of addresses and
    equal onnx.reference's steps; a call with other addresses raises InternalError."""
    model, graph, pairs = _llama()
    monkeypatch.setattr(Session, "_needs_capture_run", lambda self: True)
    init = {p: v for p, v in models.example_inputs(model, seed=3).items() if p in pairs.values()}
    steps = _steps(6)
    want, _ = _reference_steps(model, steps, pairs, init)
    with Session(_compiled(graph), state=pairs, initial_state=init) as s:
        assert s.state.steps == 0 and s.state.parity == 0 and s.last_run_stats is None
        for name, value in init.items():  # the capture runs wrote both buffers: restored
            np.testing.assert_array_equal(s.read_state(name), value)
        sets = s.address_sets
        assert set(sets) == {"p1_cuda", "p2_cuda", "p3_cuda", "p4_cuda"}
        # 2 handoff slots x 2 parities, x 2 ring slots where streamed: no more than that
        assert all(1 <= n <= (8 if name != "p4_cuda" else 4) for name, n in sets.items()), sets
        assert max(sets.values()) > 2, sets  # the slots and parities were met
        runners = {st.name: st.runner for st in s._stages}
        assert all(runners[n].sealed for n in sets)
        got = [s.run(steps[0]), s.run(steps[1])]
        got += [f.result() for f in [s.submit(steps[2]), s.submit(steps[3])]]
        got += s.run_pipelined(steps[4:6])
        for k, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(g["logits"], w["logits"], rtol=2e-3, atol=2e-3, err_msg=f"step {k}")
        assert s.address_sets == sets, "a run met addresses its capture runs had not"
        import tvm

        runner = runners["p4_cuda"]
        stray = [tvm.runtime.tensor(np.zeros(tuple(t.shape), t.dtype)) for t in runner.artifact.inputs]
        with pytest.raises(InternalError, match="capture runs never met"):
            runner._io_vm(0, stray, [], [])


def test_unsealed_runners_key_vms_by_addresses():
    """Without capture runs (simulation) a fixed-parameter runner still keeps one VM per set
    of addresses (a set met again reuses its VM) and stays unsealed; results are right."""
    model, graph, pairs = _llama()
    init = {p: v for p, v in models.example_inputs(model, seed=4).items() if p in pairs.values()}
    steps = _steps(5)
    want, _ = _reference_steps(model, steps, pairs, init)
    with Session(_compiled(graph), state=pairs, initial_state=init) as s:
        for k, step in enumerate(steps):
            np.testing.assert_allclose(s.run(step)["logits"], want[k]["logits"], rtol=2e-3, atol=2e-3)
        runners = {st.name: st.runner for st in s._stages}
        assert not any(r.sealed for r in runners.values())
        # five serial steps: slots and parities alternate together, streamed ones meet 2 ring slots
        assert all(2 <= n <= 4 for n in s.address_sets.values()), s.address_sets
        for r in runners.values():
            if r.static_io:
                assert len(r._vms) == r.address_sets


# --- on a GPU ---------------------------------------------------------------------------------
@pytest.mark.cuda
def test_static_io_graphs_step_a_streamed_decoder_right_on_gpu():
    """STATIC_IO_CUDA_GRAPHS on the GPU: the small llama_decode, embedding on
    the CPU, three streamed layer partitions through two ring slots and a resident tail,
    its KV caches bound on the GPU; the session captures every (handoff slot, parity, ring
    slot) set of addresses when it opens.  Eight steps (inline, submitted two at a time,
    pipelined), every step's logits and caches against onnx.reference's: a graph replaying
    a stale pointer reads another step's cache or token, or another slot's weights."""
    from hetpart.kernels.options import KernelOptions

    model, graph, pairs = _llama()
    compiled = compiler.compile(_plan(graph), progress=False, options=KernelOptions(tf32=False))
    flags = {p.name: (p.cuda_graph, p.static_io) for p in compiled.partitions if p.device == "cuda"}
    assert all(f == (True, True) for f in flags.values()), flags
    init = {p: v for p, v in models.example_inputs(model, seed=5).items() if p in pairs.values()}
    steps = _steps(8)
    want, final = _reference_steps(model, steps, pairs, init)

    def check(out, k):
        np.testing.assert_allclose(out["logits"], want[k]["logits"], rtol=2e-3, atol=2e-3, err_msg=f"step {k}")

    with Session(compiled, state=pairs, initial_state=init) as s:
        sets = s.address_sets
        assert set(sets) == set(flags) and max(sets.values()) > 2, sets
        assert s.state.steps == 0
        for name, value in init.items():
            np.testing.assert_array_equal(s.read_state(name), value)
        for k in range(3):
            check(s.run(steps[k]), k)
        futures = [s.submit(steps[3]), s.submit(steps[4])]
        for k, f in zip((3, 4), futures):
            check(f.result(), k)
        for k, out in zip(range(5, 8), s.run_pipelined(steps[5:8])):
            check(out, k)
        assert s.address_sets == sets
        for name, value in final.items():
            np.testing.assert_allclose(s.read_state(name), value, rtol=2e-3, atol=2e-3, err_msg=name)


def test_a_partition_whose_static_build_fails_is_built_as_before(monkeypatch):
    """A TVM failure of the build over every parameter (a form hoist_static_storage does not
    cover) falls back to the build without (static_io False): compiling never fails for it."""
    from hetpart.compiler import build as compiler_build
    from hetpart.errors import CompileError

    def failing(program, inner=None):
        def lift(mod):
            raise CompileError("simulated RewriteCUDAGraph failure")
        return lift

    monkeypatch.setattr(compiler_build, "static_io_signature", failing)
    model, graph, pairs = _llama()
    built = compiler.compile(_plan(graph), simulate=True, progress=False)
    assert not any(p.static_io for p in built.partitions)
    init = {p: v for p, v in models.example_inputs(model, seed=6).items() if p in pairs.values()}
    steps = _steps(2)
    want, _ = _reference_steps(model, steps, pairs, init)
    with Session(built, state=pairs, initial_state=init) as s:
        for k, step in enumerate(steps):
            np.testing.assert_allclose(s.run(step)["logits"], want[k]["logits"], rtol=2e-3, atol=2e-3)
