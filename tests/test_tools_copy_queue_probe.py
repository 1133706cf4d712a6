"""tools/copy_queue_probe.py (issue 19, device step 120) in simulation: it runs each
variant through the product's CopyEngine (one copy, or chunks) and reports its medians.
The timings are the simulation's; what is checked is the shape of the result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "copy_queue_probe.py"


def _tool():
    spec = importlib.util.spec_from_file_location("copy_queue_probe", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reports_each_variant(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert _tool().main(["--simulate", "--big", "100003", "--small", "64", "--chunks", "0,10007",
                         "--reps", "2", "--delay-us", "10", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [v["chunks"] for v in result["variants"]] == [1, 10]
    for v in result["variants"]:
        assert v["big_ms"] >= 0 and len(v["small_us"]) == len(v["end_after_landed_us"]) == 2
    assert "copies" in capsys.readouterr().out
