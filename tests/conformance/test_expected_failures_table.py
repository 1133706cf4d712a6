"""The reviewed expected-failure table of the conformance run (fast: reads, runs nothing)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from expected_failures import subset_names, CATEGORIES, EXPECTED_FAILURES, EXPECTED_FAILURES_CUDA  # noqa: E402

SUBSET = subset_names()


def test_expected_failure_table_is_reviewed():
    """Every entry names a known category and gives a reason (names: see the node-test module)."""
    for table in (EXPECTED_FAILURES, EXPECTED_FAILURES_CUDA):
        for name, (category, reason) in table.items():
            assert category in CATEGORIES, f"{name}: unknown category {category!r}"
            assert len(reason) > 10, f"{name}: say why it fails"


def test_subset_is_a_real_selection():
    assert len(SUBSET) > 150  # the file lists ~200; a renamed onnx suite must not silently shrink CI


def test_cpu_only_entries_are_cpu_entries():
    from expected_failures import PASS_ON_CUDA, expected_for

    assert PASS_ON_CUDA <= set(EXPECTED_FAILURES)
    assert not PASS_ON_CUDA & set(expected_for("CUDA"))
