"""Reading a scheduled PrimFunc's loop nest in tests (which blocks each loop holds), and
running a GPU schedule's computation on the CPU (:func:`serial_everywhere`)."""

from __future__ import annotations


def loops_and_blocks(stmt) -> list:
    """``(For, names of the blocks under it)`` for every loop of ``stmt``, outermost first
    (pre-order: a loop comes before the loops nested in it)."""
    import tvm
    from tvm import tirx

    out = []

    def visit(node) -> list[str]:
        if isinstance(node, tirx.For):
            at = len(out)
            out.append(None)  # this loop's place, before its inner loops
            names = visit(node.body)
            out[at] = (node, names)
            return names
        if isinstance(node, tirx.SeqStmt):
            return [n for s in node.seq for n in visit(s)]
        if isinstance(node, tirx.IfThenElse):
            return visit(node.then_case) + (visit(node.else_case) if node.else_case is not None else [])
        if isinstance(node, tvm.s_tir.SBlockRealize):
            return [node.block.name_hint] + visit(node.block.body)
        if hasattr(node, "body"):
            return visit(node.body)
        return []

    visit(stmt)
    return out


def serial_everywhere(func):
    """``func`` with every thread loop serial, every buffer global and no loop or block
    annotations (software pipelines, register stages, async copies): the same computation
    (TIR's meaning does not depend on them), runnable on a CPU."""
    import re

    import tvm

    text = func.script()
    text = re.sub(r'T\.thread_binding\(([^,]+), thread="[^"]+"(, annotations=\{[^}]*\})?\)', r"T.serial(\1)", text)
    text = re.sub(r', scope="(shared|local|shared\.dyn|warp)"', "", text).replace("private=True", "private=False")
    text = re.sub(r", annotations=\{[^}]*\}", "", text)
    text = re.sub(r"\n\s*T\.sblock_attr\(\{[^}]*\}\)", "", text)
    return tvm.script.from_source(text)
