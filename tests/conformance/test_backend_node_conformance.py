"""The onnx package's backend node tests through hetpart's ONNX backend (CPU path).

The default CI run takes the deterministic subset in ``ci_subset.txt`` (one test per
op type; the whole suite takes ~30 min here, see ``bench/conformance.py``):

* every subset test not in ``expected_failures.py`` runs as the onnx package's own
  ``BackendTest`` (its models, inputs, expected outputs and tolerances) and must pass;
* every subset test in the table must still fail with a typed ``HetpartError`` --
  a listed test that passes fails here ("unexpected pass": take it off the list),
  and so does one that fails any other way (wrong result, internal error).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import onnx
import onnx.backend.test
import pytest

from hetpart.backend import HetpartBackend
from hetpart.bench import conformance

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from expected_failures import subset_names, EXPECTED_FAILURES, EXPECTED_FAILURES_CUDA, expected_for  # noqa: E402

CASES = conformance.load_cases()  # onnx generates them once per process; BackendTest reuses them
SUBSET = [n for n in subset_names() if n in CASES]
EXPECTED = expected_for("CPU")

# Each case imports and compiles a model: minutes in all, so outside the fast loop
# (CI's full run takes them; the table's own review is test_expected_failures_table.py).
pytestmark = pytest.mark.slow

backend_test = onnx.backend.test.BackendTest(HetpartBackend, __name__)
_must_pass = [n for n in SUBSET if n not in EXPECTED]
backend_test.include("^(" + "|".join(re.escape(n) for n in _must_pass) + ")_cpu$")
_test_cases = backend_test.test_cases
for _case in _test_cases.values():
    # Only the included tests become test methods: BackendTest makes every other onnx
    # test (other node tests, the *_cuda variants, the real/simple/pytorch models: ~4,000)
    # a unittest.skip, which pytest would collect, hand to a worker and report, one by one.
    for _name in [n for n, f in vars(_case).items() if n.startswith("test_")
                  and getattr(f, "__unittest_skip_why__", None) == "no matched include pattern"]:
        delattr(_case, _name)
globals().update({n: c for n, c in _test_cases.items() if any(a.startswith("test_") for a in vars(c))})


@pytest.mark.parametrize("name", [n for n in SUBSET if n in EXPECTED])
def test_expected_failure_fails_with_a_typed_error(name):
    status, detail = conformance.run_case(CASES[name], "CPU")
    result = conformance.judge(name, status, detail, EXPECTED)
    assert result.status == "expected-fail", f"{name}: {result.status}: {result.detail}"


REVIEWED_WITH_ONNX = "1.23.2"  # the onnx release whose node tests the table and subset were reviewed on


def test_expected_failures_and_subset_name_real_tests():
    if onnx.__version__ != REVIEWED_WITH_ONNX:
        pytest.skip(f"test names checked against onnx {REVIEWED_WITH_ONNX}; this is {onnx.__version__}")
    named = [*EXPECTED_FAILURES, *EXPECTED_FAILURES_CUDA, *subset_names()]
    missing = [n for n in named if n not in CASES]
    assert not missing, f"not onnx node tests (renamed or removed?): {missing[:10]}"
