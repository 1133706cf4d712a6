"""Spans and the one trace format: what the partitioner predicts and the runtime measures.

A :class:`Span` is an interval on a track (a device, a link, a CPU worker, the GPU
stream).  The partitioner's predicted timeline (``Plan.timeline``) and the runtime's
measured runs are both lists of spans, written by :func:`write_trace` as one kind of
file: Chrome trace-event JSON (open it in https://ui.perfetto.dev or
chrome://tracing) with hetpart's header, layout:

* ``"schema": "hetpart-trace"``, ``"version"``, ``"displayTimeUnit": "ms"``;
* ``"otherData"``: what the trace is of (model, objective, simulated ...);
* ``"traceEvents"``: per process (one per list of spans given, pid 1, 2, ... in
  order) its name, then per track its name and sort index (tid 1, 2, ... in order of
  first appearance unless the tracks are given), then one complete event (``"ph":
  "X"``, microseconds) per span, ``cat`` its kind, ``args`` the run it belongs to and
  whatever the caller adds.

Trace viewers ignore the extra keys.  Version 2: one layout for both writers
(version 1 had two, with the metadata in different places).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .jsonfile import write_json

SCHEMA = "hetpart-trace"
VERSION = 2

PARTITION, COPY = "partition", "copy"
"""Span kinds: a partition's call, or a tensor copied between devices."""


@dataclass
class Span:
    """An interval (seconds) on ``track``; ``kind`` :data:`PARTITION` or :data:`COPY`;
    ``run``: which run of a measured trace it belongs to (0 for a prediction)."""

    track: str
    name: str
    start: float
    end: float
    kind: str = PARTITION
    run: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Process:
    """One process of a trace: a name, its spans, and optionally the order of its tracks."""

    name: str
    spans: Sequence[Span]
    tracks: Sequence[str] = ()


def trace_events(processes: Sequence[Process], args_of: Callable[[Span], dict] | None = None) -> list[dict]:
    """The trace events of ``processes`` (layout in the module docstring); ``args_of``
    adds a span's own ``args``."""
    events: list[dict] = []
    for pid, proc in enumerate(processes, start=1):
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": proc.name}})
        tids: dict[str, int] = {}
        for track in [*proc.tracks, *(s.track for s in proc.spans)]:
            if track in tids:
                continue
            tids[track] = len(tids) + 1
            events.append({"ph": "M", "pid": pid, "tid": tids[track], "name": "thread_name", "args": {"name": track}})
            events.append({"ph": "M", "pid": pid, "tid": tids[track], "name": "thread_sort_index",
                           "args": {"sort_index": tids[track]}})
        for s in sorted(proc.spans, key=lambda s: s.start):
            args = {"run": s.run, **(args_of(s) if args_of else {})}
            events.append({"ph": "X", "pid": pid, "tid": tids[s.track], "name": s.name, "cat": s.kind,
                           "ts": s.start * 1e6, "dur": max(s.seconds, 0.0) * 1e6, "args": args})
    return events


def write_trace(path: str | os.PathLike, processes: Sequence[Process], about: dict,
                args_of: Callable[[Span], dict] | None = None) -> Path:
    """Write the trace of ``processes`` to ``path`` (parents created, atomically), with
    ``about`` as its ``otherData``; returns the path."""
    return write_json(path, SCHEMA, VERSION, {"displayTimeUnit": "ms", "otherData": dict(about),
                                             "traceEvents": trace_events(processes, args_of)})


__all__ = ["COPY", "PARTITION", "Process", "SCHEMA", "Span", "VERSION", "trace_events", "write_trace"]
