"""hetpart.interrupts.InterruptWatch: SIGINT still interrupts, and is remembered."""

from __future__ import annotations

import os
import signal

import pytest

from hetpart.interrupts import InterruptWatch


def test_sigint_raises_and_is_remembered_then_the_old_handler_is_back():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with InterruptWatch() as watch:
            os.kill(os.getpid(), signal.SIGINT)
    assert watch.interrupted
    assert signal.getsignal(signal.SIGINT) is before


def test_a_handler_the_caller_installed_is_left_alone_only_over_default():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    old = signal.signal(signal.SIGINT, mine)
    try:
        with InterruptWatch(only_over_default=True) as watch:
            assert signal.getsignal(signal.SIGINT) is mine
        with InterruptWatch() as replacing:
            assert signal.getsignal(signal.SIGINT) is not mine
        assert signal.getsignal(signal.SIGINT) is mine
        assert not watch.interrupted and not replacing.interrupted
    finally:
        signal.signal(signal.SIGINT, old)
