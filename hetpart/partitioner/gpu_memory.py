"""How much GPU memory an assignment needs.

The model, deliberately simple and a little pessimistic:

* **parameters**: every CUDA kernel keeps its own constants resident, so the sum of
  ``kernel.param_bytes`` over CUDA kernels (kernels do not share constants);
* **activations**: kernels run one at a time in the graph's topological order.  A
  tensor occupies GPU memory from the step of its producer (if the producer is on
  the CPU, it is copied over right after it is made; a model input arrives at step 0)
  until the step of its last CUDA reader.  A tensor made on CUDA and read only on the
  CPU (or returned) lives for its producer's step, until it is copied back;
* the peak is the largest sum of live tensors over the steps.

``parameters + peak activations`` must fit under ``--gpu-memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .problem import Assignment, Problem


@dataclass(frozen=True)
class GpuMemory:
    """Bytes an assignment keeps on the GPU."""

    params: int
    peak_activations: int

    @property
    def total(self) -> int:
        return self.params + self.peak_activations


def gpu_memory(problem: Problem, a: Assignment) -> GpuMemory:
    """Parameters plus peak live activations on the GPU under ``a`` (see module doc)."""
    kernels = problem.graph.kernels
    params = sum(kernels[k].param_bytes for k in problem.order if a[k] == "cuda")
    n = len(problem.order)
    delta = [0] * (n + 1)  # live bytes change at each step: +start, -after end
    for f in problem.flows:
        span = _gpu_span(problem, f, a)
        if span is not None:
            delta[span[0]] += f.nbytes
            delta[span[1] + 1] -= f.nbytes
    peak = live = 0
    for d in delta[:n]:
        live += d
        peak = max(peak, live)
    return GpuMemory(params, peak)


def _gpu_span(problem: Problem, f, a: Assignment) -> tuple[int, int] | None:
    """First and last step at which ``f`` occupies the GPU, or None if it never does."""
    step = problem.step
    start = 0 if f.producer is None else step[f.producer]
    gpu_reads = [step[c] for c in f.consumers if a[c] == "cuda"]
    if gpu_reads:
        return start, max(gpu_reads)
    if f.producer is not None and a[f.producer] == "cuda":
        return start, start
    return None


def fits(problem: Problem, a: Assignment) -> bool:
    """True when there is no cap or ``a`` stays under it."""
    return problem.gpu_memory is None or gpu_memory(problem, a).total <= problem.gpu_memory
