"""The ``partition`` CLI with module switches set for the whole call (import, plan,
compile, run): the CLI itself takes none (switches are for A/Bs: :mod:`hetpart.bench.switches`).

In: ``--set module.NAME=value`` (repeatable; the syntax of ``tools/cpu_rule_ab.py``), then
``--``, then ``partition``'s own arguments.  Out: the CLI's exit status.  E.g. zoo moe's
expert matmuls fused, planned under a cap, compiled in simulation and run once
(bench/results/capped-moe-fused-plans.md)::

    PYTHONPATH=. python tools/partition_switched.py --set hetpart.importer.expert_matmul.FUSE_EXPERT_GATHER=1 \\
        -- plan zoo:moe:layers=2 --gpu-memory 400MB --simulate -o /tmp/moe2 --compile --run
"""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    from hetpart.bench.switches import switched
    from hetpart.cli.main import main as partition

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then partition's arguments")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    with switched(args.set):
        return partition(rest)


if __name__ == "__main__":
    raise SystemExit(main())
