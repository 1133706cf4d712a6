"""tools/capped_rules_ab.py: ``--set module.ATTR=value`` holds for the whole run (it was undone
at once: the context manager entered for it was collected, and its ``finally`` restored the
switch before the first plan)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "capped_rules_ab", Path(__file__).resolve().parents[1] / "tools" / "capped_rules_ab.py")
capped_rules_ab = importlib.util.module_from_spec(_SPEC)
sys.modules["capped_rules_ab"] = capped_rules_ab
_SPEC.loader.exec_module(capped_rules_ab)


class _Stop(Exception):
    pass


def test_set_holds_while_the_run_imports_and_plans(monkeypatch):
    from hetpart.bench import capped
    from hetpart.partitioner import layout

    seen = []

    def prepare(_workload):
        seen.append(layout.GRAPHLESS_CUDA_LAUNCH)
        raise _Stop()

    monkeypatch.setattr(capped, "prepare", prepare)
    monkeypatch.setattr(capped, "workload", lambda name, _dir: name)
    monkeypatch.setattr(layout, "GRAPHLESS_CUDA_LAUNCH", False)
    with pytest.raises(_Stop):
        capped_rules_ab.main(["--set", "hetpart.partitioner.layout.GRAPHLESS_CUDA_LAUNCH=1", "--plan-only"])
    assert seen == [True]
