"""Run a Python script as ``__main__`` and print the process's peak RSS (MiB) to stderr when it exits.

    python3 tools/peak_rss.py bench/capped.py --workloads llama_decode ...
"""

import atexit
import resource
import runpy
import sys


def _report() -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB", file=sys.stderr, flush=True)


if __name__ == "__main__":
    atexit.register(_report)
    sys.argv = sys.argv[1:]
    sys.path.insert(0, ".")
    runpy.run_path(sys.argv[0], run_name="__main__")
