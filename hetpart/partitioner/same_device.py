"""State pairs kept on one device: the partitioner's *same-device* groups.

The runtime binds a state pair (:mod:`hetpart.runtime.state`) only where every kernel
reading its input runs on the device of the kernel writing its output; anything else
is a StateError when the session opens.  So a plan made with ``state=`` keeps each
pair's writer and readers on one device.  :func:`groups` joins them (and pairs that
share a kernel: a layer's key and value caches read by one attention kernel) into
groups, and every objective honours a group as it honours a pin, through one of:

* :func:`hold` (in :func:`~.problem.build_problem`): a group may run only where all its
  kernels may (pins, capabilities); the kernels it holds get a reason; a PlanError
  naming the pair, the kernels and their pins where that is nowhere;
* the minimum cut joins a group's kernels with infinite edges (:mod:`.mincut`), so the
  latency objective stays exact;
* local searches move a group whole (:meth:`~.problem.Problem.closure`, :func:`tie_move`);
* placements made kernel by kernel (HEFT, the greedy baseline, the memory rules, random
  plans, the chain bound's seed) are tied afterwards (:func:`tie`);
* :meth:`~.problem.Problem.check` refuses a split placement (InternalError: a bug), so
  no evaluation -- and no plan -- splits a group, and :func:`refuse_split` gives the
  user's error (PlanError) for a placement handed in from outside (a custom objective,
  :func:`~.candidates.plan_for_assignment`).

Invariant: every kernel is in at most one group; a group's kernels share ``allowed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InternalError, PlanError
from ..targets import DEVICES
from .choice import device_of
from .state import StatePair


@dataclass(frozen=True)
class SameDevice:
    """Kernels that must share a device (topological order), and the pairs that say so."""

    kernels: tuple[str, ...]
    pairs: tuple[StatePair, ...]

    def role(self, k: str) -> str:
        """What kernel ``k`` does for the group's pairs, in words."""
        return "; ".join(r for r in (p.role(k) for p in self.pairs) if r)

    def __str__(self) -> str:
        return "state " + ", ".join(map(str, self.pairs))


def groups(pairs: tuple[StatePair, ...], step: dict[str, int]) -> tuple[SameDevice, ...]:
    """In: the resolved pairs and each kernel's topological step.  Out: the groups
    (pairs sharing a kernel merged), ordered by their first kernel; single-kernel groups
    (writer and readers one kernel) are left out: nothing to keep together."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        for k in p.kernels:
            parent[find(k)] = find(p.writer)
    members: dict[str, list[str]] = {}
    for k in parent:
        members.setdefault(find(k), []).append(k)
    out = []
    for root, kernels in members.items():
        if len(kernels) < 2:
            continue
        ordered = tuple(sorted(kernels, key=step.__getitem__))
        out.append(SameDevice(ordered, tuple(p for p in pairs if find(p.writer) == root)))
    return tuple(sorted(out, key=lambda g: step[g.kernels[0]]))


def hold(groups_: tuple[SameDevice, ...], allowed: dict, reasons: dict) -> tuple[dict, dict]:
    """``(allowed, reasons)`` with every group held to the devices all its kernels may use;
    a kernel held by its group's pins or capabilities gets a reason naming them.  PlanError
    naming the pair, the kernels and their pins when no device is left."""
    allowed, reasons = dict(allowed), dict(reasons)
    for g in groups_:
        devices = tuple(d for d in DEVICES if all(d in allowed[k] for k in g.kernels))
        if not devices:
            raise PlanError(_conflict(g, allowed, reasons))
        if len(devices) == len(DEVICES):
            continue
        (device,) = devices
        holder = next(k for k in g.kernels if allowed[k] == devices)
        for k in g.kernels:
            if allowed[k] != devices:
                allowed[k] = devices
                reasons[k] = (f"kept on {device} with {holder} ({reasons[holder]}): {g} stays on one device, "
                              "where the runtime binds it")
    return allowed, reasons


def _conflict(g: SameDevice, allowed: dict, reasons: dict) -> str:
    writers = {p.writer for p in g.pairs}
    held = [f"{k} ({g.role(k)}) must run on {allowed[k][0]}: {reasons.get(k, 'held there')}"
            for k in sorted(g.kernels, key=lambda k: k not in writers) if len(allowed[k]) == 1]
    pinned = any("pin" in reasons.get(k, "") for k in g.kernels)
    fix = ("pin them to one device, drop the pin that splits them, or leave the pair out of state="
           if pinned else "leave the pair out of state= (and feed it back through numpy)")
    return (f"{g} cannot stay on one device: the runtime keeps a state on the device of the kernel that "
            "writes it, and every kernel reading it must run there, but " + "; ".join(held) + f". To plan it, {fix}")


def split_groups(groups_: tuple[SameDevice, ...], a) -> list[SameDevice]:
    """The groups placement ``a`` puts on more than one device."""
    return [g for g in groups_ if len({device_of(a[k]) for k in g.kernels}) > 1]


def describe_split(g: SameDevice, a) -> str:
    """``g``'s kernels, their roles and devices under ``a``, for an error message."""
    return ", ".join(f"{k} ({g.role(k)}) on {device_of(a[k])}" for k in g.kernels)


def tie(problem, placement: dict) -> dict:
    """``placement`` with each split group moved whole to the device where the group's
    compute and copies cost less (:meth:`~.problem.Problem.move_delta`; the first device
    on a tie); kernels already there keep their choice (a streamed one stays streamed)."""
    out = dict(placement)
    for g in split_groups(problem.same_device, out):
        devices = {k: device_of(c) for k, c in out.items()}
        best = min(problem.allowed[g.kernels[0]],
                   key=lambda d: (problem.move_delta(devices, g.kernels, d), DEVICES.index(d)))
        out.update({k: best for k in g.kernels if device_of(out[k]) != best})
    return out


def tie_move(problem, move: dict, placement: dict) -> dict:
    """``move`` (kernel -> new choice) extended so no group is split: each moved kernel's
    group follows it to its device (kernels already on that device keep their choice)."""
    out = dict(move)
    for k, there in move.items():
        for m in problem.mates.get(k, ()):
            if m not in out and device_of(placement[m]) != device_of(there):
                out[m] = there
    return out


def check_tied(groups_: tuple[SameDevice, ...], a) -> None:
    """InternalError naming the first group ``a`` splits (an algorithm of hetpart made it)."""
    for g in split_groups(groups_, a):
        raise InternalError(f"a placement splits {g} across devices ({describe_split(g, a)}); "
                            "every planner must keep a state's writer and readers together")


def refuse_split(groups_: tuple[SameDevice, ...], a, whose: str) -> None:
    """PlanError naming every group placement ``a`` (made by ``whose``) splits, and what to do."""
    split = split_groups(groups_, a)
    if split:
        raise PlanError(f"{whose} splits device-resident state across devices, which the runtime refuses to "
                        "bind: " + "; ".join(f"{g}: {describe_split(g, a)}" for g in split)
                        + ". Put each pair's writer and readers on one device (pins=/--pin KERNEL=DEVICE), "
                          "or leave the pair out of state=")
