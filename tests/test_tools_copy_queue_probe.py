"""tools/copy_queue_probe.py (issue 19, device steps 120, 123) in simulation: it runs each
variant through the product's CopyEngine (one copy, chunks, throttled chunks) or the small
copy kernel (runtime.small_copy) and reports its medians.
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
    """Chunks at once, throttled (K=1, 2) and the kernel copy: a row each, the small
    copies' bytes read back identical, the throttled rows' copier thread timed."""
    out = tmp_path / "probe.json"
    assert _tool().main(["--simulate", "--big", "100003", "--small", "64", "--chunks", "0,10007",
                         "--throttle", "1:10007,2:10007", "--kernel",
                         "--reps", "2", "--delay-us", "10", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [v["chunks"] for v in result["variants"]] == [1, 10, 10, 10, 1]
    assert [(v["throttle"], v["kernel"]) for v in result["variants"]] == [
        (None, False), (None, False), (1, False), (2, False), (None, True)]
    for v in result["variants"]:
        assert v["big_ms"] >= 0 and len(v["small_us"]) == len(v["end_after_landed_us"]) == 2
        assert v["small_bytes_identical"] == [True, True]
        assert v["throttle"] is None or (v["submitted_us"] > 0 and v["copier_cpu_us"] > 0)
    text = capsys.readouterr().out
    assert "copies" in text and "throttle K=2" in text and "kernel copy" in text
