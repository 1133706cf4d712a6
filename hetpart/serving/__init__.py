"""Serving: several compiled models behind one in-process server with dynamic batching.

:class:`Server` (:mod:`.server`) takes requests for any of its models from many
threads (``submit`` -> Future, ``infer``), queues them per model, and batches them as
load rises (:mod:`.batcher`); :mod:`.request` is what a request looks like and how it
is checked; :mod:`.runner` what a model must offer (:class:`Runner`: ``run`` over a
leading batch dim and ``max_batch``; a fixed-batch Session through
:class:`SessionRunner`); :mod:`.gate` shares run slots across models by priority;
:mod:`.stats` counts and times; :mod:`.policy` decides, from measured bucket
latencies, which batch sizes a model runs at (only builds that pay).  No network
protocol: docs/SERVING.md wraps a Server in a stdlib HTTP server.
"""

from .policy import BatchingPolicy
from .runner import Runner, RowSpec, SessionRunner, as_runner
from .server import DEFAULT_MAX_DELAY, Server, serve

__all__ = ["BatchingPolicy", "DEFAULT_MAX_DELAY", "RowSpec", "Runner", "Server", "SessionRunner", "as_runner",
           "serve"]
