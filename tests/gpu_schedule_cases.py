"""Checks of GPU-scheduled TIR that run on the CPU (shared by the split-K and tensor-core rule
tests: ``from gpu_schedule_cases import ...``):

* ``H200_LIMITS``: what an H200 allows a block (TVM's ``verify_gpu_code`` checks against it);
* ``serial(func)``: ``func`` with every thread-bound loop serial and every buffer global
  (the same computation, runnable on a CPU);
* ``run_cpu(func, seed)``: ``func``'s output (its last parameter) on the CPU for seeded inputs;
* ``grid_blocks(func)``: the grid (product of blockIdx extents) of each kernel of a scheduled function.
"""

from __future__ import annotations

import math
import re

import numpy as np
import tvm
import tvm_ffi
from tvm import tirx

from hetpart.targets import cpu_tvm_target

H200_LIMITS = {
    "max_shared_memory_per_block": 48 * 1024, "max_threads_per_block": 1024, "max_thread_x": 1024,
    "max_thread_y": 1024, "max_thread_z": 64, "max_local_memory_per_block": 2**31 - 1, "max_vthread": 8,
    "max_vector_bytes": 16,
}
"""What an H200 allows a block (TVM's verifier checks the scheduled function against it)."""


def serial(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every thread-bound loop serial and every buffer global: the same
    computation (TIR's meaning does not depend on the binding), runnable on a CPU."""
    text = func.script()
    text = re.sub(r'T\.thread_binding\(([^,]+), thread="[^"]+"(, annotations=\{[^}]*\})?\)', r"T.serial(\1)", text)
    text = re.sub(r', scope="(shared|local)"', "", text).replace("private=True", "private=False")
    return tvm.script.from_source(text)


def run_cpu(func: tirx.PrimFunc, seed: int = 1) -> np.ndarray:
    """Output of ``func`` (its last parameter) on the CPU for random inputs (weights are
    parameters of the PrimFunc too; the same ``seed`` gives the same inputs)."""
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=cpu_tvm_target())
    rng = np.random.default_rng(seed)
    tensors = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype("float32"))
               for p in func.params]
    lib(*tensors)
    return tensors[-1].numpy()


def grid_blocks(func: tirx.PrimFunc) -> list[int]:
    """The grid (product of blockIdx extents) of each kernel of a scheduled function."""
    grids, cur = [], {}

    def visit(loop):
        tag = str(loop.thread_binding.thread_tag) if loop.thread_binding is not None else ""
        if tag.startswith("blockIdx"):
            if tag in cur:  # a second kernel starts
                grids.append(math.prod(cur.values()))
                cur.clear()
            cur[tag] = int(loop.extent)

    tvm_ffi.structural_walk(func.body, (tirx.For, visit), order="pre")
    return grids + ([math.prod(cur.values())] if cur else [])
