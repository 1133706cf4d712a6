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


def test_trace_runs_writes_one_file_a_run_and_skips_failed(tmp_path):
    """--trace-runs: N traced runs a contender, the first under the name one run always had;
    a failed contender gets none, a run that raises stops that contender only."""
    ab = capped_rules_ab

    class FakeSession:
        def __init__(self, fail_at=None):
            self.calls, self.fail_at = [], fail_at

        def run(self, feeds, trace=None):
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                raise RuntimeError("boom")
            self.calls.append(trace)
            Path(trace).write_text("{}")

    ok, flaky, gone = FakeSession(), FakeSession(fail_at=1), FakeSession()
    sessions = {"llama.cpp-style rule": (ok, {}), "hetpart": (flaky, {}), "hetpart before": (gone, {})}
    written = ab.trace_runs(sessions, {"hetpart before": "build"}, tmp_path / "t", runs=3)
    assert [p.name for p in written["llama.cpp-style rule"]] == [
        "llamacpp-style_rule.trace.json", "llamacpp-style_rule.run1.trace.json", "llamacpp-style_rule.run2.trace.json"]
    assert ok.calls == [str(p) for p in written["llama.cpp-style rule"]]
    assert [p.name for p in written["hetpart"]] == ["hetpart.trace.json"]
    assert "hetpart before" not in written and gone.calls == []
    assert ab.trace_paths(tmp_path, "hetpart", 0) == [tmp_path / "hetpart.trace.json"]


def test_round_order_alternate_and_rotate():
    """--order: alternate keeps the middle contender second every round (the old order); rotate
    puts each contender in each position twice over 2 x n rounds and after each other one."""
    names = ["hetpart", "hetpart before", "llama.cpp-style rule"]
    ro = capped_rules_ab.round_order
    assert ro(names, 0) == names and ro(names, 1) == names[::-1] and ro(names, 2) == names
    assert all(ro(names, r)[1] == "hetpart before" for r in range(4))
    orders = [ro(names, r, "rotate") for r in range(6)]
    assert all(sorted(o) == sorted(names) for o in orders)
    for n in names:
        assert sorted(o.index(n) for o in orders) == [0, 0, 1, 1, 2, 2]
        after = {o[o.index(n) - 1] for o in orders if o.index(n) > 0}
        assert after == set(names) - {n}
    assert ro(names, 6, "rotate") == ro(names, 0, "rotate")
    with pytest.raises(ValueError):
        ro(names, 0, "random")
