"""Int8 matmul cases for the VNNI int8 matmul rule's tests (``from int8_cases import ...``):

* ``RNG``: the seeded generator ``int8_matmul`` draws its weights from (shared, as the tests'
  sequence of draws is);
* ``target_4_cores(mcpu)``: an LLVM target for this host's triple with that ``-mcpu`` at 4 cores;
* ``int8_matmul(a_shape, n, atype, btype)``: the fused module of ``float(A @ W) * 0.5`` and W;
* ``x86_asm(exe)`` / ``scheduled_rule(mod, target)``: a build's x86 assembly; the rule that
  schedules the module's one PrimFunc;
* ``check_exact_on_host(a_shape, n, rng)``: the VNNI rule's build on this host equals numpy's
  int64 product.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from hetpart import kernels
from hetpart.importer.fusion import fuse
from hetpart.targets import cpu_tvm_target, host_triple

RNG = np.random.default_rng(3)


def target_4_cores(mcpu: str):
    """An LLVM target for this host's triple with ``-mcpu=mcpu`` and 4 cores."""
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": mcpu, "num-cores": 4})


def int8_matmul(a_shape, n: int, atype="uint8", btype="int8"):
    """Fused module of ``float(A @ W) * 0.5`` (W a constant) and (A, W)."""
    k = a_shape[-1]
    w = RNG.integers(np.iinfo(btype).min, np.iinfo(btype).max, (k, n)).astype(btype)
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, atype))
    with bb.function("main", [a]):
        with bb.dataflow():
            mm = bb.emit(relax.op.matmul(a, relax.const(w), out_dtype="int32"))
            out = bb.emit_output(relax.op.multiply(relax.op.astype(mm, "float32"), relax.const(0.5, "float32")))
        bb.emit_func_output(out)
    return fuse(bb.get()), w


def x86_asm(exe) -> str:
    """The x86 assembly of a built executable's LLVM modules (inspected, not run)."""
    return "".join(m.inspect_source("asm") for m in exe.mod._collect_dso_modules() if m.kind == "llvm")


def scheduled_rule(mod, target) -> str:
    """The rule (``kernels.RULE_ATTR``) that schedules ``mod``'s first PrimFunc for ``target``."""
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    return str(kernels.schedule_primfunc(func, target).attrs[kernels.RULE_ATTR])


def check_exact_on_host(a_shape, n: int, rng) -> None:
    """The VNNI rule takes the ``a_shape`` x ``n`` matmul on this host and its result
    equals numpy's int64 product (scaled by the model's 0.5), the largest products included."""
    mod, w = int8_matmul(a_shape, n)
    target = cpu_tvm_target()
    assert scheduled_rule(mod, target) == "CpuInt8Matmul"
    vm = relax.VirtualMachine(kernels.build(mod, target), tvm.cpu())
    a = rng.integers(0, 256, a_shape).astype("uint8")
    a.flat[:4] = 255  # the largest products: 255 * -128
    got = vm["main"](tvm.runtime.tensor(a)).numpy()
    want = (a.astype(np.int64) @ w.astype(np.int64)).astype(np.float32) * np.float32(0.5)
    np.testing.assert_array_equal(got, want)
