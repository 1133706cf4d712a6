"""The ``partition`` command line: one subcommand per module in :mod:`.commands`."""

from .main import main

__all__ = ["main"]
