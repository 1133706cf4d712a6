"""The caller's inputs: checked up front (names, shapes, dtypes), then wrapped without copying.

:func:`validate_feeds` turns ``{input name: array}`` into ``{name: Buffer}``.  A numpy
array (or any host DLPack tensor) is viewed in place; a numpy scalar (``np.float32(0)``)
is a 0-d array; a CUDA DLPack/TVM tensor is used on the GPU as it is.  Every problem is reported in one :class:`RuntimeFailure` that
says which input and what the model expects, before anything runs.

A dim the model leaves symbolic (a string in the TensorSpec, e.g. ``"batch"``)
accepts any size; numbered dims and the rank must match.  The Buffer of a feed
carries the feed's actual shape.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..compiler.artifact import TensorSpec
from ..errors import RuntimeFailure
from .memory import ALIGNMENT, Buffer, aligned_empty, concrete, dtype_name, is_static, wrap_host_array

_DL_CPU, _DL_CUDA, _DL_CUDA_HOST = 1, 2, 3


def describe(spec: TensorSpec) -> str:
    return f"'{spec.name}' {list(spec.shape)} {spec.dtype}"


def validate_feeds(feeds: Any, specs: list[TensorSpec], *, gpu: bool) -> tuple[dict[str, Buffer], int]:
    """``(buffers by input name, host copies made)``; raises RuntimeFailure listing every problem.

    ``gpu`` says whether CUDA-resident tensors are acceptable (a real GPU session).
    A copy is made only for a host array that is not C-contiguous and 64-byte aligned.
    """
    by_name = {s.name: s for s in specs}
    return stage_feeds(check_feeds(feeds, specs, gpu=gpu, by_name=by_name), by_name)


def check_feeds(feeds: Any, specs: list[TensorSpec], *, gpu: bool,
                by_name: Mapping[str, TensorSpec] | None = None) -> dict[str, Buffer | np.ndarray]:
    """Check every feed (names, shapes, dtypes) without copying anything: a feed usable
    in place becomes a Buffer; a host array that needs an aligned copy stays an array
    (checked) for :func:`stage_feeds`.  Raises RuntimeFailure listing every problem."""
    if not isinstance(feeds, Mapping):
        raise RuntimeFailure(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    if by_name is None:
        by_name = {s.name: s for s in specs}
    problems = []
    if len(feeds) != len(by_name) or any(n not in by_name for n in feeds):
        missing = [n for n in by_name if n not in feeds]
        unknown = [n for n in feeds if n not in by_name]
        if missing:
            problems.append(f"missing input(s) {', '.join(repr(n) for n in missing)}")
        if unknown:
            problems.append(f"unknown input(s) {', '.join(repr(n) for n in unknown)}")
    checked: dict[str, Buffer | np.ndarray] = {}
    for name, value in feeds.items():
        spec = by_name.get(name)
        if spec is None:
            continue
        try:
            checked[name] = _wrap(value, spec, gpu)
        except RuntimeFailure as e:
            problems.append(str(e))
    if problems:
        expected = ", ".join(describe(s) for s in specs)
        raise RuntimeFailure("bad feeds: " + "; ".join(problems) + f". The model's inputs are: {expected}")
    return checked


def stage_feeds(checked: Mapping[str, Buffer | np.ndarray], by_name: Mapping[str, TensorSpec], *,
                staging: Callable[[str, TensorSpec], np.ndarray] | None = None,
                direct: frozenset = frozenset()) -> tuple[dict[str, Buffer], int]:
    """``(buffers, host copies made)`` from :func:`check_feeds`' result: each array that
    needs it is copied into an aligned array, ``staging(name, concrete spec)`` (e.g. one
    reused per session slot) or a new one.  A name in ``direct`` is not copied here: its
    Buffer (``tensor`` None) is only read by :func:`~.executor.publish_feeds`, which
    copies it into its pinned buffer anyway."""
    buffers: dict[str, Buffer] = {}
    copies = 0
    for name, value in checked.items():
        if isinstance(value, Buffer):
            buffers[name] = value
            continue
        spec = concrete(by_name[name], value.shape)
        if name in direct:
            buffers[name] = Buffer(spec, "cpu", None, 0, value)
            continue
        copy = staging(name, spec) if staging is not None else aligned_empty(spec)
        np.copyto(copy, value)
        copies += 1
        buffers[name] = wrap_host_array(copy, spec)
    return buffers, copies


def _wrap(value: Any, spec: TensorSpec, gpu: bool) -> Buffer | np.ndarray:
    if isinstance(value, (np.generic, bool, int, float)):
        value = np.asarray(value)  # a scalar feeds a 0-d input (its dtype is still checked)
    if isinstance(value, np.ndarray):
        return _host(value, spec)
    if hasattr(value, "__dlpack_device__"):
        kind = _dlpack_device_type(value, spec)
        if kind == _DL_CUDA:
            return _device(value, spec, gpu)
        if kind in (_DL_CPU, _DL_CUDA_HOST):
            return _host(_host_array(value, spec), spec)
        raise RuntimeFailure(f"input '{spec.name}' lives on DLPack device type {kind}; pass a host array or a CUDA tensor")
    raise RuntimeFailure(f"input '{spec.name}' must be a numpy array, a numpy scalar or a DLPack tensor, "
                         f"got {type(value).__name__}")


def shape_matches(expected: tuple, shape: tuple) -> bool:
    """Same rank, and every numbered dim of ``expected`` equal (a string dim: any size)."""
    if expected == shape:
        return True
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(expected):
        return False
    return all(isinstance(e, str) or int(e) == d for e, d in zip(expected, shape))


def _check(spec: TensorSpec, shape: tuple, dtype: str) -> None:
    if not shape_matches(spec.shape if isinstance(spec.shape, tuple) else tuple(spec.shape), shape):
        anyw = " (a named dim takes any size)" if any(isinstance(d, str) for d in spec.shape) else ""
        raise RuntimeFailure(
            f"input '{spec.name}' has shape {[int(d) for d in shape]}, the model expects {list(spec.shape)}{anyw}")
    if str(dtype) != spec.dtype:
        raise RuntimeFailure(
            f"input '{spec.name}' has dtype {dtype}, the model expects {spec.dtype} "
            f"(convert it, e.g. x.astype('{spec.dtype}'))")


def _host(arr: np.ndarray, spec: TensorSpec) -> Buffer | np.ndarray:
    """A Buffer over ``arr`` in place, or ``arr`` itself (checked) when it needs an aligned copy."""
    _check(spec, arr.shape, dtype_name(arr.dtype))
    if arr.flags.c_contiguous:
        buf = wrap_host_array(arr, spec)
        if buf.ptr % ALIGNMENT == 0 or arr.size == 0:
            return buf
    return arr


def _dlpack_device_type(value: Any, spec: TensorSpec) -> int:
    """The DLPack device type ``value`` declares; RuntimeFailure if it cannot say."""
    try:
        return int(value.__dlpack_device__()[0])
    except Exception as exc:  # noqa: BLE001 - a foreign object: any failure is the caller's
        raise RuntimeFailure(f"input '{spec.name}' is not a usable DLPack tensor: its __dlpack_device__() "
                             f"failed ({type(exc).__name__}: {exc}); pass a numpy array") from exc


def _host_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """A numpy view of a host DLPack tensor (a TVM ``cuda_host`` tensor included).

    Only DLPack is trusted with a foreign object; a raw pointer (``data_ptr()``) is read
    only from a TVM tensor, whose pointer and size TVM itself vouches for."""
    try:
        return np.from_dlpack(value)
    except Exception as exc:  # noqa: BLE001 - a foreign exporter may raise anything
        import tvm_ffi

        if not isinstance(value, tvm_ffi.Tensor):
            raise RuntimeFailure(
                f"input '{spec.name}' ({type(value).__name__}) could not be read through DLPack "
                f"({type(exc).__name__}: {exc}); pass a numpy array") from exc
        import ctypes

        nbytes = int(np.prod(value.shape, dtype=np.int64)) * np.dtype(str(value.dtype)).itemsize
        raw = (ctypes.c_uint8 * nbytes).from_address(int(value.data_ptr()))
        return np.frombuffer(raw, dtype=str(value.dtype)).reshape(tuple(value.shape))


def _device(value: Any, spec: TensorSpec, gpu: bool) -> Buffer:
    if not gpu:
        raise RuntimeFailure(
            f"input '{spec.name}' is a CUDA tensor but this session has no real GPU "
            "(it is simulated or CPU-only); pass a host array")
    import tvm_ffi

    try:
        tensor = value if isinstance(value, tvm_ffi.Tensor) else tvm_ffi.from_dlpack(value)
    except Exception as exc:  # noqa: BLE001 - a foreign exporter may raise anything
        raise RuntimeFailure(f"input '{spec.name}' ({type(value).__name__}) could not be read through "
                             f"DLPack ({type(exc).__name__}: {exc}); pass a contiguous CUDA tensor") from exc
    _check(spec, tuple(tensor.shape), str(tensor.dtype))
    if not tensor.is_contiguous():
        raise RuntimeFailure(f"input '{spec.name}' is a non-contiguous CUDA tensor; pass a contiguous one")
    return Buffer(concrete(spec, tuple(tensor.shape)), "cuda", tensor, int(tensor.data_ptr()))


def random_feeds(specs: list[TensorSpec], seed: int = 0, dim: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for ``specs`` (normal floats; small non-negative ints, valid as
    indices); a symbolic (string) dim gets size ``dim``."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        dtype = np.dtype(s.dtype)
        shape = tuple(dim if isinstance(d, str) else int(d) for d in s.shape)
        if dtype.kind == "f":
            out[s.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            out[s.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[s.name] = rng.integers(0, 2, shape).astype(dtype)
    return out


def zero_feeds(specs: list[TensorSpec]) -> dict[str, np.ndarray] | None:
    """Zeros of every input's shape (zeros are in range for index inputs), or None when
    a shape is symbolic: what a warm-up run feeds."""
    if not all(is_static(s.shape) for s in specs):
        return None
    return {s.name: np.zeros(tuple(int(d) for d in s.shape), dtype=s.dtype) for s in specs}


def check_indices(checked: Mapping[str, Buffer | np.ndarray], limits: Mapping) -> None:
    """RuntimeFailure if a feed used as indices holds a value out of its range
    (``limits``: input name -> :class:`~hetpart.importer.op_graph.IndexLimits`), so an
    out-of-range index never reaches a kernel that would read foreign memory with it.
    Costs a min and a max per index feed; a CUDA-resident one is copied to the host."""
    problems = []
    for name, limit in limits.items():
        value = checked.get(name)
        if value is None:
            continue
        problem = limit.violation(_values(value))
        if problem is not None:
            problems.append(f"input '{name}' {problem}")
    if problems:
        raise RuntimeFailure("bad feeds: " + "; ".join(problems) +
                             " (an index out of range is an error in ONNX; a negative one counts from the end)")


def _values(value: Buffer | np.ndarray) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if value.array is not None:
        return value.array
    return value.tensor.numpy()
