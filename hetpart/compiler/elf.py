"""Check that a shared library's ELF headers stay inside the file, before it is loaded.

``dlopen`` maps a library's segments by the offsets and sizes its headers claim; a
file cut short (a truncated copy, a full disk) then faults with SIGBUS when a page
past its end is touched, and no Python error can be raised.  :func:`check_bounds`
reads the ELF header, the program headers and the section headers, and raises
:class:`~hetpart.errors.CompileError` if any of them, or any segment or section with
bytes in the file, reaches past the file's end.

It also checks the one piece of data TVM reads by a length stored inside it: the
``__tvm_ffi__library_bin`` blob (the serialised modules ``export_library`` packs in,
weights included) starts with its own byte count, which ``ProcessLibraryBin`` trusts.
LLVM 22 writes a blob of 4 GiB or more cut to its size modulo 2**32 (a 32-bit fragment
size; :mod:`hetpart.compiler.external`), so the count runs past the loaded segment and
the load segfaults; here that is a CompileError saying to recompile.

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
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_PT_LOAD = 1
LIBRARY_BIN = b"__tvm_ffi__library_bin"

# (ELF header fields, program header, section header) struct layouts per class
_LAYOUT = {
    1: ("16xHHIIIIIHHHHHH", "IIIIIIII", "IIIIIIIIII"),   # 32-bit
    2: ("16xHHIQQQIHHHHHH", "IIQQQQQQ", "IIQQQQIIQQ"),   # 64-bit
}
# symbol table entry per class, and where (name, value) sit in it
_SYM = {1: ("IIIBBH", 0, 1), 2: ("IBBHQQ", 0, 4)}


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
    loads = []  # (file offset, virtual address, bytes in the file) of each PT_LOAD segment
    for i in range(phnum):
        p = struct.unpack_from(order + phdr, table, i * phentsize)
        offset, vaddr, filesz = (p[2], p[3], p[5]) if wide else (p[1], p[2], p[4])
        _within(path, f"segment {i}", offset, filesz, size)
        if p[0] == _PT_LOAD:
            loads.append((offset, vaddr, filesz))
    table = _read(f, shoff, shentsize * shnum)
    sections = [struct.unpack_from(order + shdr, table, i * shentsize) for i in range(shnum)]
    for i, sh in enumerate(sections):
        if sh[1] != _SHT_NOBITS:
            _within(path, f"section {i}", sh[4], sh[5], size)
    blob = _symbol_value(f, sections, order, ident[4], LIBRARY_BIN)
    if blob is not None:
        _check_blob(path, f, blob, loads)


def _symbol_value(f, sections, order: str, elf_class: int, name: bytes) -> int | None:
    """The value (virtual address) of symbol ``name`` in the dynamic symbol table (else
    the static one), None when neither defines it."""
    layout, at_name, at_value = _SYM[elf_class]
    entsize = struct.calcsize(order + layout)
    for kind in (_SHT_DYNSYM, _SHT_SYMTAB):
        for sh in sections:
            if sh[1] != kind or sh[6] >= len(sections):
                continue
            strtab = sections[sh[6]]
            strings = _read(f, strtab[4], strtab[5])
            table = _read(f, sh[4], sh[5])
            for i in range(len(table) // entsize):
                sym = struct.unpack_from(order + layout, table, i * entsize)
                start = sym[at_name]
                if strings[start:start + len(name) + 1] == name + b"\0" and sym[at_value]:
                    return sym[at_value]
    return None


def _check_blob(path: Path, f, vaddr: int, loads) -> None:
    """The blob at ``vaddr`` (its 8-byte count, then that many bytes) lies in the file
    part of the segment holding it."""
    for offset, start, filesz in loads:
        if start <= vaddr < start + filesz:
            at = offset + (vaddr - start)
            end = offset + filesz
            break
    else:
        raise _bad(path, "its embedded module data lies in no loaded segment")
    head = _read(f, at, 8)
    if len(head) < 8:
        raise _bad(path, "its embedded module data is cut before its header")
    count = struct.unpack("<Q", head)[0]  # ProcessLibraryBin reads it little-endian
    if at + 8 + count > end:
        raise _bad(path, f"its embedded module data declares {count} bytes but the file holds {end - at - 8}: "
                         "TVM's LLVM cut it at 4 GiB (a partition embedding that many weights), and loading "
                         "it would crash; this hetpart keeps such weights in a file beside the library")


def _within(path: Path, what: str, offset: int, length: int, size: int) -> None:
    if length and offset + length > size:
        raise _bad(path, f"its {what} end at byte {offset + length}, past the file's {size} bytes "
                         "(the file is truncated)")


def _bad(path: Path, why: str) -> CompileError:
    return CompileError(f"library {path} cannot be loaded: {why}; recompile the model")
