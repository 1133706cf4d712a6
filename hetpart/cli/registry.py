"""The one place subcommands are registered.

A subcommand is a class with a ``name``, a docstring (its first line is the one-line
summary in ``partition --help``; the whole docstring is its ``--help``), an
``add_arguments(parser)`` and a ``run(args) -> int``.  Decorate it with
:func:`register`; list its module in :data:`hetpart.cli.commands.MODULES`.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Protocol


class Command(Protocol):
    name: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: dict[str, type] = {}
DEFAULT = "plan"
"""The command ``partition MODEL`` runs when the first word names no subcommand."""


def register(cls):
    COMMANDS[cls.name] = cls
    return cls


def summary(cls) -> str:
    return (inspect.getdoc(cls) or "").splitlines()[0]


def make_parser(cls) -> argparse.ArgumentParser:
    prog = "partition" if cls.name == DEFAULT else f"partition {cls.name}"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=inspect.getdoc(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cls().add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TVM's own log on stderr (otherwise it goes to ~/.cache/hetpart/tvm.log)")
    return parser
