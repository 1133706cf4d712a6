"""What the partitioner needs to know about costs, and a table of costs for tests.

The partitioner depends only on the :class:`Costs` protocol below, never on the
profile database behind it, so its algorithms are tested on random graphs with
synthetic costs.  :class:`hetpart.costmodel.CostModel` satisfies the protocol; so
does :class:`TableCosts`, a plain table of seconds for tests, notebooks and what-if
questions ("what if the link were twice as fast?").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from ..errors import InternalError


@runtime_checkable
class Costs(Protocol):
    """Seconds per kernel call and per transfer, as the cost model predicts them."""

    def kernel_cost(self, kernel, device: str) -> float:
        """Seconds per call of ``kernel`` on ``device``, launch overhead included."""

    def is_predicted(self, kernel, device: str) -> bool:
        """True when the cost is extrapolated, not measured."""

    def transfer_cost(self, nbytes: int, src: str, dst: str) -> float:
        """Seconds to move ``nbytes`` from ``src`` to ``dst``; 0.0 when they are the same."""

    def partition_overhead(self, device: str) -> float:
        """Seconds each partition call on ``device`` adds (a device switch)."""

    def wake_cost(self, device: str) -> float:
        """Seconds a partition on ``device`` adds besides when it starts after one on the
        other device (the CPU pool's wake-up).  Optional: a Costs without it is priced
        with 0 (:func:`.problem.wake_costs`)."""

    def supports(self, kernel, device: str) -> tuple[bool, str]:
        """Whether ``kernel`` can run on ``device``, and if not, why."""

    def graphless_cuda(self) -> tuple[float, float, float]:
        """``(call, launch, handoff)`` seconds of a CUDA partition run without CUDA graphs
        (:func:`.layout.graphless_overheads`).  Optional: a Costs without it prices such a
        partition as a graph-captured one (:func:`.problem.graphless_cuda`)."""

    def launches(self, kernel) -> int:
        """Kernel launches one call of ``kernel`` makes on the GPU (0: a view).  Optional:
        every kernel launches once without it."""

    def copy_contention(self) -> tuple[float, float] | None:
        """``(cpu_read, h2d_copy)``: the share of its own rate the CPU's cold weight reads and
        a weight copy each keep while both run; None: not measured.  Optional: a Costs without
        it prices them as independent (:func:`.problem.build_problem`)."""

    def weight_floor(self, kernel, device: str) -> float:
        """The least a call of ``kernel`` on ``device`` costs with its weights cold (the part of
        its cost that reads host memory).  Optional: read only where :meth:`copy_contention`
        gives rates."""

    def add_graph(self, graph) -> object:
        """The op graph whose kernels will be asked about; returns the costs.  The cost model
        (``CostModel.add_graph``) predicts its unmeasured kernels with their schedule rule and
        bounds by its weights whether a kernel's stay cached; a table of costs ignores it."""

    def mapped_cost(self, kernel) -> float:
        """Seconds per call of ``kernel`` on CUDA with its weights read in place from mapped pinned
        host memory (:data:`.choice.MAPPED`): the cost model's the bytes a call reads at the pinned
        host-to-device rate (:meth:`hetpart.costmodel.CostModel.mapped_cost`); a table's its CUDA
        cost plus all of its weights over the link (:meth:`TableCosts.mapped_cost`)."""


def cost_origin(costs) -> str:
    """A human string saying where ``costs`` come from (their profile's origin)."""
    for holder in (costs, getattr(costs, "profile", None)):
        origin = getattr(holder, "origin", None)
        if isinstance(origin, str) and origin:
            return origin
    return type(costs).__name__


@dataclass
class TableCosts:
    """Costs read from a table: ``seconds[kernel id][device]``.

    Transfers cost ``link_latency_s + nbytes / link_bytes_per_s``; every partition
    ``overhead_s[device]``, and one entered from the other device ``wake_s[device]`` besides.  A kernel missing
    from ``seconds`` for a device, or listed in ``unsupported`` (``(id, device) ->
    reason``), cannot run there.
    """

    seconds: dict[str, dict[str, float]]
    link_bytes_per_s: float = 12e9
    link_latency_s: float = 10e-6
    overhead_s: dict[str, float] = field(default_factory=lambda: {"cpu": 0.0, "cuda": 0.0})
    wake_s: dict[str, float] = field(default_factory=dict)  # device -> wake cost (missing: 0)
    unsupported: dict[tuple[str, str], str] = field(default_factory=dict)
    origin: str = "synthetic cost table"

    def kernel_cost(self, kernel, device: str) -> float:
        ok, why = self.supports(kernel, device)
        if not ok:
            raise InternalError(f"asked the cost of {kernel.id} on {device}, where it cannot run: {why}")
        return float(self.seconds[kernel.id][device])

    def is_predicted(self, kernel, device: str) -> bool:
        return False

    def transfer_cost(self, nbytes: int, src: str, dst: str) -> float:
        if src == dst:
            return 0.0
        return self.link_latency_s + nbytes / self.link_bytes_per_s

    def partition_overhead(self, device: str) -> float:
        return float(self.overhead_s.get(device, 0.0))

    def wake_cost(self, device: str) -> float:
        return float(self.wake_s.get(device, 0.0))

    def add_graph(self, graph) -> "TableCosts":
        """The table itself: a table of costs needs no graph."""
        return self

    def mapped_cost(self, kernel) -> float:
        """``kernel``'s CUDA cost plus all of its weights over the link (every weight byte read once)."""
        return self.kernel_cost(kernel, "cuda") + self.transfer_cost(kernel.param_bytes, "cpu", "cuda")

    def supports(self, kernel, device: str) -> tuple[bool, str]:
        if (kernel.id, device) in self.unsupported:
            return False, self.unsupported[(kernel.id, device)]
        if device not in self.seconds.get(kernel.id, {}):
            return False, f"no cost for {kernel.id} on {device} in the table"
        return True, ""

    def scaled(self, gpu: float = 1.0, link: float = 1.0) -> "TableCosts":
        """The same table with CUDA kernels ``gpu`` times as slow and the link ``link`` times."""
        seconds = {k: {d: s * (gpu if d == "cuda" else 1.0) for d, s in row.items()}
                   for k, row in self.seconds.items()}
        return replace(self, seconds=seconds, link_bytes_per_s=self.link_bytes_per_s / link,
                       link_latency_s=self.link_latency_s * link)
