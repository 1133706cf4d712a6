"""Per-kernel hashes of an all-CPU build, to show a change to *how* a model is built changed
no generated code: each scheduled PrimFunc's TIR script and each function's machine code.

    PYTHONPATH=. python tools/build_code_hash.py zoo:resnet50 zoo:resnet50:block=16 /tmp/dn.onnx:block=16 \\
        -o /tmp/after.json
    PYTHONPATH=. python tools/build_code_hash.py ... --serial -o /tmp/serial.json   # parallel_build off
    PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/work/main python tools/build_code_hash.py ... -o /tmp/main.json
    python tools/build_code_hash.py --diff /tmp/main.json /tmp/after.json

A case is ``MODEL[:block=C]`` (``C``: the channel-blocked import ``conv_block=C``).  Per case the
model is imported and built with :func:`hetpart.kernels.build` for this machine's CPU, exported
to a shared library (:func:`hetpart.kernels.parallel_build.export_library` where it exists), and:

* ``import/constants``: sha256 of the imported module's constants (the weights the import
  folded: FoldConstant's results), in walk order;
* ``tir/<function>``: sha256 of the script of every PrimFunc of the module handed to TVM's
  lowering (scheduled, weights packed and folded);
* ``asm/<symbol>``: sha256 of the symbol's ``objdump -d`` text with addresses taken out (the
  instruction column only; a branch or call keeps its target's name, and its offset when inside
  the same function; RIP-relative displacements dropped).  A symbol defined in several objects
  (``__tvm_set_raised_6``, one per LLVM module) hashes the sorted set of its distinct bodies.

Prints ``{case: {key: sha256}}`` as JSON (``-o`` writes it); ``--diff A B`` prints the keys
that differ or are missing and exits 1 if any do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_SYMBOL = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_TARGET = re.compile(r"\b[0-9a-f]+ <([^>+]+)(\+0x[0-9a-f]+)?>")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def disassembly(path: str) -> dict[str, list[str]]:
    """``{symbol: [normalised instruction, ...]}`` of the library's code, each symbol cut at its
    size (``nm -S``: padding, or an unnamed copy of a helper another object also defines, is not
    part of the function before it); a symbol defined more than once maps to its bodies joined,
    sorted, distinct (see the module doc)."""
    sizes = {}
    for line in subprocess.run(["nm", "-S", "--defined-only", path], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[int(parts[0], 16)] = int(parts[1], 16)
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], check=True, capture_output=True,
                         text=True).stdout
    bodies: dict[str, set[str]] = {}
    name, lines, end = None, [], 0

    def close():
        if name is not None:
            bodies.setdefault(name, set()).add("\n".join(lines))

    for line in out.splitlines():
        m = _SYMBOL.match(line)
        if m:
            close()
            start = int(line.split()[0], 16)
            name, lines, end = m.group(1), [], start + sizes.get(start, 1 << 62)
        elif name is not None and "\t" in line:
            addr, _, insn = line.partition("\t")
            if int(addr.strip().rstrip(":"), 16) < end:
                lines.append(normalise(insn, name))
    close()
    return {k: sorted(v) for k, v in bodies.items()}


def normalise(insn: str, symbol: str) -> str:
    """One instruction without addresses: ``call 5d60 <f>`` -> ``call <f>``; a target in
    ``symbol`` keeps its offset, one elsewhere (another function, constant data) does not;
    ``0x1234(%rip)`` -> ``X(%rip)``."""
    insn = re.sub(r"0x[0-9a-f]+\(%rip\)", "X(%rip)", insn)

    def target(m):
        off = m.group(2) if m.group(1) == symbol and m.group(2) else ""
        return f"<{m.group(1)}{off}>"

    insn = _TARGET.sub(target, insn)
    return re.sub(r"\s+", " ", insn).strip()


def case_hashes(case: str) -> dict[str, str]:
    import tvm
    from tvm import tirx

    from hetpart import importer, kernels, targets

    model, _, opt = case.partition(":block=")
    graph = importer.load(model, conv_block=int(opt) if opt else None)
    seen: list = []
    try:
        from hetpart.kernels import parallel_build
    except ImportError:  # a checkout from before parallel_build: capture what tvm.compile gets
        parallel_build = None
    owner, attr = (parallel_build, "compile") if parallel_build is not None else (tvm, "compile")
    real = getattr(owner, attr)

    def capture(mod, *args, **kwargs):
        seen.append(mod)
        return real(mod, *args, **kwargs)

    setattr(owner, attr, capture)
    try:
        exe = kernels.build(graph.module, targets.cpu_tvm_target())
    finally:
        setattr(owner, attr, real)
    out = {f"tir/{gv.name_hint}": sha(f.script()) for gv, f in seen[-1].functions_items()
           if isinstance(f, tirx.PrimFunc)}
    out["import/constants"] = constants_hash(graph.module)
    with tempfile.TemporaryDirectory() as d:
        lib = str(Path(d) / "lib.so")
        if parallel_build is not None:
            parallel_build.export_library(exe, lib)
        else:
            exe.export_library(lib)
        for name, bodies in disassembly(lib).items():
            out[f"asm/{name}"] = sha("\n\n".join(bodies))
    return dict(sorted(out.items()))


def constants_hash(mod) -> str:
    """sha256 of every constant of the imported module's Relax functions (shape, dtype, bytes),
    in the order a post-order walk meets them: the weights the import folded."""
    import tvm
    from tvm import relax

    h = hashlib.sha256()

    def visit(expr):
        if isinstance(expr, tvm.ir.GenericConst):
            a = expr.value.numpy()
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return h.hexdigest()


def diff(a: dict, b: dict) -> list[str]:
    lines = []
    for case in sorted(set(a) | set(b)):
        x, y = a.get(case, {}), b.get(case, {})
        bad = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
        lines.append(f"{case}: {len(x) - len([k for k in bad if k in x])}/{len(x)} equal"
                     + (f"; differ: {', '.join(bad[:20])}" if bad else ""))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", nargs="*", help="MODEL[:block=C]")
    p.add_argument("--serial", action="store_true", help="hetpart.kernels.parallel_build.ENABLED off")
    p.add_argument("-o", "--out", help="write the JSON here too")
    p.add_argument("--diff", nargs=2, metavar=("A", "B"), help="compare two outputs")
    a = p.parse_args(argv)
    if a.diff:
        x, y = (json.loads(Path(f).read_text()) for f in a.diff)
        lines = diff(x, y)
        print("\n".join(lines))
        return 1 if any("differ" in ln for ln in lines) else 0
    if a.serial:
        from hetpart.kernels import parallel_build

        parallel_build.ENABLED = False
    got = {}
    for case in a.cases:
        got[case] = case_hashes(case)
        print(f"{case}: {len(got[case])} hashes", file=sys.stderr, flush=True)
    text = json.dumps(got, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
