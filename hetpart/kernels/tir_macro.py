"""``macro``: TVMScript's ``T.macro`` without reading source files at each expansion.

A TVMScript macro, when a ``T.prim_func`` being parsed calls it, finds the parser in the
globals of the nearest calling frame that has one.  TVM's ``ScriptMacro._find_parser_def``
walks those frames with ``inspect.getouterframes``, which also reads each frame's source
line and resolves its module (a scan of ``sys.modules`` per frame): ~130 frames deep in a
wgmma GEMM's parse, that was 18 of the 24 s that four ViT-block substitutions take.
:class:`TIRMacro` walks the same frames (``f_back``, innermost first) and reads only their
globals; everything else -- hygiene, the block-name suffixes per expansion -- is TVM's.

Inputs/outputs: :func:`macro` decorates a function exactly as ``T.macro`` does (``@macro``
or ``@macro(hygienic=False)``) and returns a callable to use inside a ``T.prim_func``.
Invariant: the PrimFunc a macro expands into is the one ``T.macro`` gives (same parser,
same frames searched in the same order).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

from tvm.script.parser._core import scan_macro, utils
from tvm.script.parser.core.parser import ScriptMacro
from tvm.tirx.script.parser.entry import TIRMacro as _TvmTIRMacro


class TIRMacro(_TvmTIRMacro):
    """TVM's ``TIRMacro`` with a frame walk that reads only each frame's globals."""

    def _find_parser_def(self):
        frame = sys._getframe()
        while frame is not None:
            parser = frame.f_globals.get(ScriptMacro.parser_object_name)
            if parser is not None:
                return parser
            frame = frame.f_back
        raise RuntimeError(f"{ScriptMacro.parser_object_name} not available")


def macro(*args, hygienic: bool = True) -> Callable:
    """``T.macro`` (same arguments, same expansion) on :class:`TIRMacro`."""

    def _decorator(func: Callable) -> Callable:
        source, closure_vars = scan_macro(func, utils.inspect_function_capture(func))
        obj = TIRMacro(source, closure_vars, func, hygienic)

        def wrapper(*args, **kwargs):
            return obj(*args, **kwargs)

        return wrapper

    if len(args) == 0:
        return _decorator
    if len(args) == 1 and inspect.isfunction(args[0]):
        return _decorator(args[0])
    raise ValueError("Invalid use of macro. Usage: @macro or @macro()")
