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
the block, for the same target and pipeline, returns the module built then.  Invariant: the
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
        self.builds = 0
        self.hits = 0

    def get_or_build(self, build, func, target, pipeline):
        import tvm_ffi
        from tvm import tirx

        if not isinstance(func, tirx.PrimFunc) or not isinstance(pipeline, (str, type(None))):
            return build(func, target, pipeline)
        key = (tvm_ffi.structural_hash(func), str(target), pipeline)
        for seen, module in self._entries.get(key, []):
            if tvm_ffi.structural_equal(seen, func):
                self.hits += 1
                return module
        module = build(func, target, pipeline)
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


__all__ = ["BuildCache", "ENABLED", "cached", "install"]
