"""Module switches set by name, as the A/B tools take them: ``module.NAME=value``.

Every rule has a module switch (an UPPER_CASE attribute) so that its "before" can be
measured; the tools set them from their command lines (``--set``, ``--before``,
``--after``, ``--session-before``, ``--variant``: tools/cpu_rule_ab.py, tools/turn_cost.py and
those that import cpu_rule_ab's ``switched``).  This is the one parser and the one context
manager they use.

* :func:`parse_switches`: ``["module.NAME=value", ...]`` -> ``{"module.NAME": value}``, the
  module imported and the attribute checked to exist; nothing is set.
* :func:`apply_switches`: set parsed switches; returns their previous values (to restore).
* :func:`switched`: ``with switched([...]):`` set for the block, restored however it ends.

Value syntax (one for every tool): a Python literal (``ast.literal_eval``), or bare text
for a str switch, converted to the type of the switch's current value: a bool from
``0``/``1``/``True``/``False`` (any int: nonzero is True), an int from an int, a float from
an int or a float (or ``inf``/``nan``), a str as written (quotes optional), a tuple from a
tuple or a list (``1,2``, ``(1, 2)``, ``[1, 2]``) or a bare scalar as a one-tuple (``1``: ``(1,)``).
A switch whose value is None or of another type (a dict) takes the literal as it is; ``None`` is
taken by any switch.  Anything else is a :class:`~hetpart.errors.HetpartError` naming the
item.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
from typing import Iterable, Iterator, Mapping

from ..errors import HetpartError


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_A_LITERAL


_NOT_A_LITERAL = object()


def _value(item: str, old, text: str):
    """``text`` as the switch (now ``old``) takes it (module docstring)."""
    lit = _literal(text)
    if lit is None:
        return None
    if isinstance(old, str):
        return lit if isinstance(lit, str) else text
    if isinstance(old, bool):
        if isinstance(lit, int):  # bool is an int too
            return bool(lit)
    elif isinstance(old, int):
        if isinstance(lit, int) and not isinstance(lit, bool):
            return lit
    elif isinstance(old, tuple):
        if isinstance(lit, (tuple, list)):
            return tuple(lit)
        if isinstance(lit, (int, float, str)):
            return (lit,)
    elif isinstance(old, float):
        if isinstance(lit, (int, float)) and not isinstance(lit, bool):
            return float(lit)
        with contextlib.suppress(ValueError):
            return float(text)  # inf, nan
    elif lit is not _NOT_A_LITERAL:
        return lit
    raise HetpartError(f"switch {item!r}: {text!r} is no value for a {type(old).__name__} switch "
                       "(a bool takes 0/1/True/False, an int an integer, a float a number, a tuple a "
                       "tuple, a list or one value)")


def parse_switches(items: Iterable[str]) -> dict[str, object]:
    """``["module.NAME=value", ...]`` -> ``{"module.NAME": value}`` in order, each value
    converted to its switch's type (module docstring).  Imports the modules; sets nothing.
    :class:`~hetpart.errors.HetpartError`: an item without ``=``, a module that does not
    import, an attribute it lacks, a value its type does not take."""
    parsed: dict[str, object] = {}
    for item in items:
        target, eq, text = item.partition("=")
        module, _, attr = target.strip().rpartition(".")
        if not eq or not module or not attr:
            raise HetpartError(f"switch {item!r} is not module.NAME=value")
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise HetpartError(f"switch {item!r}: cannot import {module}: {exc}") from None
        if not hasattr(mod, attr):
            raise HetpartError(f"switch {item!r}: {module} has no {attr}")
        parsed[f"{module}.{attr}"] = _value(item, getattr(mod, attr), text)
    return parsed


def apply_switches(values: Mapping[str, object]) -> dict[str, object]:
    """Set ``{"module.NAME": value}`` (as :func:`parse_switches` returns them); returns the
    values they had, which restore them when applied (in any order: one entry per name)."""
    old: dict[str, object] = {}
    for target, value in values.items():
        module, _, attr = target.rpartition(".")
        mod = importlib.import_module(module)
        old.setdefault(target, getattr(mod, attr))
        setattr(mod, attr, value)
    return old


@contextlib.contextmanager
def switched(items: Iterable[str] | Mapping[str, object]) -> Iterator[dict[str, object]]:
    """``with switched(["module.NAME=value", ...]):`` (or parsed values) those switches set
    for the block, restored after it however it ends; all parsed before any is set.
    Yields the values set."""
    values = dict(items) if isinstance(items, Mapping) else parse_switches(items)
    old = apply_switches(values)
    try:
        yield values
    finally:
        apply_switches(old)


__all__ = ["apply_switches", "parse_switches", "switched"]
