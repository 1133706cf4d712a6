"""hetpart.bench.serve_cpu_share: the CPU-only A/B of the CPU-sharing policies (the
device step's first part) runs each policy at each caller count, checks every answer
against its payload's first one, and records the lanes each policy made."""

from __future__ import annotations

import json

from hetpart.bench import serve_cpu_share


def test_ab_runs_every_policy_at_every_caller_count_and_records_the_lanes(tmp_path, capsys):
    out = tmp_path / "ab.json"
    rc = serve_cpu_share.main(["--policies", "gate,none", "--callers", "1,2", "--seconds", "0.2", "--work", "2",
                               "--shape", "32", "--json", str(out)])
    assert rc == 0
    body = json.loads(out.read_text())
    got = [(r["policy"], r["callers"]) for r in body["results"]]
    assert got == [("gate", 1), ("none", 1), ("gate", 2), ("none", 2)]
    assert all(r["wrong"] == 0 and r["runs_per_s"] > 0 for r in body["results"])
    assert body["shares"]["gate"]["calls"] >= 1 and len(body["shares"]["gate"]["lanes"]) == 1
    assert "gate     alone p50" in capsys.readouterr().out
