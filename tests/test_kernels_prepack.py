"""Tests of compile-time weight packing (hetpart.kernels.weight_prepack), the CPU
rules' choices around it, and the strided-copy parallel threshold.

The packing moves a copy from run time to compile time; these tests check that it
happened (no packing call left in the compiled program, the weight constant already
in panels), that results are unchanged, that a single-kernel benchmark module packs
its weight parameters once before timing, and the two bugs found on the way (a
transposed weight at int32 shapes was never packed; marking weights copied public
functions into clashing duplicates).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, te

from host_isa import is_x86

from hetpart import kernels
from hetpart.costmodel import kernel_bench
from hetpart.costmodel.overhead_bench import chain_module
from hetpart.importer.fusion import fuse
from hetpart.kernels import weight_prepack
from hetpart.kernels.rules import CpuInjective, CpuMatmul
from hetpart.kernels.analysis import runs_on_host
from hetpart.targets import cpu_tvm_target, host_triple

op = relax.op
CPU = cpu_tvm_target()


def _dense_module(m=64, k=96, n=128, *, transposed=False, seed=0):
    """Fused ``x @ W + b`` (``W`` a constant; stored [n, k] when ``transposed``)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k) if transposed else (k, n)).astype("float32")
    b = rng.standard_normal(n).astype("float32")
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            wt = op.permute_dims(relax.const(w)) if transposed else relax.const(w)
            out = bb.emit_output(bb.emit(op.add(bb.emit(op.matmul(x, wt)), relax.const(b))))
        bb.emit_func_output(out)
    xv = rng.standard_normal((m, k)).astype("float32")
    want = xv @ (w.T if transposed else w) + b
    return fuse(bb.get()), xv, want, bb.get()


def _run(exe, *args):
    return relax.VirtualMachine(exe, tvm.cpu())["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


@pytest.mark.parametrize("transposed", [False, True])
def test_weights_are_packed_at_compile_time_and_results_unchanged(transposed):
    mod, x, want, _ = _dense_module(transposed=transposed)
    scheduled = weight_prepack.split_and_fold(kernels.schedule(weight_prepack.mark_weights(mod), CPU), CPU)
    names = [gv.name_hint for gv in scheduled.get_global_vars()]
    assert not any(n.endswith(weight_prepack.PREPACK_SUFFIX) for n in names), names  # folded away
    assert any(n.endswith("_prepacked") for n in names)
    consts = []
    relax.analysis.post_order_visit(scheduled["main"].body,
                                    lambda e: consts.append(e) if isinstance(e, tvm.ir.GenericConst) else None)
    assert any(c.value.numpy().ndim == 3 for c in consts)  # the weight, as [n / width, k, width] panels
    np.testing.assert_allclose(_run(kernels.build(mod, CPU), x), want, rtol=1e-4, atol=1e-4)


def test_building_leaves_the_callers_module_unchanged():
    # build() used to set layout_free_buffers on the PrimFuncs of the module it was given
    # (an op graph's): a later build then saw other functions than the tuning database
    # recorded, and the graph's kernels changed under it.
    mod, _, _, _ = _dense_module()
    before = {gv.name_hint: f for gv, f in mod.functions_items()}
    kernels.build(mod, CPU)
    assert all(mod[name].same_as(f) for name, f in before.items())
    assert len(list(mod.functions_items())) == len(before)


def test_transposed_weight_at_int32_shapes_is_packed_by_the_matmul_rule():
    # te gives int32 shapes: the packing index map used to be built int64 and failed to
    # invert, so the matmul rule raised and a slow reduction schedule took the kernel.
    a = te.placeholder((64, 96), name="A")
    b = te.placeholder((128, 96), name="B")
    k = te.reduce_axis((0, 96), name="k")
    c = te.compute((64, 128), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="C")
    assert CpuMatmul().apply(te.create_prim_func([a, b, c]), CPU) is not None


def test_marking_weights_keeps_functions_and_names():
    mod = chain_module(3)  # a public PrimFunc ("tiny"), called with no weight
    marked = weight_prepack.mark_weights(mod)
    assert sorted(gv.name_hint for gv in marked.get_global_vars()) == sorted(gv.name_hint for gv in mod.get_global_vars())
    assert kernels.build(mod, CPU) is not None


def test_single_kernel_benchmark_packs_weight_parameters_once():
    _, _, _, raw = _dense_module()
    graph = _graph_of(raw)
    (kernel,) = [kk for kk in graph.nodes if "matmul" in kk.func]
    km = kernel_bench.single_kernel_module(graph, kernel)
    assert km.num_inputs == 1 and [s.weight for s in km.args] == [False, True, True]
    exe = kernels.build(km.mod, CPU)
    inputs = kernel_bench.prepared_inputs(km, exe, tvm.cpu())
    assert inputs[1].shape != km.args[1].shape  # the weight, packed by main_transform_params
    raw = [a.numpy() for a in kernel_bench.random_inputs(km, tvm.cpu())]
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](*inputs).numpy()
    np.testing.assert_allclose(got, raw[0] @ raw[1] + raw[2], rtol=1e-4, atol=1e-4)


def _graph_of(raw):
    from hetpart.importer.fusion import fuse_with_ops
    from hetpart.importer.op_graph_builder import build_op_graph

    return build_op_graph("dense", *fuse_with_ops(raw))


def _copy_func(shape, perm):
    x = te.placeholder(shape, name="x")
    out_shape = [shape[p] for p in perm]
    y = te.compute(out_shape, lambda *i: x[tuple(i[perm.index(d)] for d in range(len(shape)))], name="y")
    return te.create_prim_func([x, y])


def test_strided_copies_run_in_parallel_from_fewer_outputs():
    # BERT's K^T: [1,128,12,64] -> [1,12,64,128], 96 Ki floats read one per cache line.
    strided = _copy_func((1, 128, 12, 64), [0, 2, 3, 1])
    contiguous = _copy_func((1, 128, 12, 64), [0, 2, 1, 3])  # the head split: rows of 64
    assert "T.parallel" in CpuInjective().apply(strided, CPU).mod["main"].script()
    assert "T.parallel" not in CpuInjective().apply(contiguous, CPU).mod["main"].script()


# --- in-place calls (a partition's main_dps) ------------------------------------------
def _ffn_partition(m=128, k=256, n=512):
    """The partition program of ``relu(x @ W)`` alone: the GEMM produces the partition's
    output, so ``main_dps`` calls it with ``call_tir_inplace``."""
    from onnx import TensorProto, helper, numpy_helper

    from hetpart import importer
    from hetpart.compiler.extract import extract
    from hetpart.partitioner import Partition, Plan

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["y"])], "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, n])], [numpy_helper.from_array(w, "w")])
    g = importer.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    kids = g.topological_order()
    part = Partition("p0_cuda", "cuda", kids)
    plan = Plan(model=g.name, objective="test", assignment={kid: "cuda" for kid in kids}, partitions=[part],
                cuts=[], timeline=[], predicted={}, profile_origin="test", graph=g)
    (program,) = extract(g, plan)
    assert program.dps
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    return program.module, x, np.maximum(x @ w, 0)


def _in_place_targets(mod) -> list:
    """The PrimFuncs ``main_dps`` calls in place."""
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.call_tir_inplace":
            found.append(mod[e.args[0]])
    relax.analysis.post_order_visit(mod["main_dps"].body, visit)
    return found


@pytest.mark.parametrize("target, shape", [("cpu", (64, 96, 128)),
                                           ("sm_90", (128, 768, 3072))])  # a grid the tensor-core rule takes
def test_in_place_calls_read_the_packed_weight_not_a_packing_block(target, shape):
    """main_dps called the unsplit kernel, packing block and all: on a GPU build that
    block became host code reading a device pointer (BERT-base under a 160 MiB cap
    segfaulted on the H200); on the CPU it repacked the weight on every call."""
    from hetpart.kernels.analysis import contains
    from hetpart.kernels.register_tile import LAYOUT_REWRITE_PREPROC
    from hetpart.targets import cuda_tvm_target

    mod, _, _ = _ffn_partition(*shape)
    tgt = CPU if target == "cpu" else cuda_tvm_target(target)
    host = CPU if target == "cpu" else tvm.target.Target(weight_prepack.HOST_TARGET)
    out = weight_prepack.split_and_fold(kernels.schedule(weight_prepack.mark_weights(mod), tgt), host)
    assert any(gv.name_hint.endswith("_prepacked") for gv in out.get_global_vars()), "no packing: no subject"
    called = _in_place_targets(out)
    assert called, "the GEMM is not called in place: the test lost its subject"
    for func in called:
        assert not contains(func.body, s_tir.SBlock, lambda b: LAYOUT_REWRITE_PREPROC in b.annotations)
    assert not any(gv.name_hint.endswith(weight_prepack.PREPACK_SUFFIX) for gv in out.get_global_vars())


def test_in_place_call_of_a_packed_kernel_gives_the_numpy_result():
    mod, x, want = _ffn_partition(64, 96, 128)
    exe = kernels.build(mod, CPU)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = tvm.runtime.tensor(np.full(want.shape, np.nan, np.float32))
    vm["main_dps"](tvm.runtime.tensor(x), out)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), want, rtol=1e-4, atol=1e-4)


def _ffn_model(m=128, k=768, n=3072):
    """LayerNorm -> relu(x @ W1) -> (. @ W2) + x: at BERT-base's sizes the middle GEMM
    is one the tensor-core rule packs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "g"),
             numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b"),
             numpy_helper.from_array((rng.standard_normal((k, n)) * 0.03).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((n, k)) * 0.03).astype(np.float32), "w2")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "w1"], ["up"]), helper.make_node("Relu", ["up"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["down"]), helper.make_node("Add", ["down", "x"], ["y"])]
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, k])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # ORT 1.2x reads <= 13


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True])
def test_gpu_gemm_between_cpu_partitions_matches_onnxruntime(streamed, tmp_path):
    """The plan shape that segfaulted: a TF32 GEMM alone on the GPU, its input from and
    its output to CPU partitions (main_dps calls it in place)."""
    import onnxruntime as ort

    import hetpart
    from hetpart import compiler, importer
    from streaming_plans import plan_with_devices

    model = _ffn_model()
    g = importer.load(model)
    plan = plan_with_devices(g, ["cpu", "cuda", "cpu"], streamed=streamed)
    cm = compiler.compile(plan, g, progress=False)
    x = np.random.default_rng(1).standard_normal((1, 128, 768)).astype(np.float32)
    x[0, 0, :4] = [0.0, -0.0, -3.0, 1e4]
    with hetpart.Session(cm) as s:
        got = s.run({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-2


# x86 CPUs and the /proc/cpuinfo flags a host needs to run code built for them.
_CPU_NEEDS = {"haswell": ("avx2", "fma"), "skylake-avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
              "cascadelake": ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni")}


@pytest.mark.skipif(not is_x86(), reason="x86 CPUs named: the host is not x86")
@pytest.mark.parametrize("cpu", sorted(_CPU_NEEDS))
def test_a_cross_build_packs_its_weights_with_code_the_host_runs(cpu):
    """``kernels.build`` packs constant weights by running the packing here: for a CPU the
    host lacks (``skylake-avx512`` on an AVX2 host) it ran the target's AVX-512 code and
    the process died of SIGILL (test_kernels' build-only tests for skylake-avx512).  The
    packing now runs with code the host runs (the target where the host has its ISA,
    read independently from /proc/cpuinfo), the packed panels are the weight's columns
    as numpy has them, the kernels keep the target's ISA (zmm registers for AVX-512),
    and where the host runs it the build gives numpy's result."""
    from host_isa import host_has

    target = tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": cpu, "num-cores": 4})
    runs_here = all(host_has(f) for f in _CPU_NEEDS[cpu])
    assert runs_on_host(target) is runs_here
    packing = weight_prepack.packing_target(target)
    assert runs_on_host(packing) and (packing.same_as(target) if runs_here else str(packing.attrs.get("mcpu", "")) == "")
    mod, x, want, _ = _dense_module(seed=0)
    w = np.random.default_rng(0).standard_normal((96, 128)).astype("float32")  # _dense_module's first draw
    folded = weight_prepack.split_and_fold(kernels.schedule(weight_prepack.mark_weights(mod), target), packing)
    consts = []
    relax.analysis.post_order_visit(folded["main"].body, lambda e: consts.append(e.value.numpy())
                                    if isinstance(e, tvm.ir.GenericConst) else None)
    (panels,) = [c for c in consts if c.ndim == 3]
    np.testing.assert_array_equal(panels.transpose(1, 0, 2).reshape(96, 128), w)
    exe = kernels.build(mod, target)
    asm = "".join(m.inspect_source("asm") for m in exe.mod._collect_dso_modules() if m.kind == "llvm")
    assert ("zmm" in asm) is ("avx512f" in _CPU_NEEDS[cpu]), cpu
    if runs_here:
        np.testing.assert_allclose(_run(exe, x), want, rtol=1e-4, atol=1e-4)
