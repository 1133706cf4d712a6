"""Issue 18: hetpart's all-CPU build with convolutions in NCHW[x]c, beside the default NCHW build
and ONNX Runtime, in one process.  The blocked build is hetpart's opt-in import
``load(model, conv_block=c)`` (:mod:`hetpart.importer.conv_layout`; off by default):

* ``relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW{c}c", "OIHW{c}i{c}o"]})`` runs in
  :func:`hetpart.importer.fusion.prepare_for_inference` after batch-norm folding and before
  :mod:`~hetpart.importer.nan_semantics` (which turns ReLU/Clip into ``call_tir``, opaque to
  ConvertLayout: run after it, every ReLU would sit between two ``layout_transform``\\ s);
* ``relax.nn.conv2d`` in a blocked layout is legalised by ``topi.nn.conv2d_NCHWc`` (TVM 0.27's
  own legalisation returns such a conv unchanged: "data layout or kernel layout have channel
  chunk cannot be legalized by TOPI"); other layouts (grouped blocked convs too) as TVM does.

:func:`nchwc_import` (the study's way in, kept for its test) does the same by patching
:mod:`hetpart.importer.fusion` for the duration of a ``with`` block.

    PYTHONPATH=. python tools/nchwc_ab.py zoo:resnet50 --batch 8 --threads 1 --cpu-time --rules
    PYTHONPATH=. python tools/nchwc_ab.py /tmp/mobilenet_v2.onnx --batch 8 --threads 1 --cpu-time
    PYTHONPATH=. python tools/nchwc_ab.py zoo:resnet50 --batch 8 --threads 1 --cpu-time --per-kernel \\
        --before hetpart.kernels.rules.cpu_blocked_conv.BLOCKED_TILE=0

Prints, per model: the fused kernels of the NCHWc build and the rule that schedules each
(``hetpart.rule``), the two whole-model times and ORT's (least call, [range of the rounds'
least calls], ms; ``tools/cpu_rule_ab.py``'s method), and each build's max |diff| / max |ORT|.
``--per-kernel`` also times every distinct fused kernel of both builds alone
(:func:`hetpart.costmodel.kernel_bench`-style: one kernel, one-call module, CPU time).
``--before MODULE.ATTR=VALUE`` adds a third side, the NCHWc build with that switch set
(``tools/cpu_rule_ab.py``'s ``switched``), imported and built with it set (an import switch such as
``hetpart.importer.conv_layout.SHARED_TRANSFORMS=0`` too): the blocked tile against the generic
one in one process.  ``--after MODULE.ATTR=VALUE`` sets a switch for every side (a switch off by
default timed on: ``--after X=1 --before X=0``; the third side's ``--before`` then overrides it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_BLOCKED = re.compile(r"^NCHW(\d+)c$")


def blocked_conv2d_legalize(bb, call):
    """:func:`hetpart.importer.conv_layout.legalize_conv2d` (where it now lives)."""
    from hetpart.importer.conv_layout import legalize_conv2d

    return legalize_conv2d(bb, call)


@contextlib.contextmanager
def nchwc_import(block: int = 8):
    """Within the block, :func:`hetpart.load` imports with convolutions in ``NCHW{block}c``
    (see the module docstring); restored however the block ends."""
    from tvm import relax

    from hetpart.importer import fusion

    layouts = {"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]}
    old_nan, old_legalize = fusion.propagate_nan, fusion.LEGALIZE

    def convert_then_nan(mod):
        return old_nan(relax.transform.ConvertLayout(layouts)(mod))

    fusion.propagate_nan = convert_then_nan
    fusion.LEGALIZE = {**old_legalize, "relax.nn.conv2d": blocked_conv2d_legalize}
    try:
        yield
    finally:
        fusion.propagate_nan, fusion.LEGALIZE = old_nan, old_legalize


def kernel_rules(mod, target) -> list[tuple[str, str]]:
    """``(fused PrimFunc name, rule)`` for every PrimFunc of fused ``mod`` scheduled for
    ``target`` (``"none"`` where no rule applied; a channel-blocked conv's tile in brackets,
    :func:`hetpart.kernels.rules.cpu_blocked_conv.plan_of`)."""
    from tvm import tirx

    from hetpart import kernels

    from hetpart.kernels.rules import cpu_blocked_conv

    applied = kernels.rules_applied(kernels.schedule(mod, target))

    def rule(gv, f) -> str:
        name = applied.get(gv.name_hint, "none")
        plan = cpu_blocked_conv.plan_of(f, target) if name == "CpuConv2d" and cpu_blocked_conv.BLOCKED_TILE else None
        return f"{name} [{plan.describe()}]" if plan is not None else name

    return [(gv.name_hint, rule(gv, f)) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


def relax_op_counts(mod) -> collections.Counter:
    """High-level Relax ops left in ``main`` (a conv2d no legalisation took shows here)."""
    import tvm
    from tvm import relax

    ops: collections.Counter = collections.Counter()

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name != "relax.call_tir":
            ops[e.op.name] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return ops


def summarize_rules(pairs) -> list[str]:
    """``"count  kernel-kind  rule"`` lines, kernel names with their numbers stripped."""
    c = collections.Counter((re.sub(r"(?<=[a-z_])\d+(?=_|$)", "", n), r) for n, r in pairs)
    return [f"{v:4d}  {k:<48} {r}" for (k, r), v in sorted(c.items())]


def ab(name: str, batch: int, threads: int, calls: int, rounds: int, clock, block: int, show_rules: bool,
       kernels_too: bool = False, before: tuple[str, ...] = (), on_model=None, on_row=None,
       cores: int | None = None) -> dict:
    """One model's A/B (module docstring).  ``on_model(result)`` is called with the
    whole-model result before the per-kernel timing starts, ``on_row(row)`` with each
    per-kernel row as it is done (so a run cut off by a timeout has printed what it has).
    ``cores``: every side built for a target of that many cores (default: this host's)."""
    import tvm
    from tvm import relax

    from hetpart import kernels, load
    from hetpart.bench.peers import ort_session
    from hetpart.runtime.threads import call_leased
    from hetpart.targets import cpu_tvm_target
    from cpu_rule_ab import _feeds, _model, first_output, switched, turns

    model = _model(name, batch)
    feeds = _feeds(model)
    target = cpu_tvm_target(cores)
    t0 = time.perf_counter()
    base_graph = load(model)
    base = base_graph.module
    t1 = time.perf_counter()
    blocked_graph = load(model, conv_block=block)  # hetpart's opt-in all-CPU import (importer.conv_layout)
    blocked = blocked_graph.module
    t2 = time.perf_counter()
    result: dict = {"import_s": (t1 - t0, t2 - t1), "left": relax_op_counts(blocked)}
    if show_rules:
        result["rules"] = summarize_rules(kernel_rules(blocked, target))
        result["rules_base"] = summarize_rules(kernel_rules(base, target))
    exes = [kernels.build(base, target), kernels.build(blocked, target)]
    if before:  # the NCHWc import and build again with the switches set: a third side, last
        with switched(before):
            again = load(model, conv_block=block)
            result["transforms"] = (_transforms(blocked_graph), _transforms(again))
            exes.append(kernels.build(again.module, target))
    result["build_s"] = time.perf_counter() - t2
    session = ort_session(model, threads=threads)

    def body():
        args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
        vms = [relax.VirtualMachine(e, tvm.cpu()) for e in exes]
        sides = [lambda vm=vm: vm["main"](*args) for vm in vms[:2]] + [lambda: session.run(None, feeds)]
        sides += [lambda vm=vm: vm["main"](*args) for vm in vms[2:]]
        o = ([first_output(f()) for f in sides[:2]] + [np.asarray(sides[2]()[0])]
             + [first_output(f()) for f in sides[3:]])
        scale = float(np.abs(o[2]).max()) or 1.0
        result["err_ort"] = [float(np.abs(x - o[2]).max()) / scale for x in o[:2] + o[3:]]
        result["best"] = turns(sides, calls, rounds, clock)
        if on_model is not None:
            on_model(result)
        if kernels_too:
            result["kernels"] = per_kernel(base_graph, blocked_graph, calls, rounds, clock, before, on_row, cores)

    call_leased("nchwc ab", body, pool=threads, role="cpu")
    return result


def _transforms(graph) -> int:
    """How many layout_transform kernels ``graph`` runs."""
    return sum("layout_transform" in k.func for k in graph.kernels.values())


def conv_pairs(base_graph, blocked_graph) -> list[tuple[object, object, int]]:
    """The convolution kernels of the two graphs paired in binding order, one pair per
    distinct NCHW kernel signature, with how many times that signature occurs.  In: two
    OpGraphs of one model (NCHW, NCHW{c}c).  Out: ``[(nchw kernel, nchwc kernel, n)]``.
    Raises ValueError where the two graphs hold different numbers of convolutions."""
    convs = [[k for k in sorted(g.kernels.values(), key=lambda k: k.index) if any("conv2d" in o for o in k.ops)]
             for g in (base_graph, blocked_graph)]
    if len(convs[0]) != len(convs[1]):
        raise ValueError(f"{len(convs[0])} convolutions in NCHW, {len(convs[1])} in NCHWc")
    count = collections.Counter(k.signature for k in convs[0])
    pairs, seen = [], set()
    for a, b in zip(*convs):
        if a.signature not in seen:
            seen.add(a.signature)
            pairs.append((a, b, count[a.signature]))
    return pairs


def per_kernel(base_graph, blocked_graph, calls: int, rounds: int, clock, before: tuple[str, ...] = (),
               on_row=None, cores: int | None = None) -> list[dict]:
    """Each distinct convolution of the model timed alone in both layouts (one-kernel
    modules built by :func:`hetpart.costmodel.kernel_bench.build_module`, weights packed as
    the model has them), in turns, ``rounds`` rounds of ``calls`` calls; least call, ms.
    With ``before`` (``module.ATTR=value`` switches) the NCHWc kernel is also built with
    those set, a third side (``ms``/``hi`` then hold three values).  Also the other kernels
    of each graph (pools, fc, layout transforms), summed."""
    import tvm
    from tvm import relax

    from hetpart.costmodel import kernel_bench as kb
    from hetpart.targets import cpu_tvm_target
    from cpu_rule_ab import switched, turns

    target, dev = cpu_tvm_target(cores), tvm.cpu()

    def runner(graph, kernel):
        kmod = kb.single_kernel_module(graph, kernel)
        ex = kb.build_module(kmod.mod, target)
        args = kb.prepared_inputs(kmod, ex, dev)
        vm = relax.VirtualMachine(ex, dev)
        return lambda: vm["main"](*args)

    rows = []
    for a, b, n in conv_pairs(base_graph, blocked_graph):
        sides = [runner(base_graph, a), runner(blocked_graph, b)]
        if before:
            with switched(before):
                sides.append(runner(blocked_graph, b))
        best = turns(sides, calls, rounds, clock)
        rows.append({"nchw": a.func, "nchwc": b.func, "n": n, "shape": base_graph.tensors[a.inputs[0]].shape,
                     "ms": tuple(min(x) for x in best), "hi": tuple(max(x) for x in best)})
        if on_row is not None:
            on_row(rows[-1])
    for g, key in ((base_graph, "other_nchw"), (blocked_graph, "other_nchwc")):
        total, names = 0.0, collections.Counter()
        done: dict = {}
        for k in g.kernels.values():
            if any("conv2d" in o for o in k.ops):
                continue
            if k.signature not in done:
                f = runner(g, k)
                done[k.signature] = min(turns([f], calls, rounds, clock)[0])
            total += done[k.signature]
            names[re.sub(r"(?<=[a-z_])\d+(?=_|$)", "", k.func)] += 1
        rows.append({key: total, "kinds": dict(names)})
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _fmt(b: list[float]) -> str:
    return f"{min(b):.2f} [{min(b):.2f}-{max(b):.2f}]"


def _print_header(third: bool) -> None:
    print(f"   {'NCHW kernel':<40} {'input':<20}{'n':>3}{'NCHW ms':>16}{'NCHWc ms':>16}{'c/NCHW':>8}"
          + (f"{'before ms':>16}{'c/before':>9}" if third else ""), flush=True)


def _print_row(k: dict) -> None:
    """One :func:`per_kernel` row: least ms (largest round-least in brackets), with a third
    side (``--before``) its column and the NCHWc/before ratio too."""
    if "n" not in k:
        key = next(x for x in k if x.startswith("other"))
        print(f"   {key}: {k[key]:.3f} ms  {k['kinds']}", flush=True)
        return
    (a, b, *c), (ha, hb, *hc) = k["ms"], k["hi"]
    print(f"   {k['nchw']:<40} {str(list(k['shape'])):<20}{k['n']:>3}"
          f"{a:>8.3f} ({ha:.2f}){b:>8.3f} ({hb:.2f}){b / a:>8.2f}"
          + (f"{c[0]:>8.3f} ({hc[0]:.2f}){b / c[0]:>9.2f}" if c else ""), flush=True)


def _print_totals(rows: list[dict]) -> None:
    """The count-weighted sums of :func:`per_kernel`'s convolution rows, per side."""
    convs = [k for k in rows if "n" in k]
    sides = len(convs[0]["ms"]) if convs else 2
    tot = [sum(k["n"] * k["ms"][i] for k in convs) for i in range(sides)]
    print(f"   convolutions, count-weighted sum: NCHW {tot[0]:.2f} ms  NCHWc {tot[1]:.2f} ms  ({tot[1] / tot[0]:.2f})"
          + (f"  before {tot[2]:.2f} ms ({tot[2] / tot[0]:.2f})" if sides == 3 else ""), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block", type=int, default=8, help="channel block c of NCHW{c}c (8: AVX2's float lanes)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu-time", action="store_true", help="time by the calling thread's CPU time (needs --threads 1)")
    p.add_argument("--per-kernel", action="store_true", help="also time each distinct convolution alone, both layouts")
    p.add_argument("--cores", type=int, default=None,
                   help="num-cores of the target every side is built for (default: this host's); e.g. 16 on a "
                        "2-core box times a 16-core schedule's kernels per core")
    p.add_argument("--rules", action="store_true", help="list the fused kernels of both builds and their rules")
    p.add_argument("--before", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="also time the NCHWc build with this switch set (repeatable), e.g. "
                        "hetpart.kernels.rules.cpu_blocked_conv.BLOCKED_TILE=0")
    p.add_argument("--after", action="append", default=[], metavar="MODULE.ATTR=VALUE",
                   help="set this switch for every side (repeatable; --before overrides it on the third), e.g. "
                        "--after hetpart.kernels.separable_pool.BLOCKED_STRIDED=1 with --before ...=0")
    a = p.parse_args(argv)
    from cpu_rule_ab import switched

    if a.cpu_time and a.threads != 1:
        p.error("--cpu-time needs --threads 1")
    clock = time.thread_time if a.cpu_time else time.perf_counter
    for name in a.models:
        def on_model(r, name=name):
            clock_note = ", CPU time" if a.cpu_time else ""
            built = f", built for {a.cores} cores" if a.cores else ""
            print(f"== {name} batch {a.batch}, NCHW{a.block}c, {a.threads} thread(s){clock_note}{built}; "
                  f"import {r['import_s'][0]:.1f}/{r['import_s'][1]:.1f} s, build {r['build_s']:.1f} s")
            if r["left"]:
                print("   relax ops left unlegalised in the NCHWc build:", dict(r["left"]))
            if a.rules:
                print("-- NCHW (default) kernels and rules"); print("\n".join(r["rules_base"]))
                print(f"-- NCHW{a.block}c kernels and rules"); print("\n".join(r["rules"]))
            b, c, o = (min(x) for x in r["best"][:3])
            print(f"   NCHW {_fmt(r['best'][0])} ms   NCHW{a.block}c {_fmt(r['best'][1])} ms   "
                  f"ORT {_fmt(r['best'][2])} ms")
            print(f"   NCHW/ORT {b / o:.3f}  NCHWc/ORT {c / o:.3f}  NCHWc/NCHW {c / b:.3f}   "
                  f"err/ORT NCHW {r['err_ort'][0]:.2e}  NCHWc {r['err_ort'][1]:.2e}", flush=True)
            if a.before:
                print(f"   layout transforms: NCHWc {r['transforms'][0]}, before {r['transforms'][1]}")
                print(f"   NCHW{a.block}c before ({' '.join(a.before)}) {_fmt(r['best'][3])} ms  "
                      f"NCHWc/before {c / min(r['best'][3]):.3f}  err/ORT {r['err_ort'][2]:.2e}", flush=True)
            if a.per_kernel:
                _print_header(bool(a.before))

        with switched(tuple(a.after)):
            r = ab(name, a.batch, a.threads, a.calls, a.rounds, clock, a.block, a.rules, a.per_kernel,
                   tuple(a.before), on_model=on_model, on_row=_print_row, cores=a.cores)
        if "kernels" in r:
            _print_totals(r["kernels"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
