"""Tensor-core rule test cases (``from tensor_core_cases import ...``):

* ``conv_relu(cin, size, cout, k, stride, residual, batch, seed)``: a seeded Conv (bias, pads
  k // 2) then ReLU, or a residual add and ReLU;
* ``tf32_emulated_intrinsics()``: tf32's intrinsic names with the fragment loads and the MMA
  replaced by plain-loop intrinsics of the same ``desc`` (registered once), so a tensorized
  schedule runs on a CPU; ``tf32_inverse_a(lane, r)``: the A fragment's element of a lane's register.
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
