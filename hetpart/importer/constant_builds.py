"""Build each PrimFunc Relax's FoldConstant evaluates once per import, not once per call site.

Why: ``relax.transform.FoldConstant`` compiles every ``call_tir`` whose arguments are all
constants (a weight's layout transform, a reshape, a bias's broadcast) with the registered
``"tirx.build"`` and runs it.  In TVM 0.27 it does so at every call site, also of functions
structurally equal to one it built before (its own cache did not save them: zoo:resnet50:small
NCHW16c, 85 builds of 21 distinct functions), and each build is a full TIR pipeline, LLVM code
generation and a JIT: FoldConstant was 32 s of densenet121 NCHW16c's 35 s import on the 2-vCPU
dev box (``bench/results/build-time-2core.md``).

In: :func:`cached` as a ``with`` block around the import's passes.  Out: inside it, a call of
``"tirx.build"`` on a PrimFunc structurally equal (attributes included) to one built before in
the block, for the same target and pipeline, returns the module built then.  :func:`prebuild`
(:data:`PREBUILD`) fills the cache ahead on threads: the calls on constants of the module
FoldConstant is about to fold, legalised by TVM's rules as FoldConstant legalises them, each
distinct function built and JIT-compiled (zoo:resnet50:small NCHW16c: 21 built ahead,
FoldConstant's 85 builds all served).  Invariant: the
folded constants are the same values (the same function compiled the same way computes them);
outside a block, and on other threads, ``"tirx.build"`` is TVM's.  The wrapper is registered
once per process (:func:`install`), never unregistered: a per-block override would race between
threads importing at once.  Switch: :data:`ENABLED` (False: every call builds, as before).
"""

from __future__ import annotations

import contextlib
import threading

ENABLED = True
"""False: FoldConstant builds every call site (TVM's behaviour; for A/Bs)."""

_local = threading.local()
_lock = threading.Lock()
_installed = False


class BuildCache:
    """Modules built so far, by (structural hash, target, pipeline); equal functions share one.
    ``builds`` and ``hits`` count what it did."""

    def __init__(self):
        self._entries: dict[tuple, list[tuple[object, object]]] = {}
        self._lock = threading.Lock()
        self.builds = 0
        self.hits = 0

    def _find(self, key, func):
        import tvm_ffi

        with self._lock:
            for seen, module in self._entries.get(key, []):
                if tvm_ffi.structural_equal(seen, func):
                    return module
        return None

    def get_or_build(self, build, func, target, pipeline):
        """``build(func, target, pipeline)``, or the module built before for an equal function
        (thread-safe; two threads building equal functions at once may both build)."""
        import tvm_ffi
        from tvm import tirx

        if not isinstance(func, tirx.PrimFunc) or not isinstance(pipeline, (str, type(None))):
            return build(func, target, pipeline)
        key = (tvm_ffi.structural_hash(func), str(target), pipeline)
        module = self._find(key, func)
        if module is not None:
            with self._lock:
                self.hits += 1
            return module
        module = build(func, target, pipeline)
        with self._lock:
            self.builds += 1
            self._entries.setdefault(key, []).append((func, module))
        return module


def install() -> None:
    """Register the caching ``"tirx.build"`` (idempotent): TVM's build, through the calling
    thread's active :class:`BuildCache` if any."""
    global _installed
    with _lock:
        if _installed:
            return
        import importlib

        import tvm

        module = importlib.import_module("tvm.tirx.build")  # (``tvm.tirx.build`` is the function)

        def tirx_build(mod, target=None, pipeline="default"):
            cache = getattr(_local, "cache", None)
            if cache is None:
                return module.build(mod, target, pipeline)
            return cache.get_or_build(module.build, mod, target, pipeline)

        tvm.register_global_func("tirx.build", tirx_build, override=True)
        _installed = True


PREBUILD = True
"""False: :func:`prebuild` does nothing (FoldConstant then builds each distinct function on its
own thread, in turn)."""
PREBUILD_MIN = 8
"""Fewer distinct functions than this are left to FoldConstant."""


def prebuild(mod, cache: BuildCache | None, threads: int | None = None) -> int:
    """Build ahead, on ``threads`` threads (default: the CPUs), what FoldConstant will build
    folding ``mod``: every operator call on constants only (a weight's layout transform in the
    channel-blocked import), and every one on such calls' results (a bound variable's type is
    known before its value), legalised by TVM's own rules, as FoldConstant legalises it, each distinct PrimFunc built and its code JIT-compiled (``get_function``),
    into ``cache``.  Returns how many were built.  Only a speed-up: a function FoldConstant asks
    for that is not structurally equal to one built here is built then, as before; one built
    here and never asked for cost only time."""
    import tvm
    import tvm_ffi
    from tvm import relax, tirx

    if cache is None or not PREBUILD:
        return 0
    calls = []

    def foldable(expr, folded) -> bool:  # an operator call on constants, or on such calls' results
        return (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and bool(expr.args)
                and expr.op.name != "relax.call_tir"
                and all(isinstance(a, tvm.ir.GenericConst) or (isinstance(a, relax.Var) and a in folded)
                        for a in expr.args))

    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        relax.analysis.post_order_visit(  # calls on constants wherever they sit
            func.body, lambda e: calls.append(e) if foldable(e, ()) else None)
        if isinstance(func.body, relax.SeqExpr):  # and the folds a fold feeds (bindings in order)
            folded: set = set()
            for block in func.body.blocks:
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding) and foldable(b.value, folded):
                        if not all(isinstance(a, tvm.ir.GenericConst) for a in b.value.args):
                            calls.append(b.value)
                        folded.add(b.var)
    if not calls:
        return 0
    bb = relax.BlockBuilder()
    for i, call in enumerate(calls):  # each call on parameters of its constants' types
        params = [relax.Var(f"c{j}", a.ty) for j, a in enumerate(call.args)]
        with bb.function(f"fold{i}", params):
            out = bb.emit(relax.Call(call.op, params, call.attrs, call.ty_args))
            bb.emit_func_output(out)
    try:
        legal = relax.transform.LegalizeOps()(bb.get())
    except Exception:  # noqa: BLE001 - an op TVM cannot legalise: FoldConstant leaves it too
        return 0
    funcs, seen = [], set()
    for _, f in legal.functions_items():
        if isinstance(f, tirx.PrimFunc):
            f = f.with_attr("global_symbol", "tir_function")
            h = tvm_ffi.structural_hash(f)
            if h not in seen:
                seen.add(h)
                funcs.append(f)
    if len(funcs) < PREBUILD_MIN:
        return 0
    import importlib
    from concurrent.futures import ThreadPoolExecutor

    from ..cpu_cores import allowed_cpus

    build = importlib.import_module("tvm.tirx.build").build
    target = tvm.target.Target("llvm")  # FoldConstant's evaluation target

    def one(f):
        try:
            cache.get_or_build(build, f, target, "default").get_function("tir_function")  # JIT here
        except Exception:  # noqa: BLE001 - FoldConstant meets the same error and skips the call
            pass

    n = threads or len(allowed_cpus())
    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="hetpart-fold") as pool:
        list(pool.map(one, funcs))
    return len(funcs)


@contextlib.contextmanager
def cached():
    """Within the block (on this thread), FoldConstant builds each distinct function once;
    yields the :class:`BuildCache` (None when :data:`ENABLED` is off)."""
    if not ENABLED:
        yield None
        return
    install()
    outer = getattr(_local, "cache", None)
    cache = outer if outer is not None else BuildCache()
    _local.cache = cache
    try:
        yield cache
    finally:
        _local.cache = outer


__all__ = ["BuildCache", "ENABLED", "PREBUILD", "PREBUILD_MIN", "cached", "install", "prebuild"]
