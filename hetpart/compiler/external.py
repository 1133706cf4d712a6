"""External weights: a partition's weights kept in a file beside its library, bound at load.

Why (issue 19).  A partition built with its weights as Relax constants carries them
in its library: the VM executable serialises its constant pool, and
``export_library`` packs that into the ``__tvm_ffi__library_bin`` blob, which TVM's
``codegen_blob`` emits through LLVM as one ``ConstantDataArray`` (in ``.lrodata`` above
1 GiB).  The LLVM 22 that TVM 0.27 links stores each MC fragment's byte count in a
``uint32_t`` (``MCFragment::FixedSize``; ``MCObjectStreamer::appendContents`` does
``CurFrag->FixedSize += Contents.size()``), and the blob is appended in one piece:
a blob of N >= 4 GiB bytes is written to the object file as its first N mod 2**32
bytes, while the blob's own 8-byte header still says N.  The link succeeds; at load
``ProcessLibraryBin`` (tvm-ffi, ``library_module.cc``) reads the VM executable's byte
count (~N) from the blob and copies that many bytes out of a mapping ~4 GiB shorter:
SIGSEGV inside ``Module::LoadFromFile``
(llama_decode all-CPU, 4.40 GB, on the H200; 2.2-2.3 GB partitions were fine).  Below
that limit embedding still costs: loading makes three copies besides the mapped blob
(the module bytes read into a ``std::string``, its ``Bytes`` copy, each constant's
``Tensor``), the executable keeps the last (on the host, a CUDA partition's too), and
LLVM emits the blob as data.  Measured with 1 GiB of weights, all-CPU
(``tools/external_weights_ab.py``, 2-core EPYC, fresh processes): compile 53-85 s and
6.4 GiB peak RSS embedded against 8-19 s and 4.3 GiB external; ``load_compiled``
4.6-7.7 s and 4.3 GiB peak against 0.9-1.4 s (+0.23 s to read the file when a session
opens) and 1.25 GiB; one 1.1 GiB anonymous copy after the first run either way; runs
equal within noise.  :func:`hetpart.compiler.elf.check_bounds` now refuses a cut
library with a typed error instead of the segfault.

What.  After the kernels are scheduled and their weight layouts packed
(:mod:`hetpart.kernels.weight_prepack`, so the file holds what the executable's
constant pool would have held), :class:`WeightLifter` turns every tensor constant of a
partition's entry functions into a parameter appended after all the others --
``main(*inputs, *weights)``, ``main_dps(*inputs, *outputs, *weights)`` -- and sets
``num_input`` to the count before them, so TVM's CUDA-graph rewrite treats them as
fixed, as it treats constants.  The compiler writes their values into
``<partition>.params.bin`` (:func:`write_weight_file`: each at a 64-byte aligned
offset, the layout and sha256 in the manifest); the runtime reads that file once into
host memory (CPU) or copies it once into the GPU (CUDA) and binds the tensors
(:mod:`hetpart.runtime.external_weights`).

The choice: a partition keeps its weights in a file when they exceed
:data:`EXTERNAL_MIN_BYTES` (256 MiB), and then all of them; below it they stay
embedded, one file per partition as before.  The threshold sits far below the 4 GiB
the library cannot hold (with its bytecode and the layout padding a partition near
it could cross), and where the copies above start to cost: a load peaks near four
times the embedded weights (1 GiB of weights, 4.3 GiB), so ~1 GiB at 256 MiB but 8 GiB
at 2 GiB, and compile time grows with them.  Below it the embedded path is the one
every model has always run (one file per partition, the CUDA-graph and prepacking
paths it was tested on), and external weights gain little.
``compile(external_weights=0)`` puts every partition's weights in files, ``None`` none
(the old behaviour, for comparison).  Streamed
partitions are never lifted here: their weights already live in a file
(:mod:`hetpart.runtime.weight_stream`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from ..errors import CompileError
from .artifact import WEIGHT_ALIGNMENT, WeightFile, WeightSpec

EXTERNAL_MIN_BYTES = 256 << 20
"""A partition whose weights (after packing) exceed this many bytes keeps all of them in
its weights file (module docstring: why 256 MiB)."""

ENTRY_ATTR = "global_symbol"
DEFAULT = "default"
"""``compile(external_weights=DEFAULT)``: :data:`EXTERNAL_MIN_BYTES` as it is when compiling."""


def resolve(external_weights) -> int | None:
    """The threshold a compile uses: :data:`EXTERNAL_MIN_BYTES` (read now) for :data:`DEFAULT`,
    else the bytes given (>= 0) or None; CompileError for anything else."""
    if external_weights == DEFAULT:
        return EXTERNAL_MIN_BYTES
    if external_weights is None:
        return None
    if isinstance(external_weights, bool) or not isinstance(external_weights, int) or external_weights < 0:
        raise CompileError(f"external_weights must be a number of bytes >= 0 or None, not {external_weights!r}")
    return external_weights


class WeightLifter:
    """``mod -> mod`` for :func:`hetpart.kernels.build`'s ``lift`` hook: when the tensor
    constants of ``mod``'s entry functions (those with a ``global_symbol``) add up to more
    than ``min_bytes``, each becomes a parameter appended after every other one (the same
    list, in order of first use, for every entry function) and ``names``/``values`` hold
    them; else ``mod`` is returned unchanged and ``values`` stays empty.

    Invariant: an entry function with ``k`` parameters before gets ``k + len(values)``,
    ``num_input = k`` (or its own ``num_input`` if it had one), and computes the same
    when called with ``values`` after its arguments."""

    def __init__(self, partition: str, min_bytes: int):
        self.partition = partition
        self.min_bytes = int(min_bytes)
        self.names: list[str] = []
        self.values: list = []

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(v) for v in self.values)

    def __call__(self, mod: tvm.IRModule) -> tvm.IRModule:
        entries = [(gv, f) for gv, f in mod.functions_items()
                   if isinstance(f, relax.Function) and f.attrs is not None and ENTRY_ATTR in f.attrs]
        constants: dict = {}
        for _, func in entries:
            relax.analysis.post_order_visit(func.body, lambda e: _collect(e, constants))
        if sum(_nbytes(c.value) for c in constants) <= self.min_bytes:
            return mod
        self.names = [f"{self.partition}.c{i}" for i in range(len(constants))]
        self.values = [c.value for c in constants]
        out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
        for gv, func in entries:
            out[gv] = _lifted(func, list(constants), self.names)
        return out


def _collect(expr, constants: dict) -> None:
    if isinstance(expr, tvm.ir.GenericConst) and isinstance(expr.ty, relax.TensorType) and expr not in constants:
        constants[expr] = None


def _nbytes(value) -> int:
    n = 1
    for d in value.shape:
        n *= int(d)
    dtype = tvm.runtime.DataType(str(value.dtype))
    return n * ((dtype.bits * dtype.lanes + 7) // 8)


def _lifted(func: relax.Function, constants: list, names: list[str]) -> relax.Function:
    params = [relax.Var(name, c.ty) for name, c in zip(names, constants)]
    body = _Swap(dict(zip(constants, params))).visit_expr(func.body)
    n_inputs = int(func.attrs["num_input"]) if "num_input" in func.attrs else len(func.params)
    new = relax.Function(list(func.params) + params, body, func.ret_ty, func.is_pure, func.attrs)
    return new.with_attr("num_input", n_inputs)


@relax.expr_functor.mutator
class _Swap(relax.PyExprMutator):
    """Replaces each constant of ``mapping`` by its parameter."""

    def __init__(self, mapping: dict) -> None:
        super().__init__()
        self._mapping = mapping

    def visit_generic_const_(self, op):
        return self._mapping.get(op, op)


def write_weight_file(path: Path, names, values, what: str) -> WeightFile:
    """``values`` (TVM tensors or numpy arrays) written one after another into ``path``,
    each at an offset that is a multiple of :data:`WEIGHT_ALIGNMENT` and padded to the
    next one, hashed as they go: one tensor's bytes in memory at a time (a copy of the
    whole set would double a compile's peak for GBs of weights).  ``what`` names the
    partition in errors."""
    digest, offset, specs = hashlib.sha256(), 0, []
    try:
        with open(path, "wb") as f:
            for name, value in zip(names, values):
                arr = _host_array(value)
                if not arr.flags.c_contiguous:  # (not np.ascontiguousarray: it makes a 0-d array 1-d)
                    arr = arr.copy(order="C")
                raw = arr.reshape(-1).view(np.uint8)
                padded = -(-raw.nbytes // WEIGHT_ALIGNMENT) * WEIGHT_ALIGNMENT
                specs.append(WeightSpec(str(name), tuple(int(d) for d in arr.shape), str(arr.dtype), offset,
                                        int(raw.nbytes)))
                for chunk in (raw, np.zeros(padded - raw.nbytes, np.uint8)):
                    f.write(chunk)
                    digest.update(chunk)
                offset += padded
                del arr, raw
    except OSError as exc:
        raise CompileError(f"cannot write the weights of {what} to {path}: {exc}") from exc
    return WeightFile(Path(path).name, offset, digest.hexdigest(), tuple(specs))


def _host_array(value) -> np.ndarray:
    """``value`` as a numpy array: a CPU TVM tensor without a copy where DLPack allows
    (every dtype numpy has), else through ``.numpy()`` (bfloat16)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.from_dlpack(value)
    except (BufferError, TypeError, ValueError, RuntimeError):
        return value.numpy()


__all__ = ["DEFAULT", "EXTERNAL_MIN_BYTES", "WeightLifter", "resolve", "write_weight_file"]
