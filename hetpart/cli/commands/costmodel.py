from __future__ import annotations

from ...errors import HetpartError
from ..options import add_profile_options, parse_shapes
from ..registry import register


@register
class CostModelCommand:
    """Show the cost-model profile in use, its accuracy, or what MODEL's kernels cost.

    Without options: which profile is used (and whether it was measured on this
    machine), how many kernels it holds per device and op class, the per-call
    overheads and the transfer fits.  --eval: held-out accuracy of the predictor for
    unmeasured kernels, median and 90th-percentile relative error per op class and
    device: leave-shapes-out by default (each measured kernel predicted by a fit
    without it), or --held-out model (each model's kernels predicted by a fit that
    saw none of that model's, at any batch size: what a new model meets).
    With MODEL: every kernel's cost on each device, marked (p) where predicted.

    examples:
      partition costmodel
      partition costmodel --eval
      partition costmodel --eval --held-out model
      partition costmodel zoo:bert:small --profile prof.json
    """

    name = "costmodel"

    def add_arguments(self, parser):
        m = parser.add_argument_group("model")
        m.add_argument("model", nargs="?", metavar="MODEL", help="an .onnx file or zoo:NAME[:small] to cost")
        m.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,...",
                       help="fix an input's shape, e.g. --shape input=1,3,224,224 (repeatable)")
        add_profile_options(parser)
        parser.add_argument("--eval", action="store_true", help="report held-out predictor accuracy")
        parser.add_argument("--held-out", choices=("shape", "model"), default=None,
                            help="with --eval: leave out one kernel shape (default) or one whole model at a time")

    def run(self, args) -> int:
        from ...costmodel import CostModel, resolve_profile
        from ...costmodel.predictor import evaluate, render_eval

        _check(args)
        prof = resolve_profile(args.profile)
        print(f"profile: {prof.origin}")
        if args.eval:
            held_out = args.held_out or "shape"
            print(f"held out: one {held_out} at a time")
            print(render_eval(evaluate(prof, by=held_out)))
        elif args.model:
            self._model_costs(CostModel(prof), args)
        else:
            print(render_profile(prof))
        return 0

    def _model_costs(self, cm, args) -> None:
        from ... import importer

        graph = importer.load(args.model, parse_shapes(args.shape))
        cm.add_graph(graph)  # unmeasured kernels are predicted with their schedule rule
        devices = list(cm.profile.overheads)
        print(f"{'kernel':<9} {'op class':<10} {'function':<40} " + " ".join(f"{d + ' us':>12}" for d in devices))
        for k in graph.nodes:
            cells = []
            for d in devices:
                cost = cm.kernel_cost(k, d)
                cells.append(f"{cost * 1e6:11.1f}{'p' if cm.is_predicted(k, d) else ' '}")
            print(f"{k.id:<9} {k.op_class:<10} {k.func[:40]:<40} " + " ".join(cells))
        print("(p) predicted, not measured")


def _check(args) -> None:
    """Refuse, before any work, an option the chosen mode would ignore: --held-out
    without --eval, or a MODEL with --eval (which rates the profile, not a model)."""
    if args.held_out and not args.eval:
        raise HetpartError(f"--held-out {args.held_out} chooses what --eval leaves out; add --eval")
    if args.eval and args.model:
        raise HetpartError(f"--eval rates the profile's predictor on every kernel it measured, not one model; "
                           f"drop MODEL ({args.model}), or drop --eval to see what MODEL's kernels cost")


def _wake_text(device: str, oh) -> str:
    """The wake cost as the cost model prices it, and whether it was measured."""
    from ...costmodel.cost_model import DEFAULT_WAKE_S

    if oh.wake_s is not None:
        return f"{oh.wake_s * 1e6:.2f} us"
    return f"not measured (older profile; priced at the default {DEFAULT_WAKE_S.get(device, 0.0) * 1e6:.0f} us)"


def render_profile(prof) -> str:
    """Counts per device and op class, overheads (the CPU's last-level cache), transfer fits."""
    from ...importer.summary import human_bytes

    lines = [f"machine: {prof.fingerprint.describe()}, TVM {prof.fingerprint.tvm_version}",
             f"models profiled: {', '.join(sorted(prof.models)) or 'none'}"]
    for d in prof.devices:
        recs = prof.kernels[d].values()
        by_class: dict[str, int] = {}
        for r in recs:
            by_class[r.features.op_class] = by_class.get(r.features.op_class, 0) + 1
        failed = sum(r.failed for r in recs)
        dynamic = sum(r.status == "dynamic" for r in recs)
        lines.append(f"{d}: {len(recs)} kernels ({failed} failed, {dynamic} data-dependent, predicted): "
                     + ", ".join(f"{c} {n}" for c, n in sorted(by_class.items())))
    for d, oh in prof.overheads.items():
        lines.append(f"{d} overheads: call {oh.call_s * 1e6:.2f} us, launch {oh.launch_s * 1e6:.2f} us/kernel, "
                     f"empty call {oh.empty_s * 1e6:.2f} us, switch {oh.switch_s * 1e6:.2f} us, "
                     f"wake {_wake_text(d, oh)}"
                     + (f", cold weights read at {oh.weight_read_Bps / 1e9:.1f} GB/s" if oh.weight_read_Bps else "")
                     + (f", last-level cache {human_bytes(prof.cpu_llc_bytes)} (models whose weights fit are "
                        "priced hot)" if d == "cpu" and prof.cpu_llc_bytes else ""))
    if prof.transfers:
        for key, fit in sorted(prof.transfers.fits.items()):
            lines.append(f"transfer {key}: latency {fit.latency_s * 1e6:.1f} us, {fit.bandwidth_Bps / 1e9:.2f} GB/s")
    else:
        lines.append("transfers: not measured (partition profile --transfer, on a GPU machine)")
    return "\n".join(lines)
