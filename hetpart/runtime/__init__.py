"""Runtime stage: run compiled partitions on a CPU worker and the session's CUDA stream.

Modules, top-down: :mod:`.session` (Session: validate, run, pipeline, close) ->
:mod:`.executor` (one run's tasks and handoffs) -> :mod:`.workers` (a thread per
partition), :mod:`.streams` (the GPU stream, real or simulated), :mod:`.handoff`
(routes across the cut, transfer mode, double-buffered slots), :mod:`.memory`
(pinned/device buffers; :mod:`.pool`: a model's GPU memory quota as one arena its
device buffers are carved from), :mod:`.partition_runner` (VM per thread, DPS calls).
:mod:`.state` (outputs kept on their device as the next run's inputs), :mod:`.pipeline`, :mod:`.multi_session`, :mod:`.trace` and :mod:`.report` build on
the session; :mod:`.cuda_api` and :mod:`.dlpack` are the low-level glue;
:mod:`.synthetic` builds small models for tests and benchmarks; :mod:`.threads` and
:mod:`.cpu_share` decide which threads (and TVM pools, on which cores) run CPU
partitions, the latter across sessions running at once (``Session(cpu_sharing=)``).
"""

from .bucketed_session import BucketedSession
from .feeds import random_feeds
from .handoff import TransferCosts, choose_mode
from .multi_session import MultiReport, MultiSession
from .pipeline import PipelineReport, measure_pipeline
from .report import run_once_and_report
from .session import Session
from .stats import EdgeHandoff, RunStats, Span

__all__ = [
    "BucketedSession", "EdgeHandoff", "MultiReport", "MultiSession", "PipelineReport", "RunStats", "Session", "Span",
    "TransferCosts", "choose_mode", "measure_pipeline", "random_feeds", "run_once_and_report",
]
