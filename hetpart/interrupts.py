"""Telling Ctrl-C apart when TVM's C++ swallowed it.

Ctrl-C inside TVM's C++ (an import's lowering, a compile, MetaSchedule's search) comes
back through its FFI as a bare ``RuntimeError``, not a ``KeyboardInterrupt``.  While an
:class:`InterruptWatch` is active, SIGINT still raises ``KeyboardInterrupt`` as Python's
default handler does, and also sets ``interrupted``, so the caller can treat such an
error as the interrupt it was (the CLI's exit 130, tuning keeping its records).

Only the main thread can watch signals: elsewhere the watch does nothing and
``interrupted`` stays False.  ``only_over_default``: install the handler only where
Python's default SIGINT handler is in place (the CLI: a handler its caller installed is
left alone); otherwise it replaces whatever handler is there for the block.  The old
handler is put back however the block ends.  Imports nothing heavy.
"""

from __future__ import annotations

import signal
import threading


class InterruptWatch:
    """A context manager: ``with InterruptWatch() as watch: ...; watch.interrupted``."""

    def __init__(self, *, only_over_default: bool = False) -> None:
        self.interrupted = False
        self._only_over_default = only_over_default
        self._old = None

    def _handler(self, signum, frame):
        self.interrupted = True
        signal.default_int_handler(signum, frame)

    def __enter__(self) -> "InterruptWatch":
        if threading.current_thread() is not threading.main_thread():
            return self
        if self._only_over_default and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return self
        self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
