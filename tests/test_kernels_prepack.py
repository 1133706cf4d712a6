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
from tvm import relax, te

from hetpart import kernels
from hetpart.costmodel import kernel_bench
from hetpart.costmodel.overhead_bench import chain_module
from hetpart.importer.fusion import fuse
from hetpart.kernels import weight_prepack
from hetpart.kernels.rules import CpuInjective, CpuMatmul
from hetpart.targets import cpu_tvm_target

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
