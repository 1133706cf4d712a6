"""Entry point of the ``partition`` console script.

User errors (:class:`HetpartError`) print one line and exit 1, with no traceback;
anything else is a bug in hetpart: its traceback is printed and the exit code is 2.
"""

from __future__ import annotations

import os
import sys
import traceback

from ..errors import HetpartError
from ..interrupts import InterruptWatch
from . import commands  # noqa: F401  (registers every subcommand)
from .registry import COMMANDS, DEFAULT, make_parser, summary
from .tvm_log import TvmLog, default_path


def _overview() -> str:
    lines = ["usage: partition MODEL [options]          plan (and optionally compile/run) a model",
             "       partition COMMAND [options]", "", "commands:"]
    for name, cls in sorted(COMMANDS.items()):
        lines.append(f"  {name:<12} {summary(cls)}")
    lines += ["", "MODEL is an .onnx file or zoo:NAME[:small]. `partition COMMAND --help` for details."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0 if argv else 1
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"hetpart {__version__}")
        return 0
    name = argv[0] if argv[0] in COMMANDS else DEFAULT
    rest = argv[1:] if argv[0] in COMMANDS else argv
    cls = COMMANDS[name]
    args = make_parser(cls).parse_args(rest)
    log = TvmLog(default_path(), "partition " + " ".join(argv))
    watch = InterruptWatch(only_over_default=True)
    try:
        with watch:
            if args.verbose:
                return int(cls().run(args) or 0)
            with log:
                return int(cls().run(args) or 0)
    except HetpartError as exc:
        if watch.interrupted:  # an error made of the interrupt (the importer's "TVM cannot lower ...")
            return _interrupted()
        print(f"partition: error: {exc.cli_message()}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:  # noqa: BLE001 - every other exception is a hetpart bug
        if watch.interrupted:  # Ctrl-C inside TVM's C++ comes back through its FFI as a bare RuntimeError
            return _interrupted()
        traceback.print_exc()
        print("partition: internal error (a bug in hetpart); please report it with the traceback above"
              + (f" and TVM's log of this run ({log.path})" if log.wrote else ""), file=sys.stderr)
        return 2


def _interrupted() -> int:
    print("partition: interrupted", file=sys.stderr)
    return 130


def _closed_pipe() -> int:
    """The reader of our output went away (``partition zoo | head -1``): stop quietly.

    Python would still try to flush stdout at exit and print a second BrokenPipeError,
    so stdout is pointed at /dev/null first.  Exit code: 128 + SIGPIPE, as a tool
    killed by the signal reports.
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
