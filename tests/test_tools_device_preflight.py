"""tools/device_preflight.py: what a device step runs, checked in a (staged) tree before the call."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import device_preflight as pf  # noqa: E402

STEP = '''12)  # a comment naming tools/only_in_a_comment.py, which the step does not run
  timeout 60 python3 tools/runs_fine.py --x > "$OUT/a.txt"
  python3 tools/needs_a_staged_away_helper.py
  python3 tools/imports_late.py
  python3 tools/imports_late_chain.py
  python3 tools/imports_late_sub.py
  python3 -m pytest -q tests/test_gone.py
  tar xzf .hold/plans12.tgz -C /tmp ;;
'''


def _tree(root: Path, profile: bool = True) -> None:
    (root / "tools").mkdir()
    (root / "tools" / "runs_fine.py").write_text("import json\n")
    (root / "tools" / "needs_a_staged_away_helper.py").write_text("import helper_moved_away_xyz\n")
    (root / "tools" / "imports_late.py").write_text("def main():\n    import torch\n    from late_helper_xyz import f\n")
    # session 51: a tool's late import is here, but it imports (at its top) a helper staged away
    (root / "tools" / "imports_late_chain.py").write_text("def main():\n    import chain_middle_xyz\n")
    (root / "tools" / "chain_middle_xyz.py").write_text("import chain_gone_xyz\n")
    # session 52: the package is here, its module staged away (hetpart.bench.cpu_layers)
    (root / "tools" / "imports_late_sub.py").write_text("def main():\n    from pkg_here_xyz.gone_xyz import f\n")
    (root / "pkg_here_xyz").mkdir()
    (root / "pkg_here_xyz" / "__init__.py").write_text("")
    if profile:
        (root / "bench" / "results").mkdir(parents=True)
        (root / "bench" / "results" / "profile-capped-nvidia-h200.json").write_text("{}")


def test_a_step_s_missing_files_failed_imports_and_carries_are_named(tmp_path):
    _tree(tmp_path)
    script = tmp_path / "round.sh"
    script.write_text("case $1 in\n" + STEP + "esac\n")
    found = pf.problems(pf.step_text(script, "12"), tmp_path)
    assert len(found) == 6, found
    assert found[0].startswith("tests/test_gone.py: not in the tree")
    # the import inside main() that cost session 50 a call; torch is the GPU machine's
    assert found[1] == "tools/imports_late.py: imports late_helper_xyz (inside a function), which is not here"
    assert found[2].startswith("tools/imports_late_chain.py: imports chain_middle_xyz (inside a function), "
                               "which does not import: ModuleNotFoundError")
    assert "chain_gone_xyz" in found[2]
    assert found[3] == "tools/imports_late_sub.py: imports pkg_here_xyz.gone_xyz (inside a function), which is not here"
    assert found[4].startswith("tools/needs_a_staged_away_helper.py: does not import: ModuleNotFoundError")
    assert "helper_moved_away_xyz" in found[4]
    assert found[5].startswith(".hold/plans12.tgz: not here")
    assert not any("only_in_a_comment" in line for line in found)


def test_no_profile_is_a_problem_and_a_complete_tree_is_ready(tmp_path):
    _tree(tmp_path, profile=False)
    assert pf.problems("  python3 tools/runs_fine.py\n", tmp_path) == [
        "no cost-model profile: neither hetpart/costmodel/recorded/h200.json nor "
        "bench/results/profile-capped-nvidia-h200.json (plans need one)"]
    (tmp_path / "hetpart" / "costmodel" / "recorded").mkdir(parents=True)
    (tmp_path / "hetpart" / "costmodel" / "recorded" / "h200.json").write_text("{}")
    assert pf.problems("  python3 tools/runs_fine.py\n", tmp_path) == []


def test_every_pending_step_of_the_checkout_is_ready_in_the_full_tree():
    script = pf.ROOT / "tools" / "device_round.sh"
    steps = pf.re.findall(r"^(\d+)\)", script.read_text(), flags=pf.re.M)
    assert steps
    for step in steps[:6]:  # the next ones to run; the full list imports many tools (slow)
        text = pf.step_text(script, step)
        assert [p for p in pf.problems(text) if ".hold/" not in p] == [], step
