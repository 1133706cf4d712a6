"""Device-resident state as the partitioner sees it (issue 19's KV caches).

A *state pair* ``{output: input}`` (model names, as ``Session(state=)`` takes them:
``{"present.0.key": "past.0.key"}``) says the runtime keeps ``output`` on the device
of the kernel that makes it and reads it back as ``input`` on the next step
(:mod:`hetpart.runtime.state`).  So, per step:

* the input starts on its *writer's* device, not in host memory: no host-to-device
  copy where its readers share that device;
* the output is no model output for the host: no device-to-host copy;
* the runtime refuses a pair whose input is read on another device than its writer's
  (:func:`hetpart.runtime.state.resolve_pairs`), so the writer and every reader of the
  input must share a device: each pair's kernels form a *same-device* group
  (:mod:`.same_device`) that every objective keeps on one device, as it keeps pins.

:func:`resolve_state` checks the pairs against the graph and returns what
:func:`~.problem.build_problem` needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlanError


@dataclass(frozen=True)
class StatePair:
    """One pair on an op graph: model output ``output`` (made by kernel ``writer``)
    read back as model input ``input`` by kernels ``readers`` (graph order)."""

    output: str
    input: str
    writer: str
    readers: tuple[str, ...]

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernels that must share a device: the writer, then the readers."""
        return tuple(dict.fromkeys((self.writer, *self.readers)))

    def role(self, k: str) -> str:
        """What kernel ``k`` does for this pair, in words."""
        roles = ([f"writes {self.output!r}"] if k == self.writer else []) + (
            [f"reads {self.input!r}"] if k in self.readers else [])
        return " and ".join(roles)

    def __str__(self) -> str:
        return f"{self.output!r} -> {self.input!r}"


@dataclass(frozen=True)
class BoundState:
    """The pairs resolved on an op graph.

    ``homes[input tensor]`` is the kernel that makes its paired output (the input
    starts on that kernel's device); ``kept`` the output tensors (graph tensor names)
    that stay on their producer's device; ``pairs`` each pair's writer and readers.
    """

    homes: dict[str, str]
    kept: frozenset[str]
    pairs: tuple[StatePair, ...] = ()


NONE = BoundState({}, frozenset())


def resolve_state(graph, state) -> BoundState:
    """In: ``graph`` (OpGraph), ``state`` (``{model output name: model input name}``,
    None or empty for none).  Out: :class:`BoundState`.  PlanError naming the pair for
    an unknown output or input, an input bound twice, an output no kernel makes, or
    a shape/dtype that differs between the two."""
    if not state:
        return NONE
    tensor_of = dict(zip(graph.model_output_names, graph.outputs))
    homes, kept, pairs = {}, set(), []
    for out, inp in state.items():
        if out not in tensor_of:
            raise PlanError(f"state {out!r} -> {inp!r}: {out!r} is not an output of {graph.name} "
                            f"(outputs: {', '.join(graph.model_output_names)})")
        if inp not in graph.inputs:
            raise PlanError(f"state {out!r} -> {inp!r}: {inp!r} is not an input of {graph.name} "
                            f"(inputs: {', '.join(graph.inputs)})")
        if inp in homes:
            raise PlanError(f"state {out!r} -> {inp!r}: {inp!r} is bound to two outputs; bind each input once")
        t, i = graph.tensors[tensor_of[out]], graph.tensors[inp]
        if t.producer is None:
            raise PlanError(f"state {out!r} -> {inp!r}: no kernel makes {out!r} (it is a model input passed "
                            "through); leave it out of the state")
        if (tuple(t.shape), t.dtype) != (tuple(i.shape), i.dtype):
            raise PlanError(f"state {out!r} -> {inp!r}: {out!r} is {t.dtype}{list(t.shape)} but {inp!r} is "
                            f"{i.dtype}{list(i.shape)}; pair an output with the input of its shape and dtype")
        homes[inp] = t.producer
        kept.add(t.name)
        pairs.append(StatePair(out, inp, t.producer, tuple(dict.fromkeys(i.consumers))))
    return BoundState(homes, frozenset(kept), tuple(pairs))
