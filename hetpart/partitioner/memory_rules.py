"""The two memory-only placement rules users run today, as assignments to compare with.

Neither prices anything: each decides from GPU memory alone, and the benchmark of
issue 19 turns their assignments into plans (:func:`.candidates.plan_for_assignment`)
and measures them beside hetpart's.

* :func:`llama_cpp_rule` -- llama.cpp's ``-ngl`` / ``--fit``: the model is a stack of
  layers; the first N run on the CPU and the rest on the GPU, with the smallest N
  (the largest GPU share) that fits the cap.
* :func:`ort_rule` -- ONNX Runtime's capacity-aware partitioning: walk the kernels in
  topological order and give each to the GPU until the next one would break the cap;
  that one and everything after it run on the CPU.

A kernel held to one device (a pin or a missing capability, ``problem.allowed``)
stays there under both rules, and the kernels of a state pair (:mod:`.same_device`: the
runtime binds a state only on one device) move as one: with the CPU's layers under the
llama.cpp rule, onto the GPU as one step under the ORT rule.  "Fits" is the partitioner's own GPU memory model
(:func:`.gpu_memory.fits`: resident parameters plus peak activations), so a rule's
plan is held to the same cap hetpart's is.  Each returns None when nothing fits,
not even the least-GPU placement.
"""

from __future__ import annotations

from .gpu_memory import fits
from .problem import Assignment, Problem

def layers(problem: Problem) -> list[list[str]]:
    """The graph's layers: consecutive runs of ``problem.order`` (every kernel in one).

    A layer is one period of the repeating pattern of weight-carrying kernels
    (``param_bytes > 0``), found from their signatures without knowing the model: of
    every period ``p``, the longest stretch of weight kernels whose signature equals
    the one ``p`` kernels later; the period whose repetition covers the most weight
    kernels (at least two full periods; the smaller on a tie) is the layer -- a
    transformer block.  Each layer starts at a weight kernel of that stretch and runs
    to the next layer's start; kernels before the first one (the embedding) join the
    first layer, those after the last (the head) the last.  Without a repetition every
    weight kernel starts a layer of its own; a graph without weights is one layer.
    """
    order = list(problem.order)
    kernels = problem.graph.kernels
    weighted = [i for i, k in enumerate(order) if kernels[k].param_bytes > 0]
    if not weighted:
        return [order] if order else []
    first, period, blocks = _repetition([kernels[order[i]].signature for i in weighted])
    starts = [weighted[first + j * period] for j in range(blocks)]
    starts[0] = 0
    bounds = starts + [len(order)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:])]


def _repetition(signatures: list) -> tuple[int, int, int]:
    """(first index, period, full periods) of the repetition covering most of
    ``signatures`` (see :func:`layers`); (0, 1, n) when nothing repeats."""
    n = len(signatures)
    best = (0, 0, 1, n)  # (covered, first, period, blocks)
    for p in range(1, n // 2 + 1):
        run = longest = start = 0
        for i in range(n - p):
            run = run + 1 if signatures[i] == signatures[i + p] else 0
            if run > longest:
                longest, start = run, i - run + 1
        if longest >= p:
            blocks = (longest + p) // p
            if blocks * p > best[0]:
                best = (blocks * p, start, p, blocks)
    return best[1], best[2], best[3]


def llama_cpp_rule(problem: Problem) -> Assignment | None:
    """The first N layers (:func:`layers`) on the CPU, the rest on the GPU, N the
    smallest that fits ``problem.gpu_memory``; None if not even all-CPU fits."""
    stack = layers(problem)
    for n in range(len(stack) + 1):
        on_cpu = set(problem.closure(k for layer in stack[:n] for k in layer))
        a = {k: _device(problem, k, "cpu" if k in on_cpu else "cuda") for k in problem.order}
        if fits(problem, a):
            return a
    return None


def ort_rule(problem: Problem) -> Assignment | None:
    """GPU in topological order until the next kernel would break the cap, then the
    CPU for the rest; None if not even all-CPU fits."""
    a = {k: _device(problem, k, "cpu") for k in problem.order}
    if not fits(problem, a):
        return None
    for k in problem.order:
        if a[k] == "cuda" or "cuda" not in problem.allowed[k]:
            continue
        group = problem.closure((k,))
        a.update(dict.fromkeys(group, "cuda"))
        if not fits(problem, a):
            a.update(dict.fromkeys(group, "cpu"))
            break
    return a


RULES = {"llama.cpp-style rule": llama_cpp_rule, "ORT-style rule": ort_rule}
"""The rules by the name the benchmark's table gives them."""


def _device(problem: Problem, k: str, want: str) -> str:
    """``want`` if kernel ``k`` may run there, else the device it is held to."""
    allowed = problem.allowed[k]
    return want if want in allowed else allowed[0]
