"""Split-K for the hand-written ``wgmma`` GEMM (issue 17 spike), and the whole GEMM as a module.

In:  a GEMM (M, N, K), the kernel's options (:func:`wgmma_gemm.wgmma_gemm`: ``bn``, ``stages``,
     ``precision``) and an epilogue (:data:`wgmma_gemm.EPILOGUES`).
Out: :func:`choose_split`, the K slices that give a launch at least one CTA per SM;
     :func:`reduce`, the PrimFunc ``C[m, n] = epilogue(sum over s of P[s * M + m, n])`` (a residual
     epilogue reads ``R[m, n]`` once, after the sum; ``C`` float32, or bf16 rounded in the store; the
     slices summed in order s = 0, 1, ..., so the result is deterministic: no atomics);
     :func:`gemm_module`, the PrimFuncs one GEMM runs, in call order (the GEMM alone for
     ``split == 1``, its epilogue in the store; else the partial GEMM then the reduction);
     :func:`relax_module`, a Relax ``main(A, B[, bias]) -> C`` calling them (what a rule
     would emit; the probe times it through the VM).
Invariant: for every split the module computes the same C as the ``split == 1`` kernel up
to float32 summation order; every PrimFunc carries ``tirx.is_scheduled`` (hand-written: no
dlight rule may touch it) and builds with the ``tirx`` pipeline.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from hetpart.kernels.tir_macro import macro

from hetpart.kernels import wgmma_gemm as wg
from hetpart.kernels import wgmma_layout as lay

H100_SMS = 132
"""Streaming multiprocessors of an H100 SXM (the launch :func:`choose_split` fills)."""
MIN_TILES_PER_SLICE = 2
"""K tiles each slice keeps at least (below that the pipeline has nothing to overlap)."""
MAX_SPLIT = 8
"""Most slices: each adds ``M x N`` float32 of partials written and read once."""
REDUCE_THREADS = 256
REDUCE_VEC = 4
"""Consecutive columns per reduction thread (float4 loads and stores): N % 4 == 0."""
GEMM_SYMBOL = "wgmma_gemm"
REDUCE_SYMBOL = "wgmma_splitk_reduce"


def choose_split(m: int, n: int, k: int, bn: int = 128, precision: str = "bf16", sms: int = H100_SMS,
                 consumers: int = 1) -> int:
    """The fewest K slices (a divisor of the K tiles, each slice >= :data:`MIN_TILES_PER_SLICE`
    tiles, at most :data:`MAX_SPLIT`) whose launch has at least ``sms`` CTAs; 1 if the GEMM
    alone has that many; else the largest allowed.  ViT-B/16 at M = 197, bn = 128, bf16: proj
    (768 x 768, 24 CTAs) and fc2 (768 x 3072, 24) get 6 (144 CTAs), qkv (72) 2, fc1 (96) 2.
    ``consumers``: warpgroups per CTA (2: 128-row tiles, half the CTAs)."""
    prec = lay.precision(precision)
    shape = wg.Shape(m, n, k, bn, prec.tile_k, 1, lay.TILE_M * consumers)
    shape.check()
    ctas, k_tiles = shape.ctas, k // prec.tile_k
    allowed = [s for s in range(1, MAX_SPLIT + 1) if k_tiles % s == 0 and (s == 1 or k_tiles // s >= MIN_TILES_PER_SLICE)]
    return next((s for s in allowed if ctas * s >= sms), allowed[-1])


def reduce(m: int, n: int, split: int, epilogue: str | None = None, out_dtype: str = "float32") -> tvm.tirx.PrimFunc:
    """The PrimFunc ``main(P, C)`` (``main(P, bias, C)`` with a bias epilogue; a residual one:
    ``main(P[, bias], R, C)``): ``P [split * m, n]`` float32 partial sums, ``C [m, n]`` float32,
    ``bias [n]`` float32, ``R [m, n]`` float32 (module doc; the residual added once, after the
    slices are summed, at the store's own indices).  One thread
    per 4 consecutive elements of a row (float4 loads of each slice, then the epilogue, then a
    float4 store; ``out_dtype`` bfloat16: ``C`` bf16, each value rounded to nearest even after the
    epilogue, four stored at once).  Raises ValueError for N % 4 != 0, split < 1, an unknown
    epilogue or out dtype."""
    wg._check_out_dtype(out_dtype)
    stored = wg.stored_value(out_dtype)
    if epilogue not in wg.EPILOGUES:
        raise ValueError(f"epilogue must be one of {wg.EPILOGUES}, got {epilogue!r}")
    if split < 1 or m < 1 or n % REDUCE_VEC:
        raise ValueError(f"need split >= 1, M >= 1 and N % {REDUCE_VEC} == 0; got split={split} M={m} N={n}")
    vec, threads = REDUCE_VEC, REDUCE_THREADS
    items = m * n // vec
    blocks = -(-items // threads)
    per_row = n // vec

    def row(bx, tx):
        return (bx * threads + tx) // per_row

    def col(bx, tx):
        return (bx * threads + tx) % per_row * vec

    @macro
    def body(P, bias, R, C, bx, tx):
        acc = T.alloc_buffer((vec,), "float32", scope="local")
        if bx * threads + tx < items:
            for v in T.vectorized(vec):
                acc[v] = P[row(bx, tx), col(bx, tx) + v]
            for s in T.unroll(split - 1):
                for v in T.vectorized(vec):
                    acc[v] = acc[v] + P[(s + 1) * m + row(bx, tx), col(bx, tx) + v]
            for v in T.unroll(vec):
                acc[v] = wg.epilogue_value(acc[v], bias, col(bx, tx) + v, epilogue, R, row(bx, tx))
            for v in T.vectorized(vec):
                C[row(bx, tx), col(bx, tx) + v] = stored(acc[v])

    @macro
    def launched(P, bias, R, C):
        # every entry's code after its signature (the entries differ only in their parameters)
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        bx = T.launch_thread("blockIdx.x", blocks)
        tx = T.launch_thread("threadIdx.x", threads)
        body(P, bias, R, C, bx, tx)

    if epilogue is None:
        @T.prim_func
        def main(P: T.Buffer((split * m, n), "float32"), C: T.Buffer((m, n), out_dtype)):
            launched(P, None, None, C)

        return main

    if epilogue == "residual":
        @T.prim_func
        def main_residual(P: T.Buffer((split * m, n), "float32"), R: T.Buffer((m, n), "float32"),
                          C: T.Buffer((m, n), out_dtype)):
            launched(P, None, R, C)

        return main_residual

    if epilogue == "bias_residual":
        @T.prim_func
        def main_bias_residual(P: T.Buffer((split * m, n), "float32"), bias: T.Buffer((n,), "float32"),
                               R: T.Buffer((m, n), "float32"), C: T.Buffer((m, n), out_dtype)):
            launched(P, bias, R, C)

        return main_bias_residual

    @T.prim_func
    def main_bias(P: T.Buffer((split * m, n), "float32"), bias: T.Buffer((n,), "float32"),
                  C: T.Buffer((m, n), out_dtype)):
        launched(P, bias, None, C)

    return main_bias


def gemm_module(m: int, n: int, k: int, bn: int = 128, *, stages: int = 3, precision: str = "bf16",
                split: int = 1, epilogue: str | None = None, swizzle: str = "none",
                consumers: int = 1, out_dtype: str = "float32", producer: str = "threads", inflight: int = 0,
                store: str = "scalar") -> tvm.IRModule:
    """The PrimFuncs of one GEMM (module doc), named :data:`GEMM_SYMBOL` and (``split > 1``)
    :data:`REDUCE_SYMBOL`, each with ``tirx.is_scheduled``: call the GEMM with (A, B[, bias][, R], C)
    when ``split == 1``, else (A, B, P) then the reduction with (P[, bias][, R], C); ``C`` of
    ``out_dtype`` (bfloat16: the last kernel's store rounds).  ``inflight`` / ``store``: the batch-32
    spike's options of :func:`.wgmma_gemm.wgmma_gemm` (defaults: the code of before)."""
    funcs = {}
    # wgmma_gemm's layout options (defaults: the first spike's; producer="warp": wgmma_ws's spike)
    layout = {"swizzle": swizzle, "consumers": consumers, "producer": producer, "inflight": inflight,
              "store": store}
    if split == 1:
        funcs[GEMM_SYMBOL] = wg.wgmma_gemm(m, n, k, bn, stages=stages, precision=precision, epilogue=epilogue,
                                           out_dtype=out_dtype, **layout)
    else:
        funcs[GEMM_SYMBOL] = wg.wgmma_gemm(m, n, k, bn, stages=stages, precision=precision, split=split, **layout)
        funcs[REDUCE_SYMBOL] = reduce(m, n, split, epilogue, out_dtype)
    return tvm.IRModule({name: f.with_attr("global_symbol", name).with_attr("tirx.is_scheduled", True)
                         for name, f in funcs.items()})


def build(m: int, n: int, k: int, bn: int = 128, **options):
    """``tvm.compile`` of :func:`gemm_module` (same options) for sm_90a under the target."""
    tgt = wg.target()
    with tgt:
        return tvm.compile(gemm_module(m, n, k, bn, **options), target=tgt, tir_pipeline=wg.TIR_PIPELINE)


def relax_module(m: int, n: int, k: int, bn: int = 128, *, stages: int = 3, precision: str = "bf16",
                 split: int = 1, epilogue: str | None = None, swizzle: str = "none",
                 consumers: int = 1, producer: str = "threads", inflight: int = 0,
                 store: str = "scalar") -> tvm.IRModule:
    """A Relax module whose ``main(A, B[, bias][, residual])`` returns ``C [m, n]`` float32 through
    :func:`gemm_module`'s PrimFuncs (``call_tir`` each; the partials a VM temporary)."""
    from tvm import relax

    prec = lay.precision(precision)
    prims = gemm_module(m, n, k, bn, stages=stages, precision=precision, split=split, epilogue=epilogue,
                        swizzle=swizzle, consumers=consumers, producer=producer, inflight=inflight, store=store)
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([m, k], prec.a_global))
    b = relax.Var("b", relax.TensorType([n, k], prec.b_global))
    params = [a, b]
    extra = []  # the epilogue's operands: bias, residual (the kernel's order)
    if epilogue in wg.BIAS_EPILOGUES:
        extra.append(relax.Var("bias", relax.TensorType([n], "float32")))
    if epilogue in wg.RESIDUAL_EPILOGUES:
        extra.append(relax.Var("residual", relax.TensorType([m, n], "float32")))
    params += extra
    gemm = bb.add_func(prims[GEMM_SYMBOL], GEMM_SYMBOL)
    reduction = bb.add_func(prims[REDUCE_SYMBOL], REDUCE_SYMBOL) if split > 1 else None
    with bb.function("main", params):
        with bb.dataflow():
            if split == 1:
                out = bb.emit_output(relax.call_tir(gemm, params, relax.TensorType([m, n], "float32")))
            else:
                part = bb.emit(relax.call_tir(gemm, [a, b], relax.TensorType([split * m, n], "float32")))
                out = bb.emit_output(relax.call_tir(reduction, [part, *extra],
                                                    relax.TensorType([m, n], "float32")))
        bb.emit_func_output(out)
    return bb.get()


def build_relax(m: int, n: int, k: int, bn: int = 128, **options):
    """``tvm.compile`` of :func:`relax_module` for sm_90a (the VM executable)."""
    tgt = wg.target()
    with tgt:
        return tvm.compile(relax_module(m, n, k, bn, **options), target=tgt, tir_pipeline=wg.TIR_PIPELINE)


__all__ = ["GEMM_SYMBOL", "H100_SMS", "REDUCE_SYMBOL", "build", "build_relax", "choose_split", "gemm_module",
           "reduce", "relax_module"]
