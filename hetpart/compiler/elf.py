"""Check that a shared library's ELF headers stay inside the file, before it is loaded.

``dlopen`` maps a library's segments by the offsets and sizes its headers claim; a
file cut short (a truncated copy, a full disk) then faults with SIGBUS when a page
past its end is touched, and no Python error can be raised.  :func:`check_bounds`
reads the ELF header, the program headers and the section headers, and raises
:class:`~hetpart.errors.CompileError` if any of them, or any segment or section with
bytes in the file, reaches past the file's end.

In: a path.  Out: nothing, or the error.  It is a structural check, not a proof that
the code is sound: the sha256 in the manifest says whether it is the file that was
built, and only a trusted artifact should be loaded at all.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import CompileError

_MAGIC = b"\x7fELF"
_SHT_NOBITS = 8  # a section with no bytes in the file (.bss)

# (ELF header fields, program header, section header) struct layouts per class
_LAYOUT = {
    1: ("16xHHIIIIIHHHHHH", "IIIIIIII", "IIIIIIIIII"),   # 32-bit
    2: ("16xHHIQQQIHHHHHH", "IIQQQQQQ", "IIQQQQIIQQ"),   # 64-bit
}


def check_bounds(path: Path) -> None:
    """Raise CompileError unless every header, segment and section of ``path`` lies in the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # plain reads, not mmap: a file cut meanwhile must not fault here
            _check(path, f, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise CompileError(f"cannot read library {path}: {exc}") from exc


def _read(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def _check(path: Path, f, size: int) -> None:
    ident = _read(f, 0, 64)
    if size < 64 or ident[:4] != _MAGIC or ident[4] not in _LAYOUT or ident[5] not in (1, 2):
        raise _bad(path, "it is not an ELF shared library")
    wide = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"
    header, phdr, shdr = _LAYOUT[ident[4]]
    fields = struct.unpack_from(order + header, ident)
    phoff, shoff = fields[4], fields[5]
    phentsize, phnum, shentsize, shnum = fields[8], fields[9], fields[10], fields[11]
    for what, off, entsize, num, layout in (("program headers", phoff, phentsize, phnum, phdr),
                                            ("section headers", shoff, shentsize, shnum, shdr)):
        _within(path, what, off, entsize * num, size)
        if num and entsize < struct.calcsize(order + layout):
            raise _bad(path, f"its {what} are too short")
    table = _read(f, phoff, phentsize * phnum)
    for i in range(phnum):
        p = struct.unpack_from(order + phdr, table, i * phentsize)
        offset, filesz = (p[2], p[5]) if wide else (p[1], p[4])
        _within(path, f"segment {i}", offset, filesz, size)
    table = _read(f, shoff, shentsize * shnum)
    for i in range(shnum):
        sh = struct.unpack_from(order + shdr, table, i * shentsize)
        if sh[1] != _SHT_NOBITS:
            _within(path, f"section {i}", sh[4], sh[5], size)


def _within(path: Path, what: str, offset: int, length: int, size: int) -> None:
    if length and offset + length > size:
        raise _bad(path, f"its {what} end at byte {offset + length}, past the file's {size} bytes "
                         "(the file is truncated)")


def _bad(path: Path, why: str) -> CompileError:
    return CompileError(f"library {path} cannot be loaded: {why}; recompile the model")
