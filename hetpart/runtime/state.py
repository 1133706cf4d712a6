"""Device-resident state: model outputs that become the next run's inputs, kept where they are made.

Issue 19's decode step takes its KV caches as inputs and returns the updated caches as
outputs.  Fed back through numpy, every step would copy each cache GPU->host->GPU
(~184 MB a step for the full ``llama_decode``).  ``Session(compiled, state={...})``
binds output -> input pairs instead::

    pairs = {f"present.{i}.{kv}": f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")}
    with hetpart.Session(compiled, state=pairs, initial_state=caches) as s:
        for token in tokens:
            logits = s.run({"input_ids": token, "position": pos})["logits"]  # no cache in or out
        s.read_state("present.0.key")  # (or "past.0.key"): a host copy, on demand only

What a bound pair does (:class:`DeviceState`):

* two buffers per pair, ``current`` and ``next``, allocated once on the side (``"cuda"``
  or ``"cpu"``) of the partition that produces the output; every partition that reads
  the input must run on that same side (else :class:`~hetpart.errors.StateError`
  naming the partitions and their devices: re-plan with ``partition(state=)``, which
  keeps each pair's producer and readers together (:mod:`hetpart.partitioner.same_device`),
  or with a pin that does -- a cross-device state would be a host round trip per step,
  which is what binding exists to avoid);
* a run reads the input from ``current`` and its producer writes the output into
  ``next`` (with destination passing the kernel writes it there directly: no copy; a
  partition without ``main_dps`` stages one copy on its own device); when the run has
  completed without error the two swap, so a failed step leaves the state as it was;
* the bound input is left out of ``feeds`` and the bound output out of ``run``'s result;
  neither gets a handoff buffer nor a host copy (``RunStats`` counts none);
* runs of a session with state are serialised, one step after the other (each reads
  what the one before wrote): a run takes the state when its context is made and gives
  it back when it completes; ``submit`` and ``run_pipelined`` still work, one step at a
  time.

Double-buffered rather than in place: the compiler writes an output in place only
into the buffer it is handed (``compiler.extract._in_place``), and a kernel reading
``past`` while another writes ``present`` over it (the decode step's attention reads
the updated cache) is only safe in two buffers.  Cost: twice the state's bytes on its
device, against the four (an input and an output buffer per slot, two slots) of
feeding it back.

Invariant: between runs, ``current`` of every pair holds the state the next run reads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..compiler.artifact import CompiledModel, TensorSpec
from ..errors import StateError
from . import cuda_api
from .handoff import Route
from .memory import Buffer, Memory, dtype_name, host_buffer, is_static


@dataclass(frozen=True)
class StatePair:
    """One bound pair: model output ``output`` (graph tensor ``tensor``, made by
    partition ``producer`` on ``side``) becomes model input ``input`` of the next run."""

    output: str
    input: str
    tensor: str
    spec: TensorSpec
    side: str
    producer: str


def check_single(compiled) -> None:
    """StateError for a model a Session opens as several sessions (shape buckets, a
    data-parallel split): each would hold a state of its own shape."""
    for kind, flag in (("compiled per shape bucket", "is_bucketed"), ("split data-parallel", "is_data_parallel")):
        if getattr(compiled, flag, False):
            raise StateError(f"a model {kind} runs as several sessions and cannot bind state; compile it at "
                             "one fixed shape (hetpart.compile) to keep its state on the device")


def resolve_pairs(compiled: CompiledModel, pairs: Mapping[str, str]) -> list[StatePair]:
    """The pairs ``{output name: input name}`` checked against ``compiled``; StateError
    listing every problem (unknown names, a name bound twice, a shape/dtype mismatch,
    an output no partition makes, a reader on another device than the producer)."""
    if not isinstance(pairs, Mapping) or not pairs:
        raise StateError("state is a non-empty dict of model output name -> model input name "
                         f"(e.g. {{'present.0.key': 'past.0.key'}}), got {pairs!r}")
    tensor_of = dict(zip(compiled.model_output_names, compiled.outputs))
    inputs = {t.name: t for t in compiled.inputs}
    producers = {t.name: p for p in compiled.partitions for t in p.outputs}
    problems, resolved = [], []
    if len(set(pairs.values())) != len(pairs):
        twice = sorted({i for i in pairs.values() if list(pairs.values()).count(i) > 1})
        problems.append(f"input(s) {', '.join(map(repr, twice))} bound to more than one output")
    for out, inp in pairs.items():
        if out not in tensor_of:
            problems.append(f"'{out}' is not an output of the model (outputs: {', '.join(tensor_of)})")
            continue
        if inp not in inputs:
            problems.append(f"'{inp}' is not an input of the model (inputs: {', '.join(inputs)})")
            continue
        got, want = tensor_of[out], inputs[inp]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype or not is_static(want.shape):
            problems.append(f"output '{out}' {list(got.shape)} {got.dtype} cannot feed input '{inp}' "
                            f"{list(want.shape)} {want.dtype}: a state pair needs one static shape and dtype")
            continue
        producer = producers.get(got.name)
        if producer is None:
            problems.append(f"output '{out}' is made by no partition (it is a model input passed through)")
            continue
        readers = [p for p in compiled.partitions if any(t.name == inp for t in p.inputs)]
        away = [p for p in readers if p.device != producer.device]
        if away:
            problems.append(
                f"output '{out}' is made by partition '{producer.name}' on {producer.device} "
                f"(kernels {', '.join(producer.kernels[-3:])}) but input '{inp}' is read by "
                + ", ".join(f"partition '{p.name}' on {p.device}" for p in away)
                + ": a state stays on one device; re-plan with the pairs (partition(..., state=) keeps each "
                  "pair's producer and readers on one device) or with a pin (pins=/--pin KERNEL=DEVICE) that "
                  "does, or feed it back through numpy")
            continue
        resolved.append(StatePair(out, inp, got.name, want, producer.device, producer.name))
    if problems:
        raise StateError("cannot bind state: " + "; ".join(problems), names=list(pairs))
    return resolved


def state_routes(compiled: CompiledModel, routes: dict[str, Route], pairs: list[StatePair]) -> dict[str, Route]:
    """``routes`` with every bound input at home on its state's side (no feed, no buffer,
    no copy) and every bound output no longer sent to the host as a result (still
    copied, once, to another side that reads it; ``"copy"`` mode, since its value is
    in the state's buffer, not in a slot's pinned one)."""
    out = dict(routes)
    bound_outputs = {p.output for p in pairs}
    returned = {t.name for name, t in zip(compiled.model_output_names, compiled.outputs) if name not in bound_outputs}
    for p in pairs:
        out[p.input] = Route(p.spec, None, p.side, frozenset({p.side}), False, None)
        old = routes[p.tensor]
        sides = {old.home} | {a.device for a in compiled.partitions if any(t.name == p.tensor for t in a.inputs)}
        if p.tensor in returned:
            sides.add("cpu")
        crosses = bool(sides - {old.home})
        out[p.tensor] = Route(old.spec, old.producer, old.home, frozenset(sides), p.tensor in returned,
                              "copy" if crosses else None)
    return out


class DeviceState:
    """The bound state of one session: two buffers per pair, and the step lock.

    ``begin(ctx)`` (blocking until the previous step completed) hands a run the current
    buffers as feeds and the next ones as output buffers; ``end(ctx)`` swaps them if the
    run succeeded and lets the next step begin."""

    def __init__(self, compiled: CompiledModel, routes: dict[str, Route], memory: Memory,
                 pairs: Mapping[str, str], initial: Mapping[str, np.ndarray] | None = None):
        self.pairs = resolve_pairs(compiled, pairs)
        self.routes = state_routes(compiled, routes, self.pairs)
        self._memory = memory
        self._by_name = {n: p for p in self.pairs for n in (p.output, p.input)}
        self._buffers = {p.input: [self._allocate(p), self._allocate(p)] for p in self.pairs}
        self._turn = threading.Lock()  # held from a step's begin to its end
        self.steps = 0  # completed steps (swaps)
        self.parity = 0  # which buffer of each pair is current: flips with every swap
        given = {self._pair(n).input for n in (initial or {})}
        # zeros where nothing is given: a device buffer starts uninitialised on a real GPU
        self.write({**{p.input: np.zeros(tuple(p.spec.shape), p.spec.dtype) for p in self.pairs
                       if p.input not in given}, **(initial or {})})

    def _allocate(self, p: StatePair) -> Buffer:
        if p.side == "cuda":
            return self._memory.device(p.spec)  # written (initial state or zeros) before it is read
        if self.routes[p.tensor].crosses:  # the host side of a copy to a GPU reader
            return self._memory.pinned(p.spec)
        return host_buffer(p.spec)

    # --- what the session asks ---------------------------------------------------
    @property
    def inputs(self) -> frozenset:
        """The bound model inputs (left out of feeds)."""
        return frozenset(p.input for p in self.pairs)

    @property
    def outputs(self) -> frozenset:
        """The bound model outputs (left out of results)."""
        return frozenset(p.output for p in self.pairs)

    @property
    def tensors(self) -> frozenset:
        """The graph tensors of the bound outputs (written into state buffers, not slots)."""
        return frozenset(p.tensor for p in self.pairs)

    def narrow(self, feed_specs: list[TensorSpec], output_keys: list[tuple[str, str]]):
        """The session's per-run bookkeeping without the bound names: ``(feed specs, feed
        specs by name, output tensors, (model output name, tensor) pairs)``."""
        specs = [s for s in feed_specs if s.name not in self.inputs]
        keys = [(k, t) for k, t in output_keys if k not in self.outputs]
        return specs, {s.name: s for s in specs}, list(dict.fromkeys(t for _, t in keys)), keys

    def check_feeds(self, feeds) -> None:
        """StateError if ``feeds`` gives a bound input (it comes from the state)."""
        given = [n for n in getattr(feeds, "keys", lambda: ())() if n in self.inputs]
        if given:
            raise StateError(f"input(s) {', '.join(map(repr, given))} are bound state: leave them out of the "
                             "feeds (session.write_state(name, array) sets a state)", names=given)

    def begin(self, ctx) -> None:
        """Wait for the previous step, then give ``ctx`` the state: ``ctx.feeds`` gets the
        current buffers, ``ctx.state_outputs`` the next ones; ``ctx.holds_state`` is set."""
        self._turn.acquire()
        ctx.holds_state = True
        for p in self.pairs:
            current, following = self._buffers[p.input]
            ctx.feeds[p.input] = current
            ctx.state_outputs[p.tensor] = following

    def end(self, ctx, ok: bool) -> None:
        """Finish ``ctx``'s step (idempotent): swap the buffers if ``ok``; free the turn."""
        if not getattr(ctx, "holds_state", False):
            return
        ctx.holds_state = False
        try:
            if ok:
                self._swap()
                self.steps += 1
        finally:
            self._turn.release()

    def _swap(self) -> None:
        for pair in self._buffers.values():
            pair.reverse()
        self.parity ^= 1

    def orient(self, parity: int) -> None:
        """Between steps, make buffer ``parity`` of each pair the current one (no step;
        the values are the buffers', so whatever the other buffer held is now current):
        for the session's capture runs, which meet both orientations."""
        with self._turn:
            if parity != self.parity:
                self._swap()

    def snapshot(self) -> tuple:
        """(parity, host copies of every current state) to :meth:`restore` later."""
        return self.parity, {p.input: self.read(p.input) for p in self.pairs}

    def restore(self, saved: tuple) -> None:
        """Back to a :meth:`snapshot`: its orientation and its values."""
        parity, values = saved
        self.orient(parity)
        self.write(values)

    # --- reading and writing between steps ---------------------------------------------
    def _pair(self, name: str) -> StatePair:
        pair = self._by_name.get(name)
        if pair is None:
            raise StateError(f"'{name}' is not bound state; bound: "
                             + ", ".join(f"{p.output} -> {p.input}" for p in self.pairs), names=[name])
        return pair

    def read(self, name: str) -> np.ndarray:
        """A host copy of the state ``name`` (a bound output or input name) as the next
        step will read it."""
        pair = self._pair(name)
        with self._turn:
            buf = self._buffers[pair.input][0]
            if buf.array is not None:
                return np.array(buf.array, copy=True)
            out = np.empty(tuple(pair.spec.shape), pair.spec.dtype)
            cuda_api.memcpy_async(out.ctypes.data, buf.ptr, buf.nbytes, "d2h", 0)
            cuda_api.stream_synchronize(0)
            return out

    def write(self, values: Mapping[str, np.ndarray]) -> None:
        """Set states from host arrays (``{bound output or input name: array}``); checked
        first, all or nothing."""
        checked = []
        for name, value in values.items():
            pair = self._pair(name)
            arr = np.ascontiguousarray(value)
            if arr.shape != tuple(pair.spec.shape) or dtype_name(arr.dtype) != pair.spec.dtype:
                raise StateError(f"state '{name}' is {list(pair.spec.shape)} {pair.spec.dtype}, got "
                                 f"{list(arr.shape)} {arr.dtype}", names=[name])
            checked.append((pair, arr))
        with self._turn:
            for pair, arr in checked:
                buf = self._buffers[pair.input][0]
                if buf.array is not None:
                    np.copyto(buf.array, arr)
                else:
                    cuda_api.memcpy_async(buf.ptr, arr.ctypes.data, buf.nbytes, "h2d", 0)
                    cuda_api.stream_synchronize(0)

    def buffer_ptrs(self, name: str) -> tuple[int, int]:
        """(current, next) addresses of the state ``name``: for tests of "no copy"."""
        a, b = self._buffers[self._pair(name).input]
        return a.ptr, b.ptr
