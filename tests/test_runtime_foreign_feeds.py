"""Feeds from objects hetpart did not make (issue 21, item 5): an object claiming to be
a DLPack tensor whose export fails, whose device query fails, or that lacks
``__dlpack__``, is refused with a typed error naming the input; its ``data_ptr()`` is
never read.  Runs in a child process: a raw read of a bogus pointer is a SIGSEGV."""

from __future__ import annotations

import pytest

from isolated import assert_clean, run_isolated


@pytest.mark.slow
def test_foreign_objects_are_refused_typed_and_never_read_raw():
    out = assert_clean(run_isolated("""
        import numpy as np
        from hetpart.errors import RuntimeFailure
        from hetpart.runtime import Session
        from hetpart.runtime.synthetic import chain

        class Claims:  # looks like a host float32 [16, 32] tensor at address 16
            shape, dtype = (16, 32), "float32"
            def __dlpack_device__(self):
                return (1, 0)
            def data_ptr(self):
                return 16

        class FailingExport(Claims):
            def __dlpack__(self, *a, **k):
                raise RuntimeError("export refused")

        class FailingDevice(FailingExport):
            def __dlpack_device__(self):
                raise ValueError("no device")

        class NotATuple(FailingExport):
            def __dlpack_device__(self):
                return None

        with Session(chain(["cpu", "cuda"], (16, 32), work=1)) as s:
            for bad in (Claims(), FailingExport(), FailingDevice(), NotATuple()):
                try:
                    s.run({"x": bad})
                except RuntimeFailure as e:
                    assert "input 'x'" in str(e), e
                    print("refused", type(bad).__name__)
                else:
                    raise AssertionError(f"{type(bad).__name__} was accepted")
            x = np.ones((16, 32), np.float32)
            assert s.run({"x": x})["t1"].shape == (16, 32)  # still usable
    """, timeout=120))
    assert out.count("refused") == 4
