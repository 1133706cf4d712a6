"""Tensor-core rule test cases (``from tensor_core_cases import ...``):

* ``conv_relu(cin, size, cout, k, stride, residual, batch, seed)``: a seeded Conv (bias, pads
  k // 2) then ReLU, or a residual add and ReLU;
* ``conv1d_gelu(cin, frames, cout, stride, seed)`` / ``whisper_conv_front(mels, frames, width, seed)``:
  the Whisper encoder's front end built in code -- a seeded Conv1d (k3, pad 1, bias) then erf-GELU as
  transformers' export spells it; the front end two of them (stride 1, then stride 2: 80 -> 384
  channels on 3000 frames, then 1500 at full size);
* ``tf32_emulated_intrinsics()``: tf32's intrinsic names with the fragment loads and the MMA
  replaced by plain-loop intrinsics of the same ``desc`` (registered once), so a tensorized
  schedule runs on a CPU; ``tf32_inverse_a(lane, r)``: the A fragment's element of a lane's register;
* ``narrow_emulated_intrinsics()``: the same with the narrow (bf16 / fp16) fragment loads and MMA
  emulated, the activation's narrowing kept;
* ``bf16_activation_emulated_intrinsics()``: the tf32 emulation plus ``load_a_bfloat16``'s and
  ``load_b_bfloat16_kmajor``'s (a bf16 activation widened in fragments);
* ``bf16_mma_staged_emulated_intrinsics()``: the narrow emulation plus ``mma_load_a_bfloat16_staged``'s
  (a bf16 operand staged in bf16, copied into bf16 fragments);
* ``compiled_cuda_library(model, monkeypatch, options)``: ``model`` compiled all-CUDA for sm_90 (no
  GPU needed): its libraries' bytes and the wgmma substitution's ``main`` / ``main_dps``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import onnx
from onnx import helper

from onnx_cases import model

from hetpart.kernels import tf32


def conv_relu(cin: int, size: int, cout: int, k: int, stride: int, residual: bool, batch: int = 1,
              seed: int = 0) -> onnx.ModelProto:
    """Conv (bias, pads k // 2) then ReLU, or a residual add and ReLU."""
    rng = np.random.default_rng(seed)
    out = (size + 2 * (k // 2) - k) // stride + 1
    inits = {"w": (rng.standard_normal((cout, cin, k, k)) / math.sqrt(cin * k * k)).astype(np.float32),
             "b": rng.standard_normal(cout).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4,
                              strides=[stride, stride])]
    inputs = [("x", (batch, cin, size, size), np.float32)]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        inputs.append(("r", (batch, cout, out, out), np.float32))
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return model(nodes, inputs, [("y", (batch, cout, out, out), np.float32)], inits)


def _gelu_nodes(x: str, y: str, tag: str, inits: dict) -> list:
    """``y = x * (1 + erf(x / sqrt 2)) / 2`` as transformers' ONNX export spells GELU."""
    inits.update({f"sqrt2{tag}": np.array(math.sqrt(2.0), np.float32), f"one{tag}": np.array(1.0, np.float32),
                  f"half{tag}": np.array(0.5, np.float32)})
    return [helper.make_node("Div", [x, f"sqrt2{tag}"], [f"d{tag}"]),
            helper.make_node("Erf", [f"d{tag}"], [f"e{tag}"]),
            helper.make_node("Add", [f"e{tag}", f"one{tag}"], [f"a{tag}"]),
            helper.make_node("Mul", [x, f"a{tag}"], [f"m{tag}"]),
            helper.make_node("Mul", [f"m{tag}", f"half{tag}"], [y])]


def _conv1d_gelu_nodes(x: str, y: str, cin: int, cout: int, stride: int, tag: str, rng, inits: dict) -> list:
    inits[f"w{tag}"] = (rng.standard_normal((cout, cin, 3)) / math.sqrt(cin * 3)).astype(np.float32)
    inits[f"b{tag}"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    conv = helper.make_node("Conv", [x, f"w{tag}", f"b{tag}"], [f"c{tag}"], kernel_shape=[3], pads=[1, 1],
                            strides=[stride])
    return [conv] + _gelu_nodes(f"c{tag}", y, tag, inits)


def conv1d_gelu(cin: int, frames: int, cout: int, stride: int = 1, seed: int = 0) -> onnx.ModelProto:
    """One Whisper front-end layer at batch 1: Conv1d ``cin -> cout`` (k3, pad 1, ``stride``, bias)
    on ``frames`` frames, then erf-GELU."""
    rng, inits = np.random.default_rng(seed), {}
    out = (frames - 1) // stride + 1
    nodes = _conv1d_gelu_nodes("x", "y", cin, cout, stride, "1", rng, inits)
    return model(nodes, [("x", (1, cin, frames), np.float32)], [("y", (1, cout, out), np.float32)], inits)


def whisper_conv_front(mels: int = 80, frames: int = 3000, width: int = 384, seed: int = 0) -> onnx.ModelProto:
    """The Whisper encoder's convolutional front end at batch 1 (defaults: whisper-tiny's shapes):
    Conv1d ``mels -> width`` k3 pad 1 + GELU, then Conv1d ``width -> width`` k3 stride 2 pad 1 +
    GELU (``frames`` -> ``(frames + 1) // 2``)."""
    rng, inits = np.random.default_rng(seed), {}
    nodes = (_conv1d_gelu_nodes("x", "g1", mels, width, 1, "1", rng, inits)
             + _conv1d_gelu_nodes("g1", "y", width, width, 2, "2", rng, inits))
    return model(nodes, [("x", (1, mels, frames), np.float32)],
                 [("y", (1, width, (frames - 1) // 2 + 1), np.float32)], inits)


_EMULATED = {"load_a": "hetpart_test_emu_load_a", "load_b": "hetpart_test_emu_load_b",
             "compute": "hetpart_test_emu_mma"}
_emu_lock = threading.Lock()
_emu_registered = False


def tf32_inverse_a(lane, r):
    """``(row, column)`` of the A fragment's ``(lane, register r)`` (tf32 m16n8k8: the load's inverse)."""
    return lane // 4 + 8 * (r % 2), lane % 4 + 4 * (r // 2)


def _tf32_inverse_b(lane, r):
    """``(row, column)`` of the B fragment's ``(lane, register r)``."""
    return lane // 4 + 8 * (r // 2), lane % 4 + 4 * (r % 2)


def tf32_emulated_intrinsics() -> dict[str, str]:
    """tf32's intrinsic names, with the fragment loads and the MMA replaced by intrinsics of the
    same ``desc`` whose impls are plain loops (no ``mma.sync``, no TF32 rounding, no lane
    binding): tensorized by the same rule code, runnable on a CPU."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    from hetpart.kernels.tf32 import K, M, N, SCOPE, WARP, a_layout, b_layout, c_layout

    def load_impl(rows, inverse):
        regs = rows * K // WARP

        @T.prim_func(s_tir=True)
        def impl(a: T.handle, c: T.handle) -> None:
            s0 = T.int32()
            s1 = T.int32()
            A = T.match_buffer(a, (rows, K), "float32", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
            C = T.match_buffer(c, (WARP, regs), "float32", align=64, offset_factor=1, scope="warp")
            with T.sblock("root"):
                T.reads(A[0:rows, 0:K])
                T.writes(C[0:WARP, 0:regs])
                for lane, r in T.grid(WARP, regs):
                    row, col = T.meta_var(inverse(lane, r))
                    C[lane, r] = A[row, col]

        return impl

    @T.prim_func(s_tir=True)
    def mma_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (WARP, 4), "float32", align=64, offset_factor=1, scope="warp")
        B = T.match_buffer(b, (WARP, 4), "float32", align=64, offset_factor=1, scope="warp")
        C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(C[0:WARP, 0:8], A[0:WARP, 0:4], B[0:WARP, 0:4])
            T.writes(C[0:WARP, 0:8])
            for i, j, k in T.grid(M, N, K):
                lc, rc = T.meta_var(c_layout(i, j))
                la, ra = T.meta_var(a_layout(i, k))
                lb, rb = T.meta_var(b_layout(j, k))
                C[lc, rc] = C[lc, rc] + A[la, ra] * B[lb, rb]

    global _emu_registered
    names = tf32.intrinsics()
    with _emu_lock:
        if not _emu_registered:
            TensorIntrin.register(_EMULATED["load_a"], tf32._load_intrin(M, a_layout, tf32_inverse_a)[0],
                                  load_impl(M, tf32_inverse_a))
            TensorIntrin.register(_EMULATED["load_b"], tf32._load_intrin(N, b_layout, _tf32_inverse_b)[0],
                                  load_impl(N, _tf32_inverse_b))
            TensorIntrin.register(_EMULATED["compute"], tf32._mma_intrin()[0], mma_impl)
            _emu_registered = True
    return {**names, **_EMULATED}


_NARROW_EMULATED = {f"{role}_{dtype}": f"hetpart_test_emu_narrow_{role}_{dtype}"
             for role in ("mma_load_a", "mma_load_b", "mma_compute") for dtype in tf32.NARROW}
_narrow_emu_lock = threading.Lock()
_narrow_emu_registered = False


def narrow_emulated_intrinsics() -> dict[str, str]:
    """tf32's intrinsic names, the narrow fragment loads and MMA replaced by intrinsics of the
    same ``desc`` (:mod:`hetpart.kernels.tf32`'s) whose impls are plain loops over (lane,
    register) -- the narrowing ``Cast`` of the activation kept, no ``mma.sync``, no lane
    binding: tensorized by the same rule code, runnable on a CPU."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    M, K, WARP, SCOPE = tf32.M, tf32.MMA_K, tf32.WARP, tf32.SCOPE

    def narrowed(x, source, dtype):
        """``x`` rounded to ``dtype``.  bf16 by bits (round to nearest even, what CUDA's
        ``cvt.rn.bf16.f32`` does; finite values): TVM's CPU build legalizes an intermediate
        bf16 buffer to float32 storage, so a plain ``Cast`` would keep every bit."""
        if source != "float32" or dtype != "bfloat16":
            return T.Cast(dtype, x)
        bits = T.reinterpret("uint32", x)
        up = bits + T.uint32(0x7FFF) + ((bits >> T.uint32(16)) & T.uint32(1))
        return T.Cast(dtype, T.reinterpret("float32", up & T.uint32(0xFFFF0000)))

    def load_impl(layout, source, dtype):
        @T.prim_func(s_tir=True)
        def impl(a: T.handle, c: T.handle) -> None:
            s0 = T.int32()
            s1 = T.int32()
            A = T.match_buffer(a, (M, K), source, align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
            C = T.match_buffer(c, (WARP, 8), dtype, align=64, offset_factor=1, scope="warp")
            with T.sblock("root"):
                T.reads(A[0:M, 0:K])
                T.writes(C[0:WARP, 0:8])
                for i, k in T.grid(M, K):  # every element to its (lane, register)
                    lane, r = T.meta_var(layout(i, k))
                    C[lane, r] = narrowed(A[i, k], source, dtype)

        return impl

    def mma_impl(dtype):
        @T.prim_func(s_tir=True)
        def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (WARP, 8), dtype, align=64, offset_factor=1, scope="warp")
            B = T.match_buffer(b, (WARP, 8), dtype, align=64, offset_factor=1, scope="warp")
            C = T.match_buffer(c, (WARP, 8), "float32", align=64, offset_factor=1, scope="warp")
            with T.sblock("root"):
                T.reads(C[0:WARP, 0:8], A[0:WARP, 0:8], B[0:WARP, 0:8])
                T.writes(C[0:WARP, 0:8])
                for i, j, k in T.grid(M, M, K):
                    lc, rc = T.meta_var(tf32.c_layout(i, j))
                    la, ra = T.meta_var(tf32.mma_a_layout(i, k))
                    lb, rb = T.meta_var(tf32.mma_b_layout(j, k))
                    C[lc, rc] = C[lc, rc] + T.Cast("float32", A[la, ra]) * T.Cast("float32", B[lb, rb])

        return impl

    global _narrow_emu_registered
    names = tf32.intrinsics()
    with _narrow_emu_lock:
        if not _narrow_emu_registered:
            for dtype in tf32.NARROW:
                TensorIntrin.register(_NARROW_EMULATED[f"mma_load_a_{dtype}"],
                                      tf32._narrow_load_intrin(tf32.mma_a_layout, "float32", dtype)[0],
                                      load_impl(tf32.mma_a_layout, "float32", dtype))
                TensorIntrin.register(_NARROW_EMULATED[f"mma_load_b_{dtype}"],
                                      tf32._narrow_load_intrin(tf32.mma_b_layout, dtype, dtype)[0],
                                      load_impl(tf32.mma_b_layout, dtype, dtype))
                TensorIntrin.register(_NARROW_EMULATED[f"mma_compute_{dtype}"], tf32._narrow_mma_intrin(dtype)[0],
                                      mma_impl(dtype))
            _narrow_emu_registered = True
    return {**names, **_NARROW_EMULATED}


_BF16_LOAD_EMU = "hetpart_test_emu_load_a_from_bf16"
_BF16_LOAD_B_KMAJOR_EMU = "hetpart_test_emu_load_b_from_bf16_kmajor"
_bf16_load_lock = threading.Lock()
_bf16_load_registered = False


def bf16_activation_emulated_intrinsics() -> dict[str, str]:
    """The TF32 emulation (:func:`tf32_emulated_intrinsics`) plus ``load_a_bfloat16``'s and
    ``load_b_bfloat16_kmajor``'s (B staged K-major in bf16)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    global _bf16_load_registered
    names = tf32_emulated_intrinsics()
    M, N, K, WARP, SCOPE = tf32.M, tf32.N, tf32.K, tf32.WARP, tf32.SCOPE
    regs = M * K // WARP

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, (M, K), "bfloat16", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
        C = T.match_buffer(c, (WARP, regs), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(A[0:M, 0:K])
            T.writes(C[0:WARP, 0:regs])
            for lane, r in T.grid(WARP, regs):
                row, col = T.meta_var(tf32_inverse_a(lane, r))
                C[lane, r] = T.Cast("float32", A[row, col])

    @T.prim_func(s_tir=True)
    def impl_b_kmajor(a: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, (K, N), "bfloat16", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
        C = T.match_buffer(c, (WARP, regs), "float32", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(A[0:K, 0:N])
            T.writes(C[0:WARP, 0:regs])
            for lane, r in T.grid(WARP, regs):
                row, col = T.meta_var(_tf32_inverse_b(lane, r))
                C[lane, r] = T.Cast("float32", A[col, row])

    with _bf16_load_lock:
        if not _bf16_load_registered:
            TensorIntrin.register(_BF16_LOAD_EMU, tf32._load_intrin(M, tf32.a_layout, tf32_inverse_a, source="bfloat16")[0], impl)
            TensorIntrin.register(_BF16_LOAD_B_KMAJOR_EMU, tf32._load_intrin(
                N, tf32.b_layout, _tf32_inverse_b, source="bfloat16", kmajor=True)[0], impl_b_kmajor)
            _bf16_load_registered = True
    return {**names, "load_a_bfloat16": _BF16_LOAD_EMU, "load_b_bfloat16_kmajor": _BF16_LOAD_B_KMAJOR_EMU}


_BF16_MMA_STAGED_EMU = "hetpart_test_emu_mma_load_a_bfloat16_staged"
_BF16_MMA_KMAJOR_EMU = "hetpart_test_emu_mma_load_b_bfloat16_kmajor"
_bf16_mma_staged_lock = threading.Lock()
_bf16_mma_staged_registered = False


def bf16_mma_staged_emulated_intrinsics() -> dict[str, str]:
    """:func:`narrow_emulated_intrinsics` plus ``mma_load_a_bfloat16_staged`` (a bf16 operand staged in
    bf16, copied into bf16 fragments: the same description as tf32's, its impl a plain loop) and
    ``mma_load_b_bfloat16_kmajor`` (likewise, B staged K-major)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    global _bf16_mma_staged_registered
    names = narrow_emulated_intrinsics()
    M, K, WARP, SCOPE = tf32.M, tf32.MMA_K, tf32.WARP, tf32.SCOPE

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, (M, K), "bfloat16", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
        C = T.match_buffer(c, (WARP, 8), "bfloat16", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(A[0:M, 0:K])
            T.writes(C[0:WARP, 0:8])
            for i, k in T.grid(M, K):
                lane, r = T.meta_var(tf32.mma_a_layout(i, k))
                C[lane, r] = A[i, k]

    @T.prim_func(s_tir=True)
    def impl_kmajor(a: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        s1 = T.int32()
        A = T.match_buffer(a, (K, M), "bfloat16", align=64, offset_factor=1, scope=SCOPE, strides=[s0, s1])
        C = T.match_buffer(c, (WARP, 8), "bfloat16", align=64, offset_factor=1, scope="warp")
        with T.sblock("root"):
            T.reads(A[0:K, 0:M])
            T.writes(C[0:WARP, 0:8])
            for i, k in T.grid(M, K):
                lane, r = T.meta_var(tf32.mma_b_layout(i, k))
                C[lane, r] = A[k, i]

    with _bf16_mma_staged_lock:
        if not _bf16_mma_staged_registered:
            narrow_load = tf32._narrow_load_intrin
            TensorIntrin.register(_BF16_MMA_STAGED_EMU, narrow_load(tf32.mma_a_layout, "bfloat16", "bfloat16")[0], impl)
            TensorIntrin.register(_BF16_MMA_KMAJOR_EMU,
                                  narrow_load(tf32.mma_b_layout, "bfloat16", "bfloat16", kmajor=True)[0], impl_kmajor)
            _bf16_mma_staged_registered = True
    return {**names, "mma_load_a_bfloat16_staged": _BF16_MMA_STAGED_EMU,
            "mma_load_b_bfloat16_kmajor": _BF16_MMA_KMAJOR_EMU}


def compiled_cuda_library(model, monkeypatch, options) -> tuple[bytes, dict]:
    """``model`` compiled all-CUDA for sm_90 (no GPU): its libraries' bytes, and the Relax
    functions ``main`` / ``main_dps`` as the substitution left them (TVMScript)."""
    import glob

    from onnx_cases import plan_all_on

    from hetpart import compiler, importer
    from hetpart.kernels import wgmma_substitute as ws

    scripts: dict = {}
    real = ws.substitute

    def spy(mod, target, options=ws.DEFAULT):
        out = real(mod, target, options)
        scripts.update((gv.name_hint, f.script(show_meta=False)) for gv, f in out.functions_items()
                       if gv.name_hint in ("main", "main_dps"))
        return out

    monkeypatch.setattr(ws, "substitute", spy)
    cm = compiler.compile(plan_all_on(importer.load(model), "cuda"), cuda_arch="sm_90", progress=False, jobs=1,
                          options=options)
    assert cm.partitions[0].dps  # main_dps writes the output in place
    return b"".join(open(p, "rb").read() for p in glob.glob(str(cm.directory) + "/*.so")), scripts
