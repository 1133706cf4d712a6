"""Open-loop Poisson load on a serving system, and every answer checked against its own request.

A *system* is anything with ``submit(model, feeds) -> Future`` of ``{output: array}``
(a :class:`hetpart.serving.Server`, or the PyTorch contender).  :func:`offer_load`
sends requests at Poisson arrival times whatever the system does (open loop: a slow
system does not slow the load down), and times each request from its *scheduled*
arrival to its answer, so a late generator counts against the system, never for it.

Correctness: each model has a pool of distinct request payloads whose answers the
system gave when each ran alone (:func:`references`).  A system that serves a model
on several builds (a batching server's bucket builds: batch 2, 4, 8) may offer them
(:class:`BucketedSystem`); then each payload also has the answer of every such
build, at every row of it (:func:`bucket_references`): a request batched with others
runs on exactly such a build, whose kernels (other tiles, other algorithms, TF32)
round differently from the batch-1 build, so its right answer is that build's, which
may differ from the batch-1 one where the model has near-ties (NMS over
random-weight scores).  Request ``i`` of a model sends payload ``i % pool``; its
answer is reduced to a fingerprint (a fixed sample of elements of every output,
cheap enough to take on the answering thread) and, after the window, matched to the
pool's: one of its own payload's references (``ok``, counted per reference:
``matched``), any reference of another payload's (``crossed``: someone else's
answer), its own but for a few elements (``inexact``: a near-tie broken otherwise
still; counted and reported, not a failure), or none (``wrong``).  A request with no
answer by the end of the drain is ``late`` (its latency counts as forever), and
``lost`` if it still has none ``lost_after_s`` later; one answered with an error is
``failed``.

Where the tail comes from: where the system's futures carry their
:class:`~hetpart.serving.request.RequestTiming` (a hetpart Server), each answered
request's latency is split into phases, and the window is watched for GC pauses and
thread wake-up lag (:mod:`.serve_tail`); the point's ``tail`` records it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .serve_tail import TailProbe, split, tail_record

SAMPLES_PER_OUTPUT = 64
RTOL, ATOL = 1e-2, 1e-3
# An answer off its own reference in at most this fraction of the sampled elements,
# and nearer to its own than to any other payload's, is ``inexact``, not ``wrong``.
INEXACT_MAX_FRACTION = 0.1
MISMATCH_EXAMPLES = 5  # non-ok answers described per load point (diagnosis)


@dataclass
class LoadModel:
    """One model under load: its name in the system and its pool of payloads (each one
    request with a batch dim of 1)."""

    name: str
    payloads: list[dict[str, np.ndarray]]
    fingerprints: list[tuple] = field(default_factory=list)  # the system's answers alone (fingerprint())
    # batch size b > 1 -> per payload the distinct fingerprints of its answers on the
    # system's batch-b build, at every row (none where the system offers no builds)
    bucket_fingerprints: dict[int, list[list[tuple]]] = field(default_factory=dict)

    def own_references(self, i: int) -> list[tuple[str, tuple]]:
        """Payload ``i``'s references as (key, fingerprint): ``alone`` first, then each
        bucket's (key: its batch size) in rising batch size."""
        refs = [(ALONE, self.fingerprints[i])]
        for b in sorted(self.bucket_fingerprints):
            refs += [(str(b), fp) for fp in self.bucket_fingerprints[b][i]]
        return refs


ALONE = "alone"  # the key of the reference a request run alone gave


@runtime_checkable
class BucketedSystem(Protocol):
    """A system that says on which builds it may run a model's request and runs rows on
    one on demand (the serving bench's hetpart contender: a Server over bucketed
    sessions).  ``bucket_sizes(model)``: the batch sizes of its builds (1 included);
    ``run_together(model, rows)``: the rows (each a batch-1 payload; as many as one
    build's batch) run as one batch through the server, on the build a batch of that
    many rows runs on; each row's own answer, split as the server splits a batch."""

    def bucket_sizes(self, model: str) -> list[int]: ...

    def run_together(self, model: str, rows: list[dict]) -> list[dict]: ...


@dataclass
class RatePoint:
    """What one offered rate did."""

    rate_per_s: float
    offered: int
    completed: int
    p50_ms: float | None
    p99_ms: float | None
    lost: int = 0
    late: int = 0
    crossed: int = 0
    wrong: int = 0
    failed: int = 0
    window_s: float = 0.0
    mean_batch_rows: float | None = None  # rows per batch run, where the system counts them
    inexact: int = 0
    # up to MISMATCH_EXAMPLES non-ok answers: model, verdict, the fraction of sampled
    # elements off the nearest own reference and off the nearest other payload's, and
    # that own reference's key (nearest_own: "alone" or a bucket's batch size)
    mismatches: list = field(default_factory=list)
    # model name -> p99 ms of its requests alone (which model drives the p99 above)
    p99_ms_by_model: dict = field(default_factory=dict)
    # the ok answers by the reference they matched: "alone", or a bucket's batch size
    matched: dict = field(default_factory=dict)
    # where the latency went (serve_tail.tail_record): phases, slowest 1 %, GC, wake lag;
    # None where the system stamps no request timing
    tail: dict | None = None
    # what the process used over the window (serve._resources): cores busy (process CPU
    # seconds per second), and the CPU-sharing lanes' busy fraction and wait per call
    resources: dict | None = None

    def meets(self, slo_ms: float) -> bool:
        """Every request answered, correctly, and p99 under the SLO."""
        return (self.p99_ms is not None and self.p99_ms <= slo_ms and not self.lost and not self.late
                and not self.crossed and not self.wrong and not self.failed)

    def to_json(self) -> dict:
        return dict(self.__dict__)


WHOLE_ROWS_MAX = 1 << 16
"""An integer 2-D output up to this many elements is kept whole in a fingerprint: its
rows are a set of records (NonMaxSuppression's (batch, class, box)) whose count may
differ between builds, compared as sets (:func:`mismatch_fraction`)."""


def fingerprint(outputs) -> tuple[np.ndarray, ...]:
    """A fixed sample of every output's elements, one array per output (sorted-name
    order); an integer 2-D output of at most ``WHOLE_ROWS_MAX`` elements whole."""
    parts = []
    for name in sorted(outputs):
        y = np.asarray(outputs[name])
        if y.ndim == 2 and y.dtype.kind in "iu" and y.size <= WHOLE_ROWS_MAX:
            parts.append(y.astype(np.int64))
            continue
        flat = y.reshape(-1)
        if flat.size == 0:
            parts.append(np.zeros(1))
            continue
        idx = np.linspace(0, flat.size - 1, num=min(SAMPLES_PER_OUTPUT, flat.size)).astype(np.int64)
        parts.append(flat[idx].astype(np.float64))
    return tuple(parts)


def references(system, models: list[LoadModel], timeout: float = 120.0) -> None:
    """Fill each model's fingerprints with the system's answer to each payload, run
    alone; forget any bucket references (another system's: :func:`bucket_references`)."""
    for m in models:
        m.fingerprints = [fingerprint(system.submit(m.name, p).result(timeout)) for p in m.payloads]
        m.bucket_fingerprints = {}


def bucket_references(system, models: list[LoadModel]) -> dict[str, dict[int, int]]:
    """Fill each model's ``bucket_fingerprints`` where ``system`` is a
    :class:`BucketedSystem`: for every build of batch ``b > 1``, ``len(payloads)`` runs
    of ``b`` rows, run ``s`` holding payloads ``s, s+1, ...`` (cyclically), so every
    payload's answer is taken at every row of the build; the distinct ones are kept
    (an answer identical to one already kept, ``alone`` included, is dropped).  A
    row's arithmetic does not depend on what the other rows hold (other requests, or
    the zeros a bucket is padded with), only on the build and the row, so these are
    all the answers a batched request may rightly get.  Returns model -> batch size
    -> how many payloads got an answer there other than alone (0: the build answers
    as batch 1 does).  Call after :func:`references` (which sets the ``alone`` ones)."""
    done: dict[str, dict[int, int]] = {}
    if not isinstance(system, BucketedSystem):
        return done
    for m in models:
        pool = len(m.payloads)
        sizes = sorted(b for b in set(system.bucket_sizes(m.name)) if b > 1)
        m.bucket_fingerprints = {}
        for b in sizes:
            kept: list[list[tuple]] = [[] for _ in range(pool)]
            for shift in range(pool):
                own = [(shift + k) % pool for k in range(b)]
                answers = system.run_together(m.name, [m.payloads[i] for i in own])
                for i, answer in zip(own, answers):
                    fp = fingerprint(answer)
                    if not any(_same(fp, ref) for ref in [m.fingerprints[i], *kept[i]]):
                        kept[i].append(fp)
            m.bucket_fingerprints[b] = kept
        done[m.name] = {b: sum(1 for k in m.bucket_fingerprints[b] if k) for b in sizes}
    return done


def unstable(before: list[LoadModel] | dict, models: list[LoadModel]) -> dict[str, int]:
    """Model -> how many payloads' answers alone changed between two :func:`references`
    passes of one system (``before``: model name -> the first pass's fingerprints):
    a build that answers one input two ways (a nondeterministic kernel), which no
    reference can judge exactly."""
    return {m.name: sum(1 for a, b in zip(before[m.name], m.fingerprints) if not _same(a, b)) for m in models}


def _same(a: tuple, b: tuple) -> bool:
    """Two fingerprints identical (exactly: a tolerance here would chain)."""
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))


def mismatch_fraction(fp, ref) -> float:
    """The largest fraction, over the outputs, of ``fp``'s sampled elements off
    ``ref``'s by more than ``ATOL + RTOL * max|ref's output|``: one output wholly off is
    wholly off, however many the others.  Two integer 2-D outputs kept whole with
    different row counts are compared as sets of rows; any other difference in the
    outputs' count or shapes is 1.0.

    Relative to each output's scale, not elementwise: a batched request may run on
    another build than the one the reference came from (a batch-4 bucket, not batch 1),
    whose TF32 tiles round differently; an element near zero then differs by a
    fraction of the output's scale, which is not a wrong answer.  Another request's
    answer differs by the order of the scale itself, so crossings are still caught."""
    if len(fp) != len(ref):
        return 1.0
    worst = 0.0
    for got, want in zip(fp, ref):
        if got.shape != want.shape:
            rows = _row_set_difference(got, want)
            if rows is None:
                return 1.0
            worst = max(worst, rows)
            continue
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        with np.errstate(invalid="ignore"):
            off = int(np.count_nonzero(~(np.abs(got - want) <= ATOL + RTOL * scale)))
        worst = max(worst, off / max(got.size, 1))
    return worst


def _row_set_difference(got: np.ndarray, want: np.ndarray) -> float | None:
    """For two integer 2-D outputs of one width kept whole: the rows in one but not the
    other, over the larger row count (0 for the same set); None when not such a pair."""
    if got.ndim != 2 or want.ndim != 2 or got.shape[1] != want.shape[1] or got.dtype.kind not in "iu" \
            or want.dtype.kind not in "iu":
        return None
    a, b = set(map(tuple, got.tolist())), set(map(tuple, want.tolist()))
    return len(a ^ b) / max(len(a), len(b), 1)


def judge(fp, own: int, pool: list) -> tuple[str, float, float | None]:
    """(verdict, fraction off the own reference, fraction off the nearest other) of an
    answer against ``pool``, the payloads' answers alone; see :func:`judge_refs`."""
    verdict, mine, other, _ = judge_refs(fp, own, [[(ALONE, ref)] for ref in pool])
    return verdict, mine, other


def judge_refs(fp, own: int, refs: list[list[tuple[str, tuple]]]) -> tuple[str, float, float | None, str | None]:
    """(verdict, fraction off the nearest own reference, fraction off the nearest
    reference of another payload, key of the own reference matched or nearest) of
    answer ``fp`` to payload ``own``; ``refs[i]``: payload ``i``'s references as
    (key, fingerprint), as :meth:`LoadModel.own_references`.

    ``ok``: matches one of its own references exactly (the first in order, whose key
    is returned; the other payloads' are then not compared: None); ``crossed``:
    matches any reference of another payload exactly; ``inexact``: off its nearest own
    in a few elements (at most ``INEXACT_MAX_FRACTION``) and nearer its own than any
    other's (a near-tie broken otherwise); ``wrong``: anything else."""
    mine, key = 1.0, None
    for k, ref in refs[own]:
        f = mismatch_fraction(fp, ref)
        if f == 0.0:
            return "ok", 0.0, None, k
        if f < mine or key is None:
            mine, key = f, k
    nearest_other = min((mismatch_fraction(fp, ref) for i, pool in enumerate(refs) if i != own for _, ref in pool),
                        default=1.0)
    if nearest_other == 0.0:
        return "crossed", mine, nearest_other, key
    if mine <= INEXACT_MAX_FRACTION and mine < nearest_other:
        return "inexact", mine, nearest_other, key
    return "wrong", mine, nearest_other, key


def classify(fp, own: int, pool: list) -> str:
    """``ok``, ``crossed``, ``inexact`` or ``wrong`` (see :func:`judge`)."""
    return judge(fp, own, pool)[0]


def poisson_arrivals(rate_per_s: float, window_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s from the window's start) of a Poisson process of ``rate_per_s``."""
    n = max(1, int(rate_per_s * window_s * 1.5) + 16)
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, size=n))
    return times[times < window_s]


def offer_load(system, models: list[LoadModel], rate_per_s: float, window_s: float, *,
               seed: int = 0, drain_s: float = 10.0, lost_after_s: float = 60.0, probe: bool = True) -> RatePoint:
    """Offer ``rate_per_s`` requests per second in all (models drawn uniformly) for
    ``window_s``; wait up to ``drain_s`` after the last for answers (later ones are
    late), and ``lost_after_s`` more for the late ones (then lost); score them.  GC
    pauses are recorded over the window and drain; ``probe`` adds the wake-up lag probe
    thread (:class:`~.serve_tail.TailProbe`)."""
    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(rate_per_s, window_s, rng)
    which = rng.integers(0, len(models), size=len(arrivals))
    counters = [0] * len(models)
    done_at = np.full(len(arrivals), np.nan)
    prints: list = [None] * len(arrivals)
    timings: list = [None] * len(arrivals)
    own: list[int] = [0] * len(arrivals)
    errors = [0]
    remaining = [len(arrivals)]
    all_done = threading.Event()
    lock = threading.Lock()

    def answered(i: int, fut: Future) -> None:
        t = time.perf_counter()
        timings[i] = getattr(fut, "timing", None)
        try:
            prints[i] = fingerprint(fut.result())
        except BaseException:  # noqa: BLE001 - an error answer is counted, not raised
            with lock:
                errors[0] += 1
        done_at[i] = t
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()

    if not len(arrivals):
        all_done.set()
    with TailProbe(wake=probe) as watch:
        start = time.perf_counter() + 0.01
        for i, (at, m) in enumerate(zip(arrivals, which)):
            _sleep_until(start + at)
            model = models[m]
            own[i] = counters[m] % len(model.payloads)
            counters[m] += 1
            try:
                fut = system.submit(model.name, model.payloads[own[i]])
            except BaseException:  # noqa: BLE001 - a refused request is a failed one
                with lock:
                    errors[0] += 1
                done_at[i] = time.perf_counter()
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()
                continue
            fut.add_done_callback(lambda f, i=i: answered(i, f))
        all_done.wait(drain_s)
    late = np.isnan(done_at)
    if late.any():
        all_done.wait(lost_after_s)
    point = _score(models, arrivals, which, own, start, done_at, late, prints, errors[0], rate_per_s, window_s)
    point.tail = _tail(models, arrivals, which, start, done_at, late, prints, timings, watch)
    return point


def _tail(models, arrivals, which, start, done_at, late, prints, timings, watch) -> dict | None:
    """The point's ``tail`` (:func:`~.serve_tail.tail_record`) over the requests answered
    with a result in time."""
    scheduled = start + np.asarray(arrivals)
    answered_ok = [not late[i] and prints[i] is not None for i in range(len(arrivals))]
    phases = [split(timings[i], float(done_at[i]), float(scheduled[i])) if answered_ok[i] else None
              for i in range(len(arrivals))]
    latency = (done_at - scheduled) * 1e3
    intervals = [(float(scheduled[i]), float(done_at[i])) for i in range(len(arrivals))]
    names = [models[m].name for m in which]
    return tail_record(latency, phases, timings, intervals, names, watch)


def _score(models, arrivals, which, own, start, done_at, late, prints, failed, rate, window_s) -> RatePoint:
    latency = np.where(late, np.nan, (done_at - (start + arrivals)) * 1e3)
    lost = int(np.isnan(done_at).sum())
    counts = {"ok": 0, "crossed": 0, "wrong": 0, "inexact": 0}
    matched: dict[str, int] = {}
    examples = []
    refs = [[m.own_references(i) for i in range(len(m.payloads))] for m in models]
    for i, fp in enumerate(prints):
        if fp is not None:
            verdict, mine, other, key = judge_refs(fp, own[i], refs[which[i]])
            counts[verdict] += 1
            if verdict == "ok":
                matched[key] = matched.get(key, 0) + 1
            elif len(examples) < MISMATCH_EXAMPLES:
                examples.append({"model": models[which[i]].name, "verdict": verdict, "off_own": round(mine, 4),
                                 "off_nearest_other": round(other, 4), "nearest_own": key})
    # a late or lost request's latency is "forever": it counts against p99, never for it
    latency = np.where(np.isnan(latency), _FOREVER_MS, latency)
    p50, p99 = (float(v) for v in np.percentile(latency, [50, 99])) if len(latency) else (None, None)
    which = np.asarray(which)
    by_model = {m.name: _finite(float(np.percentile(latency[which == i], 99)))
                for i, m in enumerate(models) if np.any(which == i)}
    return RatePoint(rate, len(arrivals), counts["ok"] + counts["inexact"], _finite(p50), _finite(p99), lost,
                     int(late.sum()), counts["crossed"], counts["wrong"], failed, window_s,
                     inexact=counts["inexact"], mismatches=examples, p99_ms_by_model=by_model, matched=matched)


_FOREVER_MS = 1e15  # finite, so percentiles never subtract infinities


def _finite(v):
    """None for no value, or one a lost request decided (its latency is unknown)."""
    return None if v is None or v >= _FOREVER_MS / 10 else v


def _sleep_until(t: float) -> None:
    """Sleep to ``t`` (perf_counter).  Never spin: a spinning Python thread holds the GIL
    the serving threads need; the ~0.1 ms a sleep oversleeps counts against the system."""
    left = t - time.perf_counter()
    if left > 0:
        time.sleep(left)
