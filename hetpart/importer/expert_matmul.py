"""A matmul by gathered expert weights computed in place: ``matmul(x, take(W, ids, axis=0))``
as one kernel that reads ``W[ids[b]]`` where it lies (llama.cpp's ``mul_mat_id``).

In: a Relax module of high-level ops (``from_onnx``'s output after :mod:`.index_guard`).
Out: the same module where every ``matmul(x, take(W, ids, axis=0))`` with ``W`` a constant
``[E, K, N]``, ``ids`` an integer tensor of shape ``B`` and ``x`` of shape ``[*Bx, M, K]``
(each ``Bx`` dim equal to ``B``'s or 1, same float dtype as ``W``) is one ``call_te`` named
:data:`OP` computing::

    out[b..., m, n] = sum_k x[bx..., m, k] * W[row(ids[b...]), k, n]

``row`` is the take's own index mode: ``clip`` (:mod:`.index_guard`'s for computed ids)
clamps into ``[0, E)``, ``wrap`` counts modulo ``E``, ``fast`` reads the index as it is
(an input the session checks; ONNX's negative ids were already made ``i + E`` by the
frontend's ``where``).  A take nothing else reads is then dead and dropped.  Invariant:
every output is the same function of the inputs (the same products summed over ``k`` in
the same order; the take's rows are the rows read), so the result equals the unfused
import's up to the order TVM's schedules sum in; ``W`` stays one constant argument, so a
kernel's ``param_bytes`` is the whole table as before.  Left alone: a take of a
non-constant table, of another axis, a matmul with an ``out_dtype`` other than its inputs'.

Why: a MoE step (``zoo:moe``) gathers its chosen experts' weights ``[T, k, K, N]`` and
multiplies by them.  As two kernels the gather (opaque to ``FuseOps``: its index is read
from a buffer) reads the chosen rows AND writes a full copy of them, which the matmul then
reads again: 23 MB written per projection at one token, ~0.2-0.3 ms per CPU expert gather
on the H200 host's Xeon (bench/results/capped-moe-pricing.md).  TVM's
``AnnotateTIROpPattern`` calls the fused PrimFunc a reduction (kOutEWiseFusable: the index
load does not make it opaque, as it does a lone take), so FuseOps still fuses SwiGLU's
activation into the gate projection.  The CPU schedules it with
:mod:`hetpart.kernels.rules.cpu_gathered_matmul`; the cost model prices it at the rows it
reads (:func:`hetpart.costmodel.kernel_shape.weight_bytes_read`).  Measured all-CPU, one
thread (bench/results/cpu-moe-gather-2core.md): zoo:moe at 4 of its 8 layers 50.8 -> 20.7 ms
(ONNX Runtime 45.2), outputs identical.  On CUDA :mod:`hetpart.kernels.rules.gpu_gathered_gemv`
schedules it (split-K over the chosen rows): zoo:moe:layers=2 all-CUDA on an H100 0.731 -> 0.512 ms.
On the H100 host's Xeon, 16 threads: zoo:moe (8 layers) 12.99 -> 6.16 ms (ORT 41.49); device steps
148-149, bench/results/cpu-moe-gather-2core.md.

:data:`FUSE_EXPERT_GATHER` switches it (on; off: the import is as before, text for text).
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from .relax_rewrite import rewrite_functions

# module switch, on since device step 148 (session 53, the H100 host's 16-core Xeon): zoo:moe:layers=2
# all-CPU 3.36 -> 1.50 ms at 16 threads (ONNX Runtime 12.51), outputs identical; the CUDA rule's
# values pass on the GPU, and it runs zoo:moe:layers=2 all-CUDA 0.731 -> 0.512 ms (step 149)
FUSE_EXPERT_GATHER = True
# the PrimFunc (and op) name of the fused kernel: the cost model and the CPU rule know it by it
OP = "gathered_matmul"


def _static(ty) -> list[int] | None:
    """Dims of a tensor type when all are static, else None."""
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    dims = list(shape.values)
    return [int(d) for d in dims] if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def _op(e) -> str:
    return e.op.name if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else ""


def fusable(x, take) -> bool:
    """Whether ``matmul(x, take)`` is the gathered matmul the module docstring describes.
    In: the matmul's left operand and the right operand's bound value."""
    if _op(take) != "relax.take" or take.attrs.axis is None or int(take.attrs.axis) != 0:
        return False
    table, ids = take.args
    w, i, xs = _static(table.ty), _static(ids.ty), _static(x.ty)
    if not isinstance(table, tvm.ir.GenericConst) or w is None or i is None or xs is None or len(w) != 3:
        return False
    if str(ids.ty.dtype)[:3] not in ("int", "uin") or str(x.ty.dtype) != str(table.ty.dtype):
        return False
    if not str(x.ty.dtype).startswith(("float", "bfloat")) or len(xs) != len(i) + 2 or xs[-1] != w[1]:
        return False
    return all(d in (1, n) for d, n in zip(xs[:-2], i))


def _row(index, extent: int, mode: str):
    """The table row ``index`` names under the take's ``mode`` (module docstring)."""
    index = index.astype("int64")
    if mode == "clip":
        return tirx.max(tirx.min(index, tirx.const(extent - 1, "int64")), tirx.const(0, "int64"))
    if mode == "wrap":
        return tirx.floormod(index, tirx.const(extent, "int64"))
    return index


def _compute(mode: str):
    """TE of ``out[b, m, n] = sum_k x[bx, m, k] * W[row(ids[b]), k, n]`` (module docstring)."""

    def compute(x, table, ids):
        extent, depth, cols = (int(d) for d in table.shape)
        rows = int(x.shape[-2])
        batch = [int(d) for d in ids.shape]
        k = te.reduce_axis((0, depth), name="k")

        def body(*idx):
            b, m, n = idx[:-2], idx[-2], idx[-1]
            bx = [v if int(x.shape[d]) != 1 else 0 for d, v in enumerate(b)]
            return te.sum(x[(*bx, m, k)] * table[_row(ids[b], extent, mode), k, n], axis=k)

        return te.compute((*batch, rows, cols), body, name=OP)

    return compute


@relax.expr_functor.mutator
class _GatheredMatmul(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.changed = False

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if _op(call) != "relax.matmul" or call.attrs.out_dtype not in (None, "", "void", call.args[0].ty.dtype):
            return call
        x, w = call.args
        take = self.lookup_binding(w) if isinstance(w, relax.Var) else None
        if take is None or not fusable(x, take):
            return call
        self.changed = True
        table, ids = take.args
        return self.builder_.call_te(_compute(str(take.attrs.mode)), x, table, ids, primfunc_name_hint=OP)


def fuse_expert_gather(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with each gathered matmul as one kernel (module docstring); ``mod`` itself
    when :data:`FUSE_EXPERT_GATHER` is off or none qualifies."""
    if not FUSE_EXPERT_GATHER:
        return mod
    mutator = _GatheredMatmul(mod)
    out = rewrite_functions(mod, mutator)
    if not mutator.changed:
        return mod
    return relax.transform.DeadCodeElimination()(out)  # the takes nothing reads now
