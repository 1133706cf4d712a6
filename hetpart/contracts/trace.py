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

:func:`read_trace` is the one reader of these files (tools, device steps, tests): a
:class:`Trace` of :class:`TraceSpan` (microseconds, as written) with each span's track
and process named from the metadata events.  It takes the ``{"traceEvents": [...]}``
form and a bare list of events; a file with a ``"schema"`` header must be this schema
at :data:`VERSION`, else :class:`~hetpart.errors.TraceError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import TraceError
from .jsonfile import load_json, write_json

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


@dataclass(frozen=True)
class TraceSpan:
    """One complete event (``"ph": "X"``) of a trace file, as written: ``start_us`` its
    ``ts`` and ``dur_us`` its ``dur`` (microseconds, unconverted), ``track`` its thread's
    name ("" when no ``thread_name`` names it), ``kind`` its ``cat``, ``pid`` and
    ``process`` its process's id and name ("" when unnamed)."""

    name: str
    track: str
    start_us: float
    dur_us: float
    kind: str = ""
    args: dict = field(default_factory=dict)
    pid: int = 0
    process: str = ""

    @property
    def end_us(self) -> float:
        return self.start_us + self.dur_us


@dataclass(frozen=True)
class Trace:
    """A trace file read back: its complete events in file order, the process and track
    names of its metadata events, its ``otherData`` (``about``; {} when absent) and its
    header's version (None: a file without one, a bare list of events or a dict without
    ``"schema"``).  Invariant: every span's track and process are named as the
    metadata names its ``(pid, tid)`` and ``pid``."""

    spans: tuple[TraceSpan, ...]
    processes: dict[int, str]
    tracks: dict[tuple[int, int], str]
    about: dict = field(default_factory=dict)
    version: int | None = None

    def of(self, process: int | str | None = None) -> list[TraceSpan]:
        """The spans of one process, by pid (int) or name (str); all for None."""
        if process is None:
            return list(self.spans)
        if isinstance(process, str):
            return [s for s in self.spans if s.process == process]
        return [s for s in self.spans if s.pid == process]

    def spans_on(self, track: str, process: int | str | None = None) -> list[TraceSpan]:
        """The spans on the track named ``track`` (of ``process`` as :meth:`of` takes
        it), in file order."""
        return [s for s in self.of(process) if s.track == track]

    def track_names(self, process: int | str | None = None) -> list[str]:
        """The named tracks (of ``process`` as :meth:`of` takes it), in the order the
        metadata lists them."""
        def wanted(pid: int) -> bool:
            if process is None:
                return True
            return self.processes.get(pid) == process if isinstance(process, str) else pid == process

        return [name for (pid, _), name in self.tracks.items() if wanted(pid)]


def parse_trace(doc, source: str = "the trace") -> Trace:
    """The :class:`Trace` of a decoded trace document (``{"traceEvents": [...]}`` or a
    bare list of events); ``source`` names it in a :class:`~hetpart.errors.TraceError`
    (another schema or version, no event list, a complete event without name or ts)."""
    about: dict = {}
    version = None
    if isinstance(doc, dict):
        if "schema" in doc:
            if doc["schema"] != SCHEMA:
                raise TraceError(f"{source} is not a {SCHEMA} file (schema {doc['schema']!r})")
            if doc.get("version") != VERSION:
                raise TraceError(f"{source} is {SCHEMA} version {doc.get('version')!r}; "
                                 f"this hetpart reads version {VERSION}")
            version = VERSION
        events, about = doc.get("traceEvents"), doc.get("otherData") or {}
    else:
        events = doc
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise TraceError(f"{source} holds no list of trace events (a list, or a dict with \"traceEvents\")")
    processes: dict[int, str] = {}
    tracks: dict[tuple[int, int], str] = {}
    for e in events:
        if e.get("ph", "M") == "M" and e.get("name") in ("process_name", "thread_name"):
            name = (e.get("args") or {}).get("name", "")
            if e["name"] == "process_name":
                processes[e.get("pid", 0)] = name
            else:
                tracks[(e.get("pid", 0), e.get("tid", 0))] = name
    spans = []
    for e in events:
        if e.get("ph") != "X":
            continue
        if "name" not in e or "ts" not in e:
            raise TraceError(f"{source}: a complete event without a name or ts: {e}")
        pid = e.get("pid", 0)
        spans.append(TraceSpan(e["name"], tracks.get((pid, e.get("tid", 0)), ""), float(e["ts"]),
                               float(e.get("dur", 0.0)), e.get("cat", ""), dict(e.get("args") or {}), pid,
                               processes.get(pid, "")))
    return Trace(tuple(spans), processes, tracks, dict(about), version)


def read_trace(path: str | os.PathLike) -> Trace:
    """The trace in ``path`` (:func:`parse_trace`); :class:`~hetpart.errors.TraceError`
    naming the file when it is missing, not JSON, or not a trace of this version."""
    return parse_trace(load_json(path, TraceError), str(path))


__all__ = ["COPY", "PARTITION", "Process", "SCHEMA", "Span", "Trace", "TraceSpan", "VERSION", "parse_trace",
           "read_trace", "trace_events", "write_trace"]
