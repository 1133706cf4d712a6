"""Hash the code hetpart generates for a fixed set of kernels, to show a refactor
changed no generated code.

For each case (zoo models, small, at batches that reach every GPU rule: tensor
cores, split-K, SIMT tiles, dlight's fallbacks) the fused module is built with
:func:`hetpart.kernels.build` for this machine's CPU (LLVM IR hashed) and
cross-compiled for ``sm_90`` (CUDA C hashed) -- no GPU needed.  Prints one JSON
object ``{case/target: sha256}``; with ``--compare FILE`` (an earlier output)
prints the cases that differ and exits 1 if any do.

    PYTHONPATH=. python tools/kernel_code_hash.py > before.json
    ... change the code ...
    PYTHONPATH=. python tools/kernel_code_hash.py --compare before.json

``--no-tf32`` / ``--no-splitk`` build with those switches off (the kernel options
the CLI's ``--no-tf32`` / ``--split-k off`` give; on a checkout from before
:class:`~hetpart.kernels.options.KernelOptions` existed, the environment variables
``HETPART_TF32=0`` / ``HETPART_SPLITK=0`` that did the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys

CASES = {
    "mlp_b32": "zoo:mlp:small:batch=32",
    "resnet18_b1": "zoo:resnet18:small",
    "resnet18_b32": "zoo:resnet18:small:batch=32",
    "bert_b1": "zoo:bert:small",
    "bert_b32": "zoo:bert:small:batch=32",
    # BERT-base's shapes (one layer) at batch 32: tensor-core matmuls.
    "bert_base_l1_b32": "zoo:bert:small:layers=1,hidden=768,heads=12,intermediate=3072,seq_len=128,batch=32",
    # ResNet-18 at batch 32: tensor-core convolutions, split K on the 7x7 layers.
    "resnet18_full_b32": "zoo:resnet18:batch=32",
}


def _canonical_addresses(text: str) -> str:
    """``text`` with every hexadecimal address (LLVM's TBAA metadata names buffers by
    the address of a TVM object, which differs from run to run) replaced by its order
    of first appearance."""
    seen: dict[str, str] = {}
    return re.sub(r"0x[0-9a-f]{6,}", lambda m: seen.setdefault(m.group(0), f"@{len(seen)}"), text)


def _source(exe, kind: str) -> str:
    """The ``kind`` ("cuda" or "llvm") source of every module an executable holds."""
    out = []

    def walk(mod):
        if mod.kind == kind:
            out.append(mod.inspect_source("cuda" if kind == "cuda" else "ll"))
        for sub in mod.imports:
            walk(sub)

    walk(exe.mod)
    return _canonical_addresses("\n".join(out))


def _options(args):
    """The kernel options the switches ask for (None: the build's defaults)."""
    try:
        from hetpart.kernels.options import KernelOptions
    except ImportError:  # before kernel options existed: the switches were environment variables
        import os

        if args.no_tf32:
            os.environ["HETPART_TF32"] = "0"
        if args.no_splitk:
            os.environ["HETPART_SPLITK"] = "0"
        return None
    return KernelOptions(tf32=not args.no_tf32, split_k="off" if args.no_splitk else "all")


def hashes(args) -> dict[str, str]:
    from hetpart import importer, kernels
    from hetpart.targets import cpu_tvm_target, cuda_tvm_target

    try:  # the CPU code as one LLVM module, as every earlier baseline hashed it (a build of several
        # modules, kernels.parallel_build, prints its IR in another order; tools/build_code_hash.py
        # compares such builds function by function)
        from hetpart.kernels import parallel_build

        parallel_build.ENABLED = False
    except ImportError:
        pass

    options = _options(args)
    extra = {} if options is None else {"options": options}
    out = {}
    for case, spec in CASES.items():
        if args.only and case not in args.only:
            continue
        graph = importer.load(spec)
        for name, target, kind in (("cpu", cpu_tvm_target(), "llvm"), ("sm_90", cuda_tvm_target("sm_90"), "cuda")):
            exe = kernels.build(graph.module, target, cuda_graph=False, **extra)
            out[f"{case}/{name}"] = hashlib.sha256(_source(exe, kind).encode()).hexdigest()
            print(case, name, out[f"{case}/{name}"][:12], file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", help="an earlier output to compare with")
    ap.add_argument("--only", nargs="*", help="cases to hash (default: all)")
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument("--no-splitk", action="store_true")
    args = ap.parse_args()
    got = hashes(args)
    print(json.dumps(got, indent=1, sort_keys=True))
    if not args.compare:
        return 0
    with open(args.compare, encoding="utf-8") as f:
        want = json.load(f)
    differ = sorted(k for k in got if want.get(k) != got[k])
    for k in differ:
        print(f"DIFFERS {k}: {want.get(k, 'absent')[:12]} -> {got[k][:12]}", file=sys.stderr)
    print(f"{len(got) - len(differ)}/{len(got)} hashes equal", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
