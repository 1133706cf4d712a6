"""Helpers for tests that run small hand-built ONNX models through hetpart and compare
with ``onnx.reference`` (imported by test modules: ``from onnx_cases import ...``).

* ``model(nodes, inputs, outputs, initializers)``: an opset-17 ModelProto;
* ``run_on(model, device, feeds, simulate=..., options=...)``: import, pin every kernel on
  ``device`` (``"cpu"`` or ``"cuda"``), compile (with those kernel options, e.g. TF32
  off), run one Session; outputs by name;
* ``single_cpu_kernel(model)``: the one scheduled CPU PrimFunc it fuses into;
* ``block_nests(func)`` / ``update_unrolls(func)``: a scheduled PrimFunc's blocks with their
  loops / the unrolled loops around its multiply-accumulate update;
* ``cuda_source(executable)``: its CUDA C, for structural checks of GPU rules;
* ``fused_program(inputs, body)`` / ``run_vm(executable, arrays)``: a small Relax program
  fused as the importer fuses; a built module run on the CPU;
* ``torchvision_attention(tokens, width, heads, ...)``: torchvision's MultiheadAttention with its
  packed QKV split by ``Gather`` (a ViT encoder block with ``block=True``);
* ``reference(model, feeds)``: ``onnx.reference.ReferenceEvaluator``'s outputs by name;
* ``assert_matches(got, want)``: NaN exactly where the reference has NaN, ±Inf
  where it has ±Inf, otherwise close.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OPSET = 17

# Float inputs that exercise every special case: negatives, zeros (both signs),
# values around 1, large magnitudes, ±Inf and NaN.
SPECIAL = np.array([-np.inf, -1e30, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, -1e-3, -0.0, 0.0, 1e-3,
                    0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 1e30, np.inf, np.nan], dtype=np.float32)


def erf_gelu(src: str, dst: str, inits: dict) -> list:
    """The nodes of ``dst = 0.5 * src * (1 + erf(src / sqrt(2)))`` as a PyTorch/BERT export
    writes it (Div, Erf, Add, Mul, Mul); its constants are added to ``inits``."""
    inits.update(sqrt2=np.array(np.sqrt(2), np.float32), one=np.array(1, np.float32),
                 half=np.array(0.5, np.float32))
    return [helper.make_node("Div", [src, "sqrt2"], ["gelu_d"]), helper.make_node("Erf", ["gelu_d"], ["gelu_e"]),
            helper.make_node("Add", ["gelu_e", "one"], ["gelu_e1"]), helper.make_node("Mul", [src, "gelu_e1"], ["gelu_g"]),
            helper.make_node("Mul", ["gelu_g", "half"], [dst])]


VIT_PROJECTIONS = {"vit qkv 197": (197, 768, 768, False), "vit ffn-up 197 gelu": (197, 768, 3072, True)}
"""name -> (tokens, k, n, gelu): ViT-B/16's projections at batch 1 (:func:`projection`'s arguments)."""


def projection(tokens: int, k: int, n: int, gelu: bool, seed: int = 0) -> onnx.ModelProto:
    """``y = x @ W + b`` on ``[1, tokens, k]`` (seeded weights scaled by 1/sqrt(k)), then the
    erf GELU where asked: a transformer's projection as an export writes it."""
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
             "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["c"])]
    if gelu:
        nodes += erf_gelu("c", "y", inits)
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    return model(nodes, [("x", (1, tokens, k), np.float32)], [("y", (1, tokens, n), np.float32)], inits)


def torchvision_attention(tokens: int, width: int, heads: int, indices=(0, 1, 2), *, block: bool = False,
                          seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """``F.multi_head_attention_forward`` at batch ``batch`` (default 1) with ``batch_first`` and a packed in-projection as
    torch.onnx writes it for torchvision's ViT: ``proj.unflatten(-1, (3, E)).unsqueeze(0)
    .transpose(0, -2).squeeze(-2)``, then ``q, k, v = proj[i]`` (``Gather`` at the constant scalars
    ``indices``), per-head views and transposes, attention, the out-projection; input and output
    ``x``/``y`` of ``[batch, tokens, width]``.  ``block``: the whole encoder block around it (LayerNorm,
    attention, residual, LayerNorm, MLP of 4x width with the erf GELU, residual)."""
    rng = np.random.default_rng(seed)
    L, E, H, B = tokens, width, heads, batch
    hd = E // H
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    inits = {"w_in": w(E, 3 * E), "b_in": rng.standard_normal(3 * E).astype(np.float32), "w_out": w(E, E),
             "b_out": rng.standard_normal(E).astype(np.float32),
             "s_unflat": np.array([L, B, 3, E], np.int64), "ax0": np.array([0], np.int64),
             "ax_m2": np.array([-2], np.int64), "s_heads": np.array([L, B * H, hd], np.int64),
             "s_bhld": np.array([B, H, L, hd], np.int64), "s_flat": np.array([L * B, E], np.int64),
             "s_lbe": np.array([L, B, E], np.int64), "scale": np.array(1 / np.sqrt(hd), np.float32)}
    n = helper.make_node
    src = "x"
    nodes = []
    if block:
        inits.update(ln1_g=1 + 0.1 * rng.standard_normal(E).astype(np.float32),
                     ln1_b=0.1 * rng.standard_normal(E).astype(np.float32),
                     ln2_g=1 + 0.1 * rng.standard_normal(E).astype(np.float32),
                     ln2_b=0.1 * rng.standard_normal(E).astype(np.float32),
                     w_up=w(E, 4 * E), b_up=rng.standard_normal(4 * E).astype(np.float32), w_down=w(4 * E, E),
                     b_down=rng.standard_normal(E).astype(np.float32))
        nodes.append(n("LayerNormalization", ["x", "ln1_g", "ln1_b"], ["ln1"], axis=-1, epsilon=1e-6))
        src = "ln1"
    nodes += [n("Transpose", [src], ["xt"], perm=[1, 0, 2]),
              n("MatMul", ["xt", "w_in"], ["mm"]), n("Add", ["mm", "b_in"], ["proj"]),
              n("Reshape", ["proj", "s_unflat"], ["unflat"]), n("Unsqueeze", ["unflat", "ax0"], ["u"]),
              n("Transpose", ["u"], ["ut"], perm=[3, 1, 2, 0, 4]), n("Squeeze", ["ut", "ax_m2"], ["packed"])]
    for name, i in zip("qkv", indices):
        inits[f"i_{name}"] = np.array(i, np.int64)
        nodes += [n("Gather", ["packed", f"i_{name}"], [name], axis=0),
                  n("Reshape", [name, "s_heads"], [f"{name}_v"]),
                  n("Transpose", [f"{name}_v"], [f"{name}_t"], perm=[1, 0, 2]),
                  n("Reshape", [f"{name}_t", "s_bhld"], [f"{name}_h"])]
    att = "attn" if block else "y"
    nodes += [n("Transpose", ["k_h"], ["k_ht"], perm=[0, 1, 3, 2]), n("MatMul", ["q_h", "k_ht"], ["s"]),
              n("Mul", ["s", "scale"], ["s2"]), n("Softmax", ["s2"], ["p"], axis=-1),
              n("MatMul", ["p", "v_h"], ["o"]), n("Transpose", ["o"], ["ot"], perm=[2, 0, 1, 3]),
              n("Reshape", ["ot", "s_flat"], ["of"]), n("MatMul", ["of", "w_out"], ["om"]),
              n("Add", ["om", "b_out"], ["oa"]), n("Reshape", ["oa", "s_lbe"], ["ov"]),
              n("Transpose", ["ov"], [att], perm=[1, 0, 2])]
    if block:
        nodes += [n("Add", ["x", "attn"], ["r1"]),
                  n("LayerNormalization", ["r1", "ln2_g", "ln2_b"], ["ln2"], axis=-1, epsilon=1e-6),
                  n("MatMul", ["ln2", "w_up"], ["up_mm"]), n("Add", ["up_mm", "b_up"], ["up"])]
        nodes += erf_gelu("up", "act", inits)
        nodes += [n("MatMul", ["act", "w_down"], ["down_mm"]), n("Add", ["down_mm", "b_down"], ["down"]),
                  n("Add", ["r1", "down"], ["y"])]
    return model(nodes, [("x", (B, L, E), np.float32)], [("y", (B, L, E), np.float32)], inits)


def special_values(n: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` float32 values: :data:`SPECIAL` first, then uniform in [-3, 3]."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(-3, 3, max(0, n - SPECIAL.size)).astype(np.float32)
    return np.concatenate([SPECIAL, rest])[:n]


def special_tensor(shape, seed: int = 0) -> np.ndarray:
    """Float32 ``shape`` holding every value of :data:`SPECIAL` (±Inf, NaN, ±0.0, negatives), the
    rest standard normal draws, shuffled (a layout op's test then sees the specials everywhere)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    flat = np.concatenate([SPECIAL, rng.standard_normal(max(0, n - SPECIAL.size)).astype(np.float32)])[:n]
    return rng.permutation(flat).reshape(shape)


def value_info(name: str, shape, dtype=np.float32):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))


def model(nodes, inputs, outputs, initializers=None, opset: int = OPSET) -> onnx.ModelProto:
    """A checked model; ``inputs`` / ``outputs`` are ``(name, shape, dtype)`` (an
    output shape may be None: left to shape inference); ``initializers`` name -> array."""
    graph = helper.make_graph(
        nodes, "case",
        [value_info(n, s, d) for n, s, d in inputs],
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), s)
         for n, s, d in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def plan_all_on(graph, device: str):
    """A one-partition plan with every kernel of ``graph`` on ``device``."""
    from hetpart.partitioner import Partition, Plan

    order = graph.topological_order()
    return Plan(model=graph.name, objective="pinned", assignment={k: device for k in order},
                partitions=[Partition(f"p0_{device}", device, list(order))], cuts=[], timeline=[],
                predicted={}, profile_origin="test", graph=graph)


def _op_graph(m):
    """``m``'s op graph: ``m`` itself where a test imported it already, else ``m`` imported."""
    from hetpart import importer

    return m if isinstance(m, importer.OpGraph) else importer.load(m)


def compile_on(m, device: str, *, simulate: bool, options=None):
    """``m`` (an ``onnx.ModelProto``, or the :class:`~hetpart.importer.OpGraph` a test imported
    already, e.g. to read its kernels: not imported twice) compiled with every kernel on
    ``device``; ``options`` (a :class:`~hetpart.kernels.options.KernelOptions`, e.g. TF32 off)
    default to the build's."""
    from hetpart import compiler
    from hetpart.kernels.options import DEFAULT

    return compiler.compile(plan_all_on(_op_graph(m), device), simulate=simulate, progress=False,
                            options=options or DEFAULT)


def run_on(m, device: str, feeds: dict, *, simulate: bool = True,
           options=None) -> dict[str, np.ndarray]:
    """``m`` (a model or its op graph, as :func:`compile_on`) run with every kernel on ``device``:
    ``{output name: array}`` (``options``: as :func:`compile_on`)."""
    from hetpart.runtime import Session

    with Session(compile_on(m, device, simulate=simulate, options=options)) as s:
        return s.run(feeds)


def single_cpu_kernel(m, target=None):
    """The one scheduled CPU PrimFunc ``m`` (a model, or its op graph as :func:`compile_on`)
    fuses into (asserting it is one: the op and its epilogue in one kernel), to read the
    schedule a rule gave it (for ``target``, by default the host's)."""
    import tvm

    from hetpart import kernels
    from hetpart.targets import cpu_tvm_target

    mod = kernels.schedule(_op_graph(m).module, target or cpu_tvm_target())
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1, "the op and its epilogue are one fused kernel"
    return funcs[0]


def scheduled_by(m: onnx.ModelProto, target, *rules: str):
    """The one PrimFunc of ``m``'s CPU schedule for ``target`` (weights marked first, as
    ``kernels.build`` does) that one of ``rules`` (``kernels.RULE_ATTR`` values, e.g.
    ``"CpuConv2d"``) scheduled; asserts there is exactly one."""
    import tvm

    from hetpart import importer, kernels
    from hetpart.kernels import weight_prepack

    mod = kernels.schedule(weight_prepack.mark_weights(importer.load(m).module), target)
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)
             and str(f.attrs.get(kernels.RULE_ATTR, "")) in rules]
    assert len(funcs) == 1, f"one kernel scheduled by {rules}, got {len(funcs)}"
    return funcs[0]


def block_nests(func) -> list[tuple[object, list]]:
    """``(block realize, [loops around it, outermost first])`` of every block of the
    scheduled PrimFunc ``func``, in program order (the root block first), the blocks in
    both branches of an ``if`` included (a split ragged tile's main and tail)."""
    import tvm

    found = []

    def visit(stmt, loops):
        if isinstance(stmt, tvm.tirx.For):
            visit(stmt.body, loops + [stmt])
        elif isinstance(stmt, tvm.tirx.SeqStmt):
            for s in stmt.seq:
                visit(s, loops)
        elif isinstance(stmt, tvm.tirx.IfThenElse):
            visit(stmt.then_case, loops)
            if stmt.else_case is not None:
                visit(stmt.else_case, loops)
        elif isinstance(stmt, tvm.s_tir.SBlockRealize):
            found.append((stmt, loops))
            visit(stmt.block.body, loops)

    visit(func.body, [])
    return found


def update_unrolls(func) -> list[int]:
    """Extents (> 1), sorted, of the unrolled loops around the first multiply-accumulate
    update block (``*_update``) of the scheduled PrimFunc ``func``; [] without one."""
    import tvm

    for realize, loops in block_nests(func):
        if realize.block.name_hint.endswith("_update"):
            return sorted(int(lp.extent) for lp in loops
                          if lp.kind == tvm.tirx.ForKind.UNROLLED and int(lp.extent) > 1)
    return []


def run_vm(exe, args) -> np.ndarray:
    """The output of ``main`` of the built Relax module ``exe`` on the CPU, fed the numpy
    arrays ``args``, as numpy."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()


def fused_program(inputs, body):
    """``main(*inputs) = body(bb, *vars)`` built with Relax's BlockBuilder (``inputs``:
    ``(name, shape)`` of float32 tensors), fused as the importer fuses ONNX models."""
    from tvm import relax

    from hetpart.importer.fusion import fuse

    bb = relax.BlockBuilder()
    vs = [relax.Var(n, relax.TensorType(s, "float32")) for n, s in inputs]
    with bb.function("main", vs):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *vs))
        bb.emit_func_output(out)
    return fuse(bb.get())


def cuda_source(exe) -> str:
    """The CUDA C of a built executable (its first ``cuda`` module, imports searched), or ""."""
    def walk(mod):
        if mod.kind == "cuda":
            return mod.inspect_source("cuda")
        return next((found for found in map(walk, mod.imports) if found), "")

    return walk(exe.mod)


def relative_error_on_cuda(m: onnx.ModelProto, feeds: dict, output: str = "y") -> float:
    """``max|got - want| / max|want|`` of ``m``'s ``output`` run all-CUDA on a real GPU
    (``got``) against ONNX Runtime's CPU run (``want``)."""
    got = run_on(m, "cuda", feeds, simulate=False)[output]
    want = onnxruntime_outputs(m, feeds)[[o.name for o in m.graph.output].index(output)]
    return float(np.abs(got - want).max() / np.abs(want).max())


def onnxruntime_outputs(m: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """ONNX Runtime's (CPU) outputs for ``m`` on ``feeds``, opened through the benchmark's
    one ORT door, which lowers the IR version ``make_model`` stamps to the least the
    opsets need: the GPU machine's ORT refuses IR 14 ("max supported IR version: 13")."""
    from hetpart.bench.peers import ort_session

    return ort_session(m).run(None, feeds)


def reference(m: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in m.graph.output]
    return dict(zip(names, ReferenceEvaluator(m).run(None, feeds)))


def assert_matches(got: np.ndarray, want: np.ndarray, *, rtol: float = 1e-5, atol: float = 1e-6,
                   what: str = "") -> None:
    """Equal shapes and dtypes; NaN where ``want`` is NaN (and only there); the
    same infinities; other values within tolerance (integers and booleans exactly)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    nan_want, nan_got = np.isnan(want), np.isnan(got)
    bad = np.flatnonzero(nan_want != nan_got)
    assert bad.size == 0, (f"{what}: NaN mismatch at {bad.size} of {want.size} elements, e.g. index "
                           f"{bad[0]}: got {got.flat[bad[0]]}, want {want.flat[bad[0]]}")
    keep = ~nan_want
    np.testing.assert_allclose(got[keep], want[keep], rtol=rtol, atol=atol, err_msg=what)


def accept_ieee_pow(want: np.ndarray, got: np.ndarray, x, y) -> np.ndarray:
    """``want`` (onnx.reference's ``x ** y``) where ``got`` may follow either convention
    for ``(-inf) ** y``, y > 0 not an integer: numpy says NaN, IEEE 754 (C's powf,
    CUDA, onnxruntime) +inf.  TVM's CPU code gives one or the other depending on how
    LLVM lowers the call, CUDA's powf the IEEE one."""
    x, y = np.broadcast_arrays(np.asarray(x), np.asarray(y))
    x, y = np.broadcast_to(x, want.shape), np.broadcast_to(y, want.shape)
    either = (x == -np.inf) & (y > 0) & (np.floor(y) != y) & ((got == np.inf) | np.isnan(got))
    return np.where(either, got, want)

def projection_error_on_gpu(tokens: int, k: int, n: int, gelu: bool, fmt: str) -> float:
    """:func:`projection` built all-CUDA in ``fmt`` (``precision="cuda=<fmt>"``) and run on
    the GPU for seeded inputs (every 7th a zero): its relative error against ONNX Runtime."""
    from hetpart import compiler, importer
    from hetpart.runtime import Session

    m = projection(tokens, k, n, gelu)
    compiled = compiler.compile(plan_all_on(importer.load(m), "cuda"), simulate=False, progress=False,
                                precision=f"cuda={fmt}")
    x = np.random.default_rng(1).standard_normal((1, tokens, k)).astype(np.float32)
    x.flat[::7] = 0.0
    with Session(compiled) as s:
        got = list(s.run({"x": x}).values())[0]
    want = onnxruntime_outputs(m, {"x": x})[0]
    return float(np.abs(got - want).max() / np.abs(want).max())


def shipped_profile():
    """The package's recorded cost-model profile (``hetpart/costmodel/recorded/h200.json``), or,
    where a device call left it out to fit its carry, the capped profile ``bench/results`` brings
    instead (``tools/device_stage.sh`` NOPROFILE=1)."""
    from pathlib import Path

    from hetpart.costmodel import Profile
    from hetpart.costmodel.locate import RECORDED_DIR

    path = RECORDED_DIR / "h200.json"
    if not path.exists():
        path = Path(__file__).resolve().parents[1] / "bench" / "results" / "profile-capped-nvidia-h200.json"
    return Profile.load(path)


def wgmma_error_on_gpu(m: onnx.ModelProto, precision: str | None, options) -> float:
    """``m`` compiled all-CUDA with kernel ``options`` (a wgmma switch on) and ``precision``, run on
    the GPU on standard-normal inputs: its output ``y``'s max |hetpart - ONNX Runtime| / max |ORT|.
    Asserts the build holds substituted ``_wgmma`` kernels: on a GPU host the library embeds them
    as a cubin, not PTX text (step 146 found a PTX assert failing there), but their names are in
    its function table either way."""
    import glob

    from hetpart import compiler, importer
    from hetpart.runtime import Session

    cm = compiler.compile(plan_all_on(importer.load(m), "cuda"), simulate=False, progress=False,
                          precision=precision, options=options)
    data = b"".join(open(p, "rb").read() for p in glob.glob(str(cm.directory) + "/*.so"))
    assert b"_wgmma" in data
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in m.graph.input}
    with Session(cm) as s:
        got = s.run(feeds)["y"]
    want = onnxruntime_outputs(m, feeds)[0]
    return float(np.abs(got - want).max() / np.abs(want).max())
