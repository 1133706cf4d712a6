"""hetpart.kernels.tir_macro: ``macro`` expands as ``T.macro`` does, without reading source frames."""

from __future__ import annotations

import inspect

import pytest
import tvm
from tvm.script import tirx as T

from hetpart.kernels.tir_macro import macro

F32 = "float32"


def _scaled(decorator):
    """A PrimFunc that calls a macro (made with ``decorator``) twice, with other arguments."""

    @decorator
    def twice(x, y, i):
        y[i] = x[i] * T.float32(2)

    @T.prim_func
    def main(x: T.Buffer((8,), F32), y: T.Buffer((8,), F32), z: T.Buffer((8,), F32)):
        for i in range(8):
            twice(x, y, i)
            twice(y, z, i)

    return main


def test_expands_to_the_primfunc_of_tvms_macro():
    tvm.ir.assert_structural_equal(_scaled(macro), _scaled(T.macro))
    assert _scaled(macro).script() == _scaled(T.macro).script()


def test_expansion_does_not_read_the_callers_frames(monkeypatch):
    """T.macro calls ``inspect.getouterframes`` once per expansion (the parse itself calls it too);
    ``macro`` never does."""
    calls = []
    real = inspect.getouterframes

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inspect, "getouterframes", counted)
    _scaled(T.macro)
    tvms = len(calls)
    calls.clear()
    _scaled(macro)
    assert len(calls) == tvms - 2


def test_decorator_forms():
    assert callable(macro()(lambda: None)) and callable(macro(hygienic=False)(lambda: None))
    with pytest.raises(ValueError):
        macro(1)
