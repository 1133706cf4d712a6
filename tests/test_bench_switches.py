"""hetpart.bench.switches: the one ``module.NAME=value`` parser and setter of the A/B tools
(tools/cpu_rule_ab.py's 0/1 and tools/turn_cost.py's True/False both read), restored after."""

from __future__ import annotations

import types

import pytest

from hetpart import HetpartError
from hetpart.bench import switches
from hetpart.bench.switches import apply_switches, parse_switches, switched


@pytest.fixture
def mod(monkeypatch):
    """A module of switches of each type, importable by name."""
    import sys

    m = types.ModuleType("fake_switches")
    m.FLAG, m.COUNT, m.MARGIN, m.NAME, m.SIZES, m.LIMIT = True, 4, 0.9, "auto", (1, 2), None
    monkeypatch.setitem(sys.modules, "fake_switches", m)
    return m


@pytest.mark.parametrize("item, value", [
    ("FLAG=0", False), ("FLAG=1", True), ("FLAG=False", False), ("FLAG=True", True), ("FLAG=2", True),
    ("COUNT=10", 10), ("COUNT=0x10", 16), ("MARGIN=1", 1.0), ("MARGIN=0.5", 0.5), ("MARGIN=inf", float("inf")),
    ("NAME=fast", "fast"), ("NAME='fast'", "fast"), ("NAME=1", "1"), ("SIZES=(4, 8)", (4, 8)), ("LIMIT=3", 3),
    ("COUNT=None", None),
])
def test_values_take_the_switchs_type(mod, item, value):
    got = parse_switches([f"fake_switches.{item}"])[f"fake_switches.{item.split('=')[0]}"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("item, words", [
    ("fake_switches.FLAG", "not module.NAME=value"), ("FLAG=1", "not module.NAME=value"),
    ("fake_switches.NOPE=1", "has no NOPE"), ("no_such_module_here.X=1", "cannot import"),
    ("fake_switches.FLAG=yes", "bool switch"), ("fake_switches.COUNT=1.5", "int switch"),
    ("fake_switches.MARGIN=fast", "float switch"), ("fake_switches.SIZES=(1,", "tuple switch"),
])
def test_a_bad_item_is_a_hetpart_error(mod, item, words):
    with pytest.raises(HetpartError, match=words):
        parse_switches([item])


def test_switched_sets_for_the_block_and_restores_even_on_error(mod):
    with pytest.raises(RuntimeError):
        with switched(["fake_switches.FLAG=0", "fake_switches.COUNT=7"]) as values:
            assert values == {"fake_switches.FLAG": False, "fake_switches.COUNT": 7}
            assert mod.FLAG is False and mod.COUNT == 7
            raise RuntimeError
    assert mod.FLAG is True and mod.COUNT == 4


def test_nothing_is_set_when_one_item_is_bad(mod):
    with pytest.raises(HetpartError):
        with switched(["fake_switches.FLAG=0", "fake_switches.NOPE=1"]):
            pass
    assert mod.FLAG is True


def test_apply_returns_what_restores_and_switched_takes_parsed_values(mod):
    old = apply_switches({"fake_switches.MARGIN": 0.1})
    assert mod.MARGIN == 0.1 and old == {"fake_switches.MARGIN": 0.9}
    apply_switches(old)
    with switched({"fake_switches.NAME": "x"}):
        assert mod.NAME == "x"
    assert mod.NAME == "auto"


def test_a_real_rule_switch_reads_as_the_device_steps_write_it():
    """tools/device_round.sh writes bool switches as 0/1 (cpu_rule_ab, capped_rules_ab) and as
    True/False (turn_cost's --set/--variant): one parser reads both."""
    from hetpart.kernels import register_tile

    name = "hetpart.kernels.register_tile.BATCH_OUTSIDE_PANELS"
    assert parse_switches([f"{name}=0"]) == parse_switches([f"{name}=False"]) == {name: False}
    with switched([f"{name}=0"]):
        assert register_tile.BATCH_OUTSIDE_PANELS is False
    assert register_tile.BATCH_OUTSIDE_PANELS is True
    assert switches.__all__ == ["apply_switches", "parse_switches", "switched"]


@pytest.mark.parametrize("text, value", [("1", (1,)), ("1,", (1,)), ("(1,)", (1,)), ("1,2", (1, 2)),
                                         ("[2, 4]", (2, 4)), ("()", ())])
def test_a_tuple_switch_takes_one_value_as_a_one_tuple(mod, text, value):
    """A tuple switch (cpu_blocked_conv.IMAGE_PAIRS_STRIDES) takes a bare value as a one-tuple and a
    list as a tuple: ``--after ...IMAGE_PAIRS_STRIDES=1`` sets (1,), not the int 1."""
    assert parse_switches([f"fake_switches.SIZES={text}"]) == {"fake_switches.SIZES": value}
    name = "hetpart.kernels.rules.cpu_blocked_conv.IMAGE_PAIRS_STRIDES"
    assert parse_switches([f"{name}={text}"]) == {name: value}
