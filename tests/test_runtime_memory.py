"""hetpart.runtime.memory: the host arrays every run allocates, and the tensors over them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetpart.compiler.artifact import TensorSpec
from hetpart.runtime.memory import ALIGNMENT, _compact, aligned_array, aligned_empty, data_ptr, host_tensor

DTYPES = ["float32", "float16", "bfloat16", "int64", "int8", "bool", "uint8"]
shapes = st.lists(st.integers(0, 7), min_size=0, max_size=4).map(tuple)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), zeroed=st.booleans())
def test_aligned_arrays_have_the_spec_and_an_aligned_start(shape, dtype, zeroed):
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    arr = (aligned_array if zeroed else aligned_empty)(TensorSpec("t", shape, dtype))
    assert arr.shape == shape and str(arr.dtype) == dtype
    assert arr.flags.c_contiguous and arr.flags.writeable
    assert _compact(arr) or arr.size == 0  # numpy may give an empty array any strides
    assert data_ptr(arr) % ALIGNMENT == 0
    if zeroed:
        assert not arr.any()
    arr[...] = 1  # every byte is its own: writing the whole array stays inside it


def test_aligned_arrays_take_numpy_integer_dims():
    arr = aligned_empty(TensorSpec("t", (np.int64(2), np.int32(3)), "float32"))
    assert arr.shape == (2, 3)


def test_compact_rejects_odd_strides_on_a_size_one_dim():
    """numpy calls ``x[None]`` C-contiguous whatever stride the new dim has; a kernel
    reading the DLPack strides must not see it as compact unless they are row-major."""
    base = np.zeros((4, 8), np.float32)
    odd = np.lib.stride_tricks.as_strided(base, shape=(1, 4, 8), strides=(4, 32, 4))
    assert odd.flags.c_contiguous and not _compact(odd)
    assert _compact(odd.copy())
    assert not _compact(base.T)


def test_host_tensor_views_the_same_bytes():
    spec = TensorSpec("t", (3, 5), "float32")
    arr = aligned_empty(spec)
    arr[...] = np.arange(15, dtype=np.float32).reshape(3, 5)
    tensor = host_tensor(arr, spec)
    assert int(tensor.data_ptr()) == data_ptr(arr)
    np.testing.assert_array_equal(np.from_dlpack(tensor), arr)
