"""Predict the cost of kernels never measured, from the ones that were.

In: a :class:`Profile` (each record stores the kernel's features next to its
timing, so no model needs re-importing).  Out: per device and op class, a fitted
:class:`Fit`; :func:`evaluate` reports its held-out accuracy, per held-out kernel
shape or per held-out model.

The quantity predicted is the one the partitioner uses: a kernel's cost inside a
partition (:meth:`KernelRecord.cost`).  Two steps:

1. a *form* from the small registry :data:`FORMS` (add one with
   :func:`register_form`) maps a kernel's features, and what the profile says of
   its device (:class:`DeviceFacts`), to design columns whose non-negative
   coefficients are fitted in log space (so every kernel's relative error counts
   alike, 1 us or 100 ms).  The default, ``roofline_shape``, is a roofline with
   its terms added instead of maxed (so the fit stays smooth): a fixed cost, the
   FLOPs, the bytes streamed, a contraction's weight bytes, plus one term for what
   limits that kind of device besides (see :func:`_roofline_shape`).  The fit is
   robust (Huber weights on the log residuals, :data:`HUBER`), so a few noisy
   timings do not drag the rest;
2. a correction by the residuals of the :data:`NEIGHBOURS` most similar measured
   kernels of the class (nearest in log FLOPs and log bytes): kernels of similar
   shape miss the roofline by similar factors (how well their schedule fits).

A class's own fit is shrunk towards the device's pooled fit over all classes (in
log space, weight ``n / (n + SHRINK)``); a term that fewer than :data:`MIN_POINTS`
of the class's kernels exercise keeps the pooled fit's coefficient (one kernel
cannot price a term for its class).  A class with fewer than :data:`MIN_POINTS`
measured kernels uses the pooled fit, moved by its kernels' shrunk median residual
when it has any.  No prediction is below the device's per-launch overhead, which
every measured cost contains.

Within a class, the schedule rule that builds the kernel on the device
(:attr:`KernelRecord.rule`; for an unmeasured kernel the :class:`CostModel` schedules
its PrimFunc to find it, :mod:`.schedule_rule`) refines the fit the same way once
more: the kernels of one (class, rule) get a fit of their own shrunk towards the
class's fit when there are :data:`MIN_POINTS` of them, else the class's fit moved
by their shrunk median residual.  Two kernels of one class can run 2-3x apart
because different rules tile them (a 1x1 convolution runs as a GEMM, a small
matmul as a reduction); FLOPs and bytes do not show that, the rule does.  A kernel
whose rule is unknown (``""``: a profile older than the field) uses the class fit.

The kernel's access pattern (:attr:`KernelRecord.access`, :mod:`.access_pattern`:
whether its innermost output loop reads an input with a non-unit stride) refines
the (class, rule) fit once more, the same way: a transpose whose last output dim is
not its input's last dim misses the cache on every read and runs 10x slower than a
reshape of the same bytes, which FLOPs, bytes and rule do not show.  An unknown
access (``""``) stops at the (class, rule) fit, so a profile without the field
predicts exactly as before.

A refined fit (class, rule, access pattern) prices only kernels within its reach:
each design column at most :data:`REACH` times the largest value its own training
kernels had (:attr:`Fit.reach`).  Past it, the next coarser fit that reaches the kernel
prices it (the pooled fit reaches everything).  A coefficient fitted on kernels whose
time is all launch says nothing of a kernel 100x their bytes: on the H200 profile the
CUDA (matmul, Reduction, contiguous) fit had seen GEMVs streaming at most ~0.1 MB of
activations, priced those bytes at ~10 GB/s, and so predicted LLaMA's decode attention
(16.8 MB of KV cache read, no weights) at 890 us a kernel, ~100x the matmul class's
6.8 us (bench/results/capped-predictions.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import numpy as np

from ..errors import ProfileError
from .access_pattern import STRIDED
from .kernel_shape import (
    one_thread, reduction_length, rows, scalar_flops, sort_work, streamed_bytes, weight_bytes,
)
from .profile_db import KernelFeatures, Profile
from .transfer_model import nonneg_relative_lstsq

MIN_POINTS = 4
MIN_SUPPORT = 3
NEIGHBOURS = 3
HUBER = 0.5  # log residual (a factor ~1.65) beyond which a kernel's weight in the fit shrinks
SHRINK = 4.0  # pseudo-count of the pooled fit when blending it with a class's own
POOLED = "*"
REACH = 4.0  # a refined fit prices kernels up to this many times its training kernels' largest column values


# --- the device -------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceFacts:
    """What the forms need to know of the device a profile measured.

    ``gpu``: it runs every output of a kernel at once (a CUDA device);
    ``simd_lanes``: float32 lanes of a CPU's vector registers (0: unknown).
    """

    gpu: bool = False
    simd_lanes: int = 0

    @classmethod
    def of(cls, profile: Profile, device: str) -> "DeviceFacts":
        """From the TVM target the profile records for ``device`` (or its name alone)."""
        target = profile.targets.get(device, "")
        try:
            kind = json.loads(target).get("kind", "") if target else ""
        except (json.JSONDecodeError, AttributeError):
            kind = ""
        if kind == "llvm":
            return cls(gpu=False, simd_lanes=_cpu_lanes(target))
        return cls(gpu=kind in ("cuda", "rocm", "vulkan", "metal") or (not kind and device != "cpu"))


@lru_cache(maxsize=16)
def _cpu_lanes(target_json: str) -> int:
    """float32 lanes the compiler's CPU rules vectorise with on this target (0 if unknown)."""
    try:
        from tvm.target import Target

        from ..kernels.facts import cpu_shape

        return cpu_shape(Target(target_json)).lanes("float32")
    except Exception:  # noqa: BLE001 - a target this TVM cannot parse: no vector-width term
        return 0


# --- forms --------------------------------------------------------------------------
FORMS: dict[str, Callable[[KernelFeatures, DeviceFacts], list[float]]] = {}


def register_form(name: str):
    """Register ``columns(features, device_facts) -> list[float]`` (design row, coefficients >= 0)."""

    def deco(fn):
        FORMS[name] = fn
        return fn

    return deco


@register_form("roofline")
def _roofline(f: KernelFeatures, device: DeviceFacts, strided: bool = False) -> list[float]:
    return [1.0, float(f.flops), float(f.bytes)]


@register_form("roofline_shape")
def _roofline_shape(f: KernelFeatures, device: DeviceFacts, strided: bool = False) -> list[float]:
    """``c + flops/P + streamed/B + weights/W + limit``, where ``limit`` is:

    * on a GPU, the reduction length K (FLOPs per output / 2): all outputs run at
      once, one per thread, so a kernel with fewer outputs than the GPU has lanes
      takes the time of one K-long dot product, however few outputs it has (a 7x7
      convolution with K = 4608 is 8x slower than one with K = 577 and 8x the
      outputs);
    * on a CPU, the FLOPs of a contraction whose output width the SIMD width does
      not divide: it runs as scalar dot products, ~10x slower per FLOP (a
      10-class head); the streamed bytes of a kernel kept on one thread, which
      move at one core's bandwidth (``strided``: the fit is for kernels that read an
      input strided, which the CPU schedules parallelise from fewer outputs); and a
      sort's ``n log n`` comparisons
      (:func:`~.kernel_shape.sort_work`), serial work that no FLOP counts.
    """
    streamed = float(streamed_bytes(f))
    if device.gpu:
        return [1.0, float(f.flops), streamed, float(weight_bytes(f)), serial_length(f)]
    serial = one_thread(f, strided)
    return [1.0, float(f.flops), 0.0 if serial else streamed, float(weight_bytes(f)),
            float(scalar_flops(f, device.simd_lanes)), streamed if serial else 0.0, sort_work(f)]


def serial_length(f: KernelFeatures) -> float:
    """The reduction length a GPU thread runs alone: K, except for a one-row
    contraction (a GEMV), whose schedule splits K over the threads of a block."""
    return 0.0 if rows(f) == 1 else reduction_length(f)


DEFAULT_FORM = "roofline_shape"


def _position(f: KernelFeatures) -> np.ndarray:
    """Where a kernel sits for the neighbour search: log FLOPs, log bytes."""
    return np.array([np.log1p(f.flops), np.log1p(f.bytes)])


# --- fits -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """``cost = columns(features) . coef``, corrected by nearby residuals.

    ``scope`` is the op class or ``*`` (pooled); ``anchors`` are the training
    kernels' positions and log residuals ``log(measured / fitted)``.  ``prior`` (the
    pooled fit) is blended in with weight ``1 - weight`` in log space; ``offset`` is a
    log factor on the whole; ``floor`` the least cost predicted.
    """

    form: str
    scope: str
    coef: tuple[float, ...]
    n: int
    device: DeviceFacts = DeviceFacts()
    anchors: tuple[tuple[float, float, float], ...] = ()
    prior: "Fit | None" = None
    weight: float = 1.0
    offset: float = 0.0
    floor: float = 0.0
    neighbours: int = NEIGHBOURS
    strided: bool = False  # a fit of kernels that read an input strided (its columns say so)
    reach: tuple[float, ...] = ()  # per column, the largest value among its training kernels (): no limit

    def columns(self, f: KernelFeatures) -> list[float]:
        return FORMS[self.form](f, self.device, self.strided)

    def reaches(self, f: KernelFeatures) -> bool:
        """True when every design column of ``f`` is at most :data:`REACH` times the
        largest value the fit's training kernels had in it (always, without a ``reach``)."""
        if not self.reach:
            return True
        return all(v <= REACH * r for v, r in zip(self.columns(f), self.reach))

    def base(self, f: KernelFeatures) -> float:
        own = np.log(max(float(np.dot(self.columns(f), self.coef)), 1e-12))
        if self.prior is not None:
            own = self.weight * own + (1.0 - self.weight) * np.log(self.prior.base(f))
        return float(np.exp(own + self.offset))

    def predict(self, f: KernelFeatures, neighbours: int | None = None) -> float:
        neighbours = self.neighbours if neighbours is None else neighbours
        if not self.anchors or neighbours <= 0:
            return max(self.base(f), self.floor)
        a = np.array(self.anchors)
        correction = _nearby_residual(a[:, :2], a[:, 2], _position(f), neighbours)
        return max(self.base(f) * float(np.exp(correction)), self.floor)


def _nearby_residual(positions: np.ndarray, residuals: np.ndarray, at: np.ndarray, k: int) -> float:
    """Distance-weighted mean log residual of the ``k`` anchors nearest ``at``."""
    dist = np.linalg.norm(positions - at, axis=1)
    near = np.argsort(dist, kind="stable")[:k]
    weight = 1.0 / (dist[near] + 0.5)  # closer kernels count more; 0.5 = a factor ~1.6 apart
    return float(np.dot(weight, residuals[near]) / weight.sum())


def _useful_neighbours(anchors: tuple[tuple[float, float, float], ...]) -> int:
    """How many neighbours (0 .. :data:`NEIGHBOURS`) best predict each training
    kernel's residual from the others' (mean absolute log error, leave-one-out).

    Where the fit's misses are local (kernels of similar size miss alike) the
    correction pays; where they are not (kernels of one size that run 10x apart)
    it only spreads noise, and none is used.  Every kernel's neighbours are found at
    once (:func:`_leave_one_out_residuals`), the same ones :func:`_nearby_residual`
    finds among the others."""
    a = np.array(anchors)
    if len(a) < 2 * NEIGHBOURS:
        return 0
    err = [np.mean(np.abs(a[:, 2]))]
    for k in range(1, NEIGHBOURS + 1):
        err.append(float(np.mean(np.abs(a[:, 2] - _leave_one_out_residuals(a[:, :2], a[:, 2], k)))))
    return int(np.argmin(err))


def _leave_one_out_residuals(positions: np.ndarray, residuals: np.ndarray, k: int) -> np.ndarray:
    """Per row ``i``: :func:`_nearby_residual` of the ``k`` nearest other rows at row
    ``i``'s position (its own row left out; ties in the others' order, as there)."""
    dist = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=2)
    np.fill_diagonal(dist, np.inf)  # never its own neighbour: it sorts last
    near = np.argsort(dist, axis=1, kind="stable")[:, :k]
    d = np.take_along_axis(dist, near, axis=1)
    weight = 1.0 / (d + 0.5)
    return np.einsum("ij,ij->i", weight, residuals[near]) / weight.sum(axis=1)


def rules(profile: Profile, device: str) -> dict[str, str]:
    """Signature -> schedule rule recorded on ``device`` (``""`` where none was)."""
    return {s: r.rule for s, r in profile.kernels.get(device, {}).items()}


def accesses(profile: Profile, device: str) -> dict[str, str]:
    """Signature -> access pattern recorded on ``device`` (``""`` where none was)."""
    return {s: r.access for s, r in profile.kernels.get(device, {}).items()}


def samples(profile: Profile, device: str) -> list[tuple[str, KernelFeatures, float]]:
    """``(signature, features, measured cost)`` of every successfully measured kernel on ``device``;
    not a flash chain's record (:attr:`.profile_db.KernelRecord.flash`: its timing is three kernels'
    work under one kernel's features)."""
    oh = profile.overheads.get(device)
    if oh is None:
        return []
    return [(s, r.features, r.cost(oh)) for s, r in sorted(profile.kernels.get(device, {}).items())
            if r.ok and not r.flash]


def log_space_fit(x: np.ndarray, y: np.ndarray, iters: int = 100, sample_weight: np.ndarray | None = None,
                  start: np.ndarray | None = None, fixed: np.ndarray | None = None) -> np.ndarray:
    """Coefficients ``w >= 0`` minimising ``sum(s * log((x @ w + fixed) / y) ** 2)`` (Levenberg-Marquardt).

    Solved for ``theta = log w`` (so ``w`` stays positive), starting from ``start``
    or the relative least-squares solution; ``s`` is ``sample_weight`` (default 1);
    ``fixed`` (default 0) is a known part of each cost.  Columns that are zero
    everywhere get 0.
    """
    fixed = np.zeros(len(y)) if fixed is None else np.asarray(fixed, dtype=float)
    used = x.max(axis=0) > 0
    if not used.any():
        return np.zeros(x.shape[1])
    scale = x[:, used].max(axis=0)
    xs = x[:, used] / scale
    rest = np.maximum(y - fixed, 1e-3 * y)  # what the fitted columns must explain
    init = nonneg_relative_lstsq(xs, rest) if start is None else start[used] * scale
    theta = np.log(np.maximum(init, 1e-6 * np.median(y)))
    ly = np.log(y)
    s = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    rs = np.sqrt(s)

    def loss(t):
        if np.max(t) > 700:  # exp would overflow: not a step worth taking
            return np.inf
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = float(np.sum(s * (np.log(xs @ np.exp(t) + fixed) - ly) ** 2))
        return value if np.isfinite(value) else np.inf

    lam, cur = 1e-3, loss(theta)
    for _ in range(iters):
        c = np.exp(theta)
        pred = xs @ c + fixed
        jac = xs * c / pred[:, None] * rs[:, None]
        a, g = jac.T @ jac, jac.T @ ((np.log(pred) - ly) * rs)
        damping = np.diag(np.diag(a)) + 1e-12 * np.eye(len(theta))
        while lam < 1e10:
            step = np.linalg.solve(a + lam * damping, -g)
            new = loss(theta + step)
            if new < cur:
                theta, cur, lam = theta + step, new, lam / 3
                break
            lam *= 4
        else:
            break  # no step improves: converged
        if np.max(np.abs(step)) < 1e-7:
            break
    w = np.zeros(x.shape[1])
    w[used] = np.exp(theta) / scale
    return w


def robust_log_fit(x: np.ndarray, y: np.ndarray, huber: float = HUBER, rounds: int = 20,
                   fixed: np.ndarray | None = None) -> np.ndarray:
    """:func:`log_space_fit` with Huber weights on the log residuals (iteratively reweighted).

    Stops early once a round returns exactly the coefficients it started from: every
    later round would start from the same weights and return them again (the fit is
    deterministic), so the result is the one all ``rounds`` give."""
    fixed = np.zeros(len(y)) if fixed is None else fixed
    w = log_space_fit(x, y, fixed=fixed)
    for _ in range(rounds):
        r = np.abs(np.log(np.maximum(x @ w + fixed, 1e-300) / y))
        new = log_space_fit(x, y, sample_weight=huber / np.maximum(r, huber), start=w, fixed=fixed)
        if np.array_equal(new, w):
            break
        w = new
    return w


def _with_anchors(fit: Fit, data: list[tuple[str, KernelFeatures, float]]) -> Fit:
    """``fit`` plus its training kernels' positions and log residuals."""
    anchors = tuple((*_position(f), float(np.log(max(c, 1e-12) / fit.base(f)))) for _, f, c in data)
    return replace(fit, anchors=anchors, neighbours=_useful_neighbours(anchors))


def _own_coef(x: np.ndarray, y: np.ndarray, prior: Fit | None) -> tuple[float, ...]:
    """Coefficients fitted to ``x, y``; with a ``prior``, a column fewer than
    :data:`MIN_POINTS` rows exercise keeps the prior's coefficient."""
    if prior is None:
        return tuple(float(v) for v in robust_log_fit(x, y))
    free = (x > 0).sum(axis=0) >= MIN_SUPPORT
    kept = np.where(free, 0.0, np.asarray(prior.coef))
    coef = robust_log_fit(x * free, y, fixed=x @ kept)
    return tuple(float(v) for v in np.where(free, coef, kept))


def fit_form(form: str, scope: str, data: list[tuple[str, KernelFeatures, float]],
             prior: Fit | None = None, floor: float = 0.0, device: DeviceFacts = DeviceFacts(),
             strided: bool = False) -> Fit:
    """Fit ``form`` to ``data``, blended with ``prior`` if given (see the module docstring)."""
    x = np.array([FORMS[form](f, device, strided) for _, f, _ in data], dtype=float)
    y = np.maximum(np.array([c for _, _, c in data], dtype=float), 1e-12)
    coef = _own_coef(x, y, prior)
    weight = len(data) / (len(data) + SHRINK) if prior is not None else 1.0
    fit = Fit(form, scope, coef, len(data), device, prior=prior, weight=weight, floor=floor, strided=strided)
    return _with_anchors(fit, data)


def column_reach(form: str, data: list[tuple[str, KernelFeatures, float]], device: DeviceFacts = DeviceFacts(),
                 strided: bool = False) -> tuple[float, ...]:
    """Per design column of ``form``, the largest value among ``data``'s kernels (:attr:`Fit.reach`)."""
    x = np.array([FORMS[form](f, device, strided) for _, f, _ in data], dtype=float)
    return tuple(float(v) for v in x.max(axis=0))


def shifted(pooled: Fit, own: list[tuple[str, KernelFeatures, float]]) -> Fit:
    """The pooled fit moved by ``own``'s median log residual, shrunk by ``n / (n + SHRINK)``."""
    if not own:
        return pooled
    res = np.median([np.log(max(c, 1e-12) / pooled.base(f)) for _, f, c in own])
    return replace(pooled, offset=pooled.offset + float(res) * len(own) / (len(own) + SHRINK))


class Predictor:
    """Fits for one device of a profile: per (op class, schedule rule, access
    pattern), per (op class, rule), per op class where there is data, else pooled
    (see the module docstring).

    Fits are made on first use, so asking about one class fits only that class.
    """

    def __init__(self, profile: Profile, device: str, form: str = DEFAULT_FORM,
                 exclude: frozenset[str] = frozenset()):
        self.data = [d for d in samples(profile, device) if d[0] not in exclude]
        if len(self.data) < 2:
            where = profile.path or "the profile"
            raise ProfileError(f"{where} has {len(self.data)} measured kernels on {device}; too few to predict "
                               f"others -- measure the model with `partition profile MODEL`")
        self.device = device
        self.facts = DeviceFacts.of(profile, device)
        self.form = form
        self.floor = profile.overheads[device].launch_s
        self.rules = rules(profile, device)
        self.accesses = accesses(profile, device)
        self._fits: dict[str, Fit] = {}

    def pooled(self) -> Fit:
        """The device's fit over all classes."""
        if POOLED not in self._fits:
            self._fits[POOLED] = fit_form(self.form, POOLED, self.data, floor=self.floor, device=self.facts)
        return self._fits[POOLED]

    def fit_for(self, op_class: str, rule: str = "", access: str = "", features: KernelFeatures | None = None) -> Fit:
        """The fit for kernels of ``op_class`` scheduled by ``rule`` with access
        pattern ``access`` (``""``: any).

        Without either: the class's own fit (shrunk to the pooled one) if it has
        :data:`MIN_POINTS` kernels, else the pooled fit shifted by the class's few
        kernels.  Each one given takes the same step again one level down
        (:meth:`_sub_fit`): first the rule, then the access pattern.  With
        ``features``: the finest of those fits that reaches them (:meth:`Fit.reaches`),
        the pooled fit where none does.
        """
        if op_class not in self._fits:
            own = [d for d in self.data if d[1].op_class == op_class]
            self._fits[op_class] = self._refined(op_class, own, self.pooled())
        key, members = op_class, [d for d in self.data if d[1].op_class == op_class]
        chain = [self.pooled(), self._fits[key]]
        for sep, known, value in (("/", self.rules, rule), ("@", self.accesses, access)):
            if value:  # unknown: no refinement at this level (a profile older than the field)
                key, members = self._sub_fit(key, members, f"{key}{sep}{value}",
                                             [d for d in members if known.get(d[0], "") == value])
                chain.append(self._fits[key])
        if features is None:
            return chain[-1]
        return next(fit for fit in reversed(chain) if fit is chain[0] or fit.reaches(features))

    def _sub_fit(self, parent: str, members: list, key: str, own: list) -> tuple[str, list]:
        """Make the fit ``key`` of ``own`` (a subset of ``parent``'s ``members``), its
        prior the fit ``parent``; it is that fit itself when ``own`` is all of
        ``members`` (nothing to refine).  Returns ``(key, own)``."""
        if key not in self._fits:
            parent_fit = self._fits[parent]
            self._fits[key] = parent_fit if len(own) == len(members) else self._refined(key, own, parent_fit)
        return key, own

    def _refined(self, scope: str, own: list[tuple[str, KernelFeatures, float]], parent: Fit) -> Fit:
        """A fit of ``own`` shrunk towards ``parent`` with :data:`MIN_POINTS` kernels
        or more, else ``parent`` shifted by their shrunk median residual."""
        strided = scope.endswith("@" + STRIDED)
        if len(own) >= MIN_POINTS:
            fit = fit_form(self.form, scope, own, prior=replace(parent, anchors=()), floor=self.floor,
                           device=self.facts, strided=strided)
        else:
            fit = shifted(parent, own)
        return replace(fit, reach=column_reach(self.form, own, self.facts, strided)) if own else fit

    def predict(self, f: KernelFeatures, rule: str = "", access: str = "") -> float:
        """Predicted cost in seconds of a kernel with features ``f`` built by ``rule``
        that reads its inputs as ``access`` says."""
        return self.fit_for(f.op_class, rule, access, features=f).predict(f)


# --- held-out accuracy ----------------------------------------------------------------------
HELD_OUT = ("shape", "model")
UNLISTED = "(no model)"


@dataclass(frozen=True)
class EvalRow:
    """Held-out accuracy for one (device, op class): relative errors |pred - meas| / meas."""

    device: str
    op_class: str
    n: int
    median_rel_err: float
    p90_rel_err: float
    fit_scope: str


def model_groups(profile: Profile, device: str) -> dict[str, frozenset[str]]:
    """Signatures measured on ``device`` per zoo model (``resnet50`` and
    ``resnet50:batch=8`` are one model); kernels no listed model has form one group."""
    measured = {s for s, _, _ in samples(profile, device)}
    groups: dict[str, set[str]] = {}
    for model, sigs in profile.models.items():
        groups.setdefault(model.split(":")[0], set()).update(measured.intersection(sigs))
    listed = set().union(*groups.values()) if groups else set()
    groups[UNLISTED] = measured - listed
    return {m: frozenset(s) for m, s in sorted(groups.items()) if s}


def held_out_predictions(profile: Profile, device: str, form: str = DEFAULT_FORM, by: str = "shape"):
    """Each measured kernel predicted by a fit that never saw it.

    ``by="shape"``: the fit leaves out that one signature (every measurement of it);
    ``by="model"``: it leaves out every kernel of the kernel's model (all batch
    sizes), so the model's shapes are all new to it -- a kernel two models share is
    predicted once for each.  Returns ``[(signature, features, measured, predicted)]``.
    """
    if by not in HELD_OUT:
        raise ValueError(f"by must be one of {HELD_OUT}, not {by!r}")
    data = samples(profile, device)
    # rule and access pattern are known for a held-out kernel too: they need only its PrimFunc
    rule, access = rules(profile, device), accesses(profile, device)
    if by == "shape":
        return [(s, f, m, Predictor(profile, device, form, exclude=frozenset({s})).predict(f, rule[s], access[s]))
                for s, f, m in data]
    out = []
    for sigs in model_groups(profile, device).values():
        pred = Predictor(profile, device, form, exclude=sigs)
        out.extend((s, f, m, pred.predict(f, rule[s], access[s])) for s, f, m in data if s in sigs)
    return out


def evaluate(profile: Profile, form: str = DEFAULT_FORM, by: str = "shape") -> list[EvalRow]:
    """Held-out accuracy (see :func:`held_out_predictions`) per device and op class,
    plus an ``all`` row per device."""
    rows = []
    for device in profile.devices:
        preds = held_out_predictions(profile, device, form, by)
        if not preds:
            continue
        full = Predictor(profile, device, form)
        groups: dict[str, list] = {}
        for p in preds:
            groups.setdefault(p[1].op_class, []).append(p)
        for cls in sorted(groups) + ["all"]:
            g = preds if cls == "all" else groups[cls]
            err = np.array([abs(pr - m) / max(m, 1e-12) for _, _, m, pr in g])
            scope = "-" if cls == "all" else full.fit_for(cls).scope
            rows.append(EvalRow(device, cls, len(g), float(np.median(err)), float(np.percentile(err, 90)), scope))
    return rows


def render_eval(rows: list[EvalRow]) -> str:
    """A text table of :func:`evaluate` rows ("pooled": the class has too few kernels of its own)."""
    lines = [f"{'device':<7} {'op class':<10} {'n':>4} {'median err':>11} {'p90 err':>9}  fit"]
    for r in rows:
        fit = {"-": "", POOLED: "pooled"}.get(r.fit_scope, "per class")
        lines.append(f"{r.device:<7} {r.op_class:<10} {r.n:>4} {r.median_rel_err:>10.1%} {r.p90_rel_err:>9.1%}  {fit}")
    return "\n".join(lines)
