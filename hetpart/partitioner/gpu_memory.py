"""How much GPU memory an assignment needs.

The model, deliberately simple and a little pessimistic:

* **parameters**: every CUDA kernel whose weights are resident keeps its own
  constants on the GPU, so the sum of ``kernel.param_bytes`` over those kernels
  (kernels do not share constants);
* **stream buffers**: kernels whose weights are streamed (:mod:`.streaming`) keep
  them in pinned host memory; the GPU holds only the ring they are copied into,
  ``stream_slots * stream_slot_bytes``;
* **activations**: kernels run one at a time in the graph's topological order.  A
  tensor occupies GPU memory from the step of its producer (if the producer is on
  the CPU, it is copied over right after it is made; a model input arrives at step 0)
  until the step of its last CUDA reader.  A tensor made on CUDA and read only on the
  CPU (or returned) lives for its producer's step, until it is copied back.  State
  (:mod:`.state`) whose writer is on CUDA, the bound input and its paired output
  (the runtime's two buffers), lives through every step;
* the peak is the largest sum of live tensors over the steps.

``parameters + stream buffers + peak activations`` must fit under ``--gpu-memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .problem import Assignment, Problem


@dataclass(frozen=True)
class GpuMemory:
    """Bytes an assignment keeps on the GPU."""

    params: int
    peak_activations: int
    stream_buffers: int = 0

    @property
    def total(self) -> int:
        return self.params + self.stream_buffers + self.peak_activations


def gpu_memory(problem: Problem, a: Assignment, streamed=frozenset(), ring_bytes: int = 0) -> GpuMemory:
    """Resident parameters, the stream ring (``ring_bytes``) and peak live activations on
    the GPU under ``a``; kernels in ``streamed`` hold no resident weights (see module doc)."""
    kernels = problem.graph.kernels
    params = sum(kernels[k].param_bytes for k in problem.order if a[k] == "cuda" and k not in streamed)
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
    return GpuMemory(params, peak, ring_bytes)


def _gpu_span(problem: Problem, f, a: Assignment) -> tuple[int, int] | None:
    """First and last step at which ``f`` occupies the GPU, or None if it never does."""
    step = problem.step
    if (f.home is not None or f.kept) and a[f.origin] == "cuda":
        return 0, len(problem.order) - 1  # state: held on the GPU between steps
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
