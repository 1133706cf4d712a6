from __future__ import annotations

import argparse

from ..options import add_model_options, parse_shapes
from ..registry import register


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@register
class TuneCommand:
    """Search faster schedules for MODEL's kernels (opt-in MetaSchedule tuning).

    Tunes every fused kernel of MODEL for one target with up to N measured
    candidates in total, and stores the best schedules in a tuning database (a
    directory).  Once the default database holds records, compiling
    (`partition MODEL --compile`) and the cost model's measurements use the tuned
    schedules for the kernels it has, and hetpart's own schedules for the rest.

    Where the database lives: --db DIR, else $HETPART_TUNING_DB, else
    $XDG_CACHE_HOME/hetpart/tuning/<kind>-<arch> (~/.cache when XDG_CACHE_HOME is
    unset).  Builds read the same place ($HETPART_TUNING_DB, else the default), so
    after tuning into another --db DIR, set HETPART_TUNING_DB=DIR to use it.
    Running tune again adds to the database.

    Ctrl-C stops the search and keeps every schedule found so far.

    Tuning takes minutes to hours (more trials: better schedules) and needs the
    tune extra: pip install -e ".[tune]" (xgboost-cpu, psutil, cloudpickle).
    --target cuda measures candidates on this machine's GPU, so it needs one.
    Kernels already in a cost-model profile are not measured again, so their
    timings predate tuning: `partition profile MODEL --profile NEW.json` measures
    the tuned schedules.

    examples:
      partition tune zoo:resnet18 --target cpu --trials 200
      partition tune model.onnx --shape input=1,3,224,224 --target cuda --trials 2000
      partition tune zoo:mlp:small --target cpu --trials 8 --db ./tuning-db
    """

    name = "tune"

    def add_arguments(self, parser):
        add_model_options(parser)
        g = parser.add_argument_group("tuning")
        g.add_argument("--target", required=True, choices=["cpu", "cuda"],
                       help="the device to tune for (cuda: this machine's GPU)")
        g.add_argument("--trials", required=True, type=_positive_int, metavar="N",
                       help="measured candidates in total, over all kernels (tens per kernel at least)")
        g.add_argument("--db", metavar="DIR", default=None,
                       help="tuning database directory (default: $HETPART_TUNING_DB, else "
                            "$XDG_CACHE_HOME/hetpart/tuning/<kind>-<arch>)")
        g.add_argument("--cuda-arch", metavar="SM", default=None,
                       help="CUDA arch to tune for (e.g. sm_90; default: the local GPU's)")

    def run(self, args) -> int:
        import os

        import tvm

        from ... import importer, targets
        from ...errors import NoGPUError
        from ...kernels import rules_applied
        from ...kernels.tuning import (
            ENV_TUNING_DB,
            apply_database,
            default_database_dir,
            require_tune_deps,
            tune,
        )

        require_tune_deps()  # before the (slow) model import
        spec = targets.resolve(args.target, cuda_arch=args.cuda_arch)
        if spec.is_gpu and not targets.cuda_available():  # --cuda-arch alone cannot measure
            raise NoGPUError("no CUDA GPU is usable on this machine; tuning for cuda measures candidates on "
                             "the GPU, so run `partition tune` on the machine that has it")
        graph = importer.load(args.model, parse_shapes(args.shape))
        target = spec.tvm_target
        auto_dir = default_database_dir(target)  # what compile and the cost model look at
        db = os.path.abspath(os.path.expanduser(args.db)) if args.db else auto_dir
        print(f"tuning {graph.name} for {targets.target_arch(target) or target.kind.name} "
              f"({target.kind.name}), {args.trials} trials; database: {db}")
        print("Ctrl-C stops the search and keeps the schedules found so far")
        n_records = tune(graph.module, target, args.trials, db, progress=True)
        tuned = sum(r == "tuned" for r in rules_applied(apply_database(graph.module, target, db)).values())
        funcs = sum(isinstance(f, tvm.tirx.PrimFunc) for _, f in graph.module.functions_items())
        print(f"tuning database: {db}")
        print(f"{n_records} records; tuned schedules for {tuned} of {funcs} kernel functions of {graph.name}")
        if not n_records:
            print(f"no schedule was recorded: every candidate failed or the search was stopped early "
                  f"(logs: {os.path.join(db, 'logs')})")
            return 1
        if db == auto_dir:
            print(f"compiling and profiling for {target.kind.name} use it automatically "
                  f"(e.g. `partition {args.model} --compile`)")
        else:
            print(f"to use it, set {ENV_TUNING_DB}={db} when compiling or profiling, e.g.\n"
                  f"  {ENV_TUNING_DB}={db} partition {args.model} --compile")
        return 0
