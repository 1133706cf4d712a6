"""Which kernels a CPU rule switch changes: every kernel's scheduled TIR with the switches
as the checkout has them against with ``--before`` applied (as tools/cpu_rule_ab.py takes
them), compared as text.  No build, no timing: a kernel listed as unchanged runs the same
code both ways.

    PYTHONPATH=. python tools/rule_switch_tir_diff.py zoo:resnet50 /tmp/densenet121.onnx r50_1x1_14 \\
        zoo:resnet50:batch=8@skylake-avx512 --before hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS=0

A model is a ``bench/cpu_layers.py`` layer name, a zoo spec or an ONNX file, with ``@MCPU``
for another LLVM CPU than the host (16 cores); ``--batch`` sets the layers' and zoo specs' batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def scripts(module, target, options=None) -> dict[str, str]:
    """``{kernel: scheduled TIR text}`` of a fused ``module`` (an importer's), as
    ``kernels.build`` schedules it for ``target`` (``options``: the build's
    :class:`~hetpart.kernels.options.KernelOptions`, default the resolved ones)."""
    from tvm import tirx

    from hetpart import kernels
    from hetpart.kernels import weight_prepack

    mod = kernels.schedule(weight_prepack.mark_weights(module), target, options or kernels.DEFAULT)
    return {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def scripts_both_ways(module, target, before: list[str], options=None) -> tuple[dict[str, str], dict[str, str]]:
    """``(now, before)``: :func:`scripts` with the switches as the checkout has them, then
    with ``before`` applied (restored after)."""
    from hetpart.bench.switches import switched

    now = scripts(module, target, options)
    with switched(before):
        return now, scripts(module, target, options)


def changed(model, target, before: list[str], block: int | None = None) -> tuple[int, list[str]]:
    """(kernels, the names of those whose TIR differs with ``before`` applied; ``block``: the
    channel-blocked import, ``load(model, conv_block=block)``)."""
    from hetpart import load

    after, old = scripts_both_ways(load(model, conv_block=block).module, target, before)
    return len(after), sorted(k for k in after if after[k] != old.get(k))


def main(argv=None) -> int:
    import onnx
    import tvm

    from cpu_rule_ab import _model
    from hetpart.targets import cpu_tvm_target

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--before", action="append", default=[], help="module.ATTR=value (as cpu_rule_ab.py)")
    p.add_argument("--batch", type=int, default=1, help="batch of the layer rows and zoo specs (as cpu_rule_ab.py)")
    p.add_argument("--block", type=int, default=None, help="the channel-blocked import, load(model, conv_block=N)")
    a = p.parse_args(argv)
    for spec in a.models:
        name, _, mcpu = spec.partition("@")
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 16}) if mcpu else cpu_tvm_target()
        model = onnx.load(name) if name.endswith(".onnx") else _model(name, a.batch)
        n, diff = changed(model, target, a.before, a.block)
        print(f"{spec} ({mcpu or 'host'}): {len(diff)} of {n} kernels differ{': ' if diff else ''}{' '.join(diff)}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
