"""Why did CPU kernels time at exactly 4.0 ms in the capped bench's profile?

Device step 34 (2026-12-04) measured llama_decode's CPU kernels inside ``bench/capped.py``
with 17 of 54 at 3.98-4.03 ms (and two at 8.0): one scheduler tick (HZ=250) per call,
while the same kinds of kernels ran far faster in the measured plans (the llama.cpp-style
rule, 248 CPU kernels, predicted 721 ms from those timings, ran 39 ms).  A fork-join
kernel whose pinned worker shares its core with a busy thread waits for that thread's
time slice (hetpart/runtime/threads.py), so something in that process kept a core busy.

This measures the same CPU kernels (``zoo:llama_decode`` with 2 layers: the same kernel
shapes) three times in one process, each into its own profile file: (A) fresh (right after the import: with ``--layers 22``, the full 4.4 GB model, as the
bench had just imported it); (B) after
``bench.capped.measure_bandwidths`` (torch: a pinned copy to the GPU and a 16-thread sum);
(C) after a CUDA profile of the same model (overheads and kernels); (D) with the calling
thread's pool sized as a session with GPU partitions sizes it (one CPU left for its other
threads: hetpart.runtime.threads.pool_threads).  After B and C it lists
the threads that used CPU over half a second (the busy ones), by name, and the CPUs
busy meanwhile (this process asleep: other processes' or the kernel's work).  Prints a table
of the kernels' medians A / B / C.

    python3 tools/cpu_tick_check.py [--layers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hetpart.costmodel import profile  # noqa: E402
from hetpart.costmodel.kernel_bench import MeasureSettings  # noqa: E402


def busy_threads(window_s: float = 0.5) -> list[str]:
    """Threads of this process that used more than 10% of a CPU over ``window_s``."""
    def ticks():
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                name = stat[stat.index("(") + 1: stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2:].split()
                out[tid] = (name, int(fields[11]) + int(fields[12]), fields[36] if len(fields) > 36 else "?")
            except (OSError, ValueError, IndexError):
                pass
        return out

    hz = os.sysconf("SC_CLK_TCK")
    before = ticks()
    time.sleep(window_s)
    after = ticks()
    rows = []
    for tid, (name, t1, cpu) in after.items():
        t0 = before.get(tid, (name, t1, cpu))[1]
        share = (t1 - t0) / hz / window_s
        if share > 0.1:
            rows.append(f"tid {tid} {name!r} on cpu {cpu}: {share:.0%} of a CPU")
    return rows or ["(none busy)"]


def busy_cpus(window_s: float = 0.5) -> str:
    """What kept the CPUs busy over ``window_s`` while this process sleeps, from /proc:
    the machine's user / system / steal shares (steal: a hypervisor giving the vCPUs to
    others) and the processes that used most CPU (pid, name, share of one CPU).  Step 45
    (2026-12-04) saw every CPU at 100% here after the first profile, cause unknown."""
    def cpu_fields():
        line = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line[:8])
        return {"user": user + nice, "system": system + irq + softirq, "steal": steal,
                "idle": idle + iowait}

    def processes():
        out = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                name = stat[stat.index("(") + 1: stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2:].split()
                out[pid] = (name, int(fields[11]) + int(fields[12]))
            except (OSError, ValueError, IndexError):
                pass
        return out

    a, pa = cpu_fields(), processes()
    time.sleep(window_s)
    b, pb = cpu_fields(), processes()
    total = max(sum(b.values()) - sum(a.values()), 1)
    shares = ", ".join(f"{k} {(b[k] - a[k]) / total:.0%}" for k in ("user", "system", "steal", "idle"))
    hz = os.sysconf("SC_CLK_TCK")
    top = sorted(((t - pa.get(pid, (n, t))[1]) / hz / window_s, pid, n) for pid, (n, t) in pb.items())[-5:]
    busy = ", ".join(f"{n}[{pid}] {share:.0%} ({_who(pid)})" for share, pid, n in reversed(top) if share > 0.05)
    return f"{shares}; top processes: {busy or '(none)'}"


def _who(pid: str) -> str:
    """A busy process's parent, thread count and command line (is it one of ours?)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        me = " (child of this process)" if fields.get("PPid", "").strip() == str(os.getpid()) else ""
        return f"ppid {fields.get('PPid', '?').strip()}{me}, {fields.get('Threads', '?').strip()} threads, {cmd[:60]!r}"
    except OSError:
        return "exited"


def at_ticks(ms_values) -> int:
    """How many of ``ms_values`` sit at one or two 4 ms scheduler ticks (within 0.05 ms)."""
    return sum(1 for v in ms_values if abs(v - 4.0) < 0.05 or abs(v - 8.0) < 0.05)


def cpu_timings(graph, path: str, jobs: int | None = None) -> None:
    profile(graph, ("cpu",), path, settings=MeasureSettings.quick(), progress=False, jobs=jobs)


def medians(path: str) -> dict[str, tuple[str, float]]:
    import json

    data = json.loads(Path(path).read_text())
    return {sig: (r.get("func", sig), (r.get("timing") or {}).get("median_s", float("nan")) * 1e3)
            for sig, r in data["kernels"].get("cpu", {}).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--serial", action="store_true",
                    help="also profile with jobs=1 (kernels built in this process, no build workers) right after A")
    ap.add_argument("--only-serial", action="store_true", help="stop after A and S (implies --serial)")
    args = ap.parse_args()
    args.serial = args.serial or args.only_serial
    import hetpart

    graph = hetpart.load(f"zoo:llama_decode:layers={args.layers}")
    tmp = Path(tempfile.mkdtemp())
    runs = {}
    print("threads at start:", len(os.listdir("/proc/self/task")), busy_threads(), "| cpus:", busy_cpus(), flush=True)
    cpu_timings(graph, str(tmp / "a.json")); runs["A fresh"] = medians(str(tmp / "a.json"))
    print("A done; busy:", busy_threads(), "| cpus:", busy_cpus(), flush=True)
    for after_s in (1, 2, 4):
        print(f"  {after_s} s later | cpus:", busy_cpus(), flush=True)
    if args.serial:
        # no build workers at all: if the 4 ms ticks go away, the workers are what the timing shared its cores with
        cpu_timings(graph, str(tmp / "s.json"), jobs=1); runs["S serial build"] = medians(str(tmp / "s.json"))
        print("S done; busy:", busy_threads(), "| cpus:", busy_cpus(), flush=True)
    if args.only_serial:
        return report(runs)
    from hetpart.bench.capped import measure_bandwidths

    print("bandwidths:", measure_bandwidths(), flush=True)
    print("after bandwidths; busy:", busy_threads(), flush=True)
    cpu_timings(graph, str(tmp / "b.json")); runs["B after torch"] = medians(str(tmp / "b.json"))
    print("B done; busy:", busy_threads(), "| cpus:", busy_cpus(), flush=True)
    from hetpart.targets import cuda_available

    if cuda_available():
        profile(graph, ("cuda",), str(tmp / "c.json"), settings=MeasureSettings.quick(), progress=False)
        print("after a CUDA profile; busy:", busy_threads(), "| cpus:", busy_cpus(), flush=True)
        cpu_timings(graph, str(tmp / "c.json")); runs["C after CUDA"] = medians(str(tmp / "c.json"))
        print("C done; busy:", busy_threads(), flush=True)
    from hetpart.runtime.threads import configure_current_pool, pool_threads

    fewer = pool_threads(None, has_gpu=True) or max(os.cpu_count() - 1, 1)
    print("pool resized to", configure_current_pool(fewer), "threads (a GPU session's CPU partitions' size)", flush=True)
    cpu_timings(graph, str(tmp / "d.json")); runs[f"D pool {fewer}"] = medians(str(tmp / "d.json"))
    print("D done; busy:", busy_threads(), "| cpus:", busy_cpus(), flush=True)
    return report(runs)


def report(runs: dict) -> int:
    """Print the kernels' medians per run (a markdown table) and each run's count at 4/8 ms."""
    names = list(runs)
    print("| kernel | " + " | ".join(f"{n} ms" for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for sig, (func, _) in sorted(runs[names[0]].items(), key=lambda kv: -kv[1][1]):
        print(f"| {func[:48]} | " + " | ".join(f"{runs[n].get(sig, ('', float('nan')))[1]:.3f}" for n in names) + " |")
    for n in names:
        vals = [v for _, v in runs[n].values()]
        ticks = at_ticks(vals)
        print(f"{n}: {len(vals)} kernels, sum {sum(vals):.2f} ms, {ticks} at 4.00/8.00 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
