"""``partition``'s entry point: how it ends on Ctrl-C, whatever TVM made of the interrupt."""

from __future__ import annotations

import signal

import pytest

from hetpart.cli.main import main
from hetpart.cli.registry import COMMANDS
from hetpart.errors import ModelLoadError


def _ctrl_c_seen_through_ffi(*_):
    """What TVM does: the KeyboardInterrupt comes back as a bare RuntimeError."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        raise RuntimeError() from None


def _ctrl_c_seen_by_the_importer(*_):
    """What the importer then does: its "TVM cannot lower" ModelLoadError."""
    try:
        _ctrl_c_seen_through_ffi()
    except RuntimeError:
        raise ModelLoadError("zoo:mlp:small: TVM cannot lower the imported model: RuntimeError") from None


@pytest.mark.parametrize("run", [_ctrl_c_seen_through_ffi, _ctrl_c_seen_by_the_importer])
def test_ctrl_c_inside_tvm_is_an_interrupt_not_a_bug_or_a_model_error(monkeypatch, capsys, run):
    monkeypatch.setattr(COMMANDS["plan"], "run", run)
    assert main(["zoo:mlp:small"]) == 130
    err = capsys.readouterr().err
    assert err == "partition: interrupted\n", err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_bare_runtime_error_without_ctrl_c_is_still_a_bug(monkeypatch, capsys):
    def run(*_):
        raise RuntimeError()

    monkeypatch.setattr(COMMANDS["plan"], "run", run)
    assert main(["zoo:mlp:small"]) == 2
    assert "internal error" in capsys.readouterr().err
