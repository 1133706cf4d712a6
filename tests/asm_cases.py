"""Reading the host assembly of a CPU build (``from asm_cases import ...``): the register-tile tests'
shared checks.

* ``llvm_asm(exe)``: the assembly of every LLVM module of a built executable (imports searched);
* ``fma_blocks_stack_moves(asm)``: ``(FMAs, vector moves to or from the stack)`` in the basic
  blocks that hold FMAs -- a tile whose accumulators stay in registers has FMAs and no such move.
"""

from __future__ import annotations


def llvm_asm(exe) -> str:
    def walk(mod):
        yield mod
        for sub in mod.imports:
            yield from walk(sub)

    return "\n".join(mod.inspect_source("asm") for mod in walk(exe.mod) if mod.kind == "llvm")


def fma_blocks_stack_moves(asm: str) -> tuple[int, int]:
    fmas = spills = 0
    for block in asm.split("\n.LBB"):
        if "vfmadd" not in block:
            continue
        lines = block.split("\n")
        fmas += sum("vfmadd" in ln for ln in lines)
        spills += sum("mm" in ln and ("(%rsp)" in ln or "(%rbp)" in ln) for ln in lines)
    return fmas, spills
