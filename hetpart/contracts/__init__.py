"""The shared layer: data types and file conventions every stage imports.

Imports nothing of hetpart but :mod:`hetpart.errors`, so any stage may depend on it
without running backwards through the pipeline.

* :mod:`.jsonfile`: JSON files with a ``"schema"``/``"version"`` header, written
  atomically (:func:`~.jsonfile.write_json`, :func:`~.jsonfile.read_json`,
  :func:`~.jsonfile.atomic_write_text`);
* :mod:`.trace`: :class:`~.trace.Span` (a predicted or measured interval on a track)
  and the one trace format (:func:`~.trace.write_trace`, read back by
  :func:`~.trace.read_trace`);
* :mod:`.buckets`: shape buckets; :mod:`.batch_axes`: where the batch sits in a
  model's inputs and outputs (what a data-parallel split cuts and joins).
"""

from __future__ import annotations

from .jsonfile import atomic_write_text, read_json, write_json
from .trace import Process, Span, Trace, TraceSpan, read_trace, write_trace

__all__ = ["Process", "Span", "Trace", "TraceSpan", "atomic_write_text", "read_json", "read_trace", "write_json",
           "write_trace"]
