"""Predict the cost of kernels never measured, from the ones that were.

In: a :class:`Profile` (each record stores the kernel's features next to its
timing, so no model needs re-importing).  Out: per device and op class, a fitted
:class:`Fit`; :func:`evaluate` reports its held-out accuracy.

The quantity predicted is the one the partitioner uses: a kernel's cost inside a
partition (:meth:`KernelRecord.cost`).  Two steps:

1. a *form* from the small registry :data:`FORMS` (add one with
   :func:`register_form`) maps features to design columns whose non-negative
   coefficients are fitted in log space (so every kernel's relative error counts
   alike, 1 us or 100 ms).  ``roofline`` is ``cost = c + flops / P + bytes / B``:
   a fixed cost plus the compute and memory terms of a roofline, added instead of
   maxed so the fit stays smooth; the default, ``roofline_params``, prices weight
   bytes apart from activation bytes.  The fit is robust (Huber weights on the log
   residuals, :data:`HUBER`), so a few noisy timings do not drag the rest;
2. a correction by the residuals of the :data:`NEIGHBOURS` most similar measured
   kernels of the class (nearest in log FLOPs and log bytes): kernels of similar
   shape miss the roofline by similar factors (how well their schedule fits).

A class's own fit is shrunk towards the device's pooled fit over all classes (in
log space, weight ``n / (n + SHRINK)``).  A class with fewer than :data:`MIN_POINTS`
measured kernels uses the pooled fit, moved by its kernels' shrunk median residual
when it has any.  No prediction is below the device's per-launch overhead, which
every measured cost contains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..errors import ProfileError
from .profile_db import KernelFeatures, Profile
from .transfer_model import nonneg_relative_lstsq

MIN_POINTS = 4
NEIGHBOURS = 3
HUBER = 0.5  # log residual (a factor ~1.65) beyond which a kernel's weight in the fit shrinks
SHRINK = 4.0  # pseudo-count of the pooled fit when blending it with a class's own
POOLED = "*"

FORMS: dict[str, Callable[[KernelFeatures], list[float]]] = {}


def register_form(name: str):
    """Register ``columns(features) -> list[float]`` (design row, coefficients >= 0)."""

    def deco(fn):
        FORMS[name] = fn
        return fn

    return deco


@register_form("roofline")
def _roofline(f: KernelFeatures) -> list[float]:
    return [1.0, float(f.flops), float(f.bytes)]


@register_form("roofline_params")
def _roofline_params(f: KernelFeatures) -> list[float]:
    # Weights may be laid out (packed) differently from activations; a separate
    # term lets the fit price them apart.
    return [1.0, float(f.flops), float(f.bytes - f.param_bytes), float(_weight_traffic(f))]


def _weight_traffic(f: KernelFeatures) -> int:
    """Weight bytes actually read: a gather reads only the table rows it outputs."""
    return min(f.param_bytes, f.bytes_written) if f.op_class == "gather" else f.param_bytes


DEFAULT_FORM = "roofline_params"


def _position(f: KernelFeatures) -> np.ndarray:
    """Where a kernel sits for the neighbour search: log FLOPs, log bytes."""
    return np.array([np.log1p(f.flops), np.log1p(f.bytes)])


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
    anchors: tuple[tuple[float, float, float], ...] = ()
    prior: "Fit | None" = None
    weight: float = 1.0
    offset: float = 0.0
    floor: float = 0.0

    def base(self, f: KernelFeatures) -> float:
        own = np.log(max(float(np.dot(FORMS[self.form](f), self.coef)), 1e-12))
        if self.prior is not None:
            own = self.weight * own + (1.0 - self.weight) * np.log(self.prior.base(f))
        return float(np.exp(own + self.offset))

    def predict(self, f: KernelFeatures, neighbours: int | None = None) -> float:
        neighbours = NEIGHBOURS if neighbours is None else neighbours
        if not self.anchors or neighbours <= 0:
            return max(self.base(f), self.floor)
        a = np.array(self.anchors)
        dist = np.linalg.norm(a[:, :2] - _position(f), axis=1)
        near = np.argsort(dist)[:neighbours]
        weight = 1.0 / (dist[near] + 0.5)  # closer kernels count more; 0.5 = a factor ~1.6 apart
        return max(self.base(f) * float(np.exp(np.dot(weight, a[near, 2]) / weight.sum())), self.floor)


def samples(profile: Profile, device: str) -> list[tuple[str, KernelFeatures, float]]:
    """``(signature, features, measured cost)`` of every successfully measured kernel on ``device``."""
    oh = profile.overheads.get(device)
    if oh is None:
        return []
    return [(s, r.features, r.cost(oh)) for s, r in sorted(profile.kernels.get(device, {}).items()) if r.ok]


def log_space_fit(x: np.ndarray, y: np.ndarray, iters: int = 100, sample_weight: np.ndarray | None = None,
                  start: np.ndarray | None = None) -> np.ndarray:
    """Coefficients ``w >= 0`` minimising ``sum(s * log(x @ w / y) ** 2)`` (Levenberg-Marquardt).

    Solved for ``theta = log w`` (so ``w`` stays positive), starting from ``start``
    or the relative least-squares solution; ``s`` is ``sample_weight`` (default 1).
    Columns that are zero everywhere get 0.
    """
    used = x.max(axis=0) > 0
    scale = x[:, used].max(axis=0)
    xs = x[:, used] / scale
    init = nonneg_relative_lstsq(xs, y) if start is None else start[used] * scale
    theta = np.log(np.maximum(init, 1e-6 * np.median(y)))
    ly = np.log(y)
    s = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    rs = np.sqrt(s)

    def loss(t):
        if np.max(t) > 700:  # exp would overflow: not a step worth taking
            return np.inf
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = float(np.sum(s * (np.log(xs @ np.exp(t)) - ly) ** 2))
        return value if np.isfinite(value) else np.inf

    lam, cur = 1e-3, loss(theta)
    for _ in range(iters):
        c = np.exp(theta)
        pred = xs @ c
        jac = xs * c / pred[:, None] * rs[:, None]
        a, g = jac.T @ jac, jac.T @ ((np.log(pred) - ly) * rs)
        while lam < 1e10:
            step = np.linalg.solve(a + lam * (np.diag(np.diag(a)) + 1e-12 * np.eye(len(theta))), -g)
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


def robust_log_fit(x: np.ndarray, y: np.ndarray, huber: float = HUBER, rounds: int = 20) -> np.ndarray:
    """:func:`log_space_fit` with Huber weights on the log residuals (iteratively reweighted)."""
    w = log_space_fit(x, y)
    for _ in range(rounds):
        r = np.abs(np.log(np.maximum(x @ w, 1e-300) / y))
        w = log_space_fit(x, y, sample_weight=huber / np.maximum(r, huber), start=w)
    return w


def _with_anchors(fit: Fit, data: list[tuple[str, KernelFeatures, float]]) -> Fit:
    """``fit`` plus its training kernels' positions and log residuals."""
    anchors = tuple((*_position(f), float(np.log(max(c, 1e-12) / fit.base(f)))) for _, f, c in data)
    return replace(fit, anchors=anchors)


def fit_form(form: str, scope: str, data: list[tuple[str, KernelFeatures, float]],
             prior: Fit | None = None, floor: float = 0.0) -> Fit:
    """Fit ``form`` to ``data``, blended with ``prior`` if given (see the module docstring)."""
    x = np.array([FORMS[form](f) for _, f, _ in data], dtype=float)
    y = np.maximum(np.array([c for _, _, c in data], dtype=float), 1e-12)
    coef = tuple(float(v) for v in robust_log_fit(x, y))
    weight = len(data) / (len(data) + SHRINK) if prior is not None else 1.0
    return _with_anchors(Fit(form, scope, coef, len(data), prior=prior, weight=weight, floor=floor), data)


def shifted(pooled: Fit, own: list[tuple[str, KernelFeatures, float]]) -> Fit:
    """The pooled fit moved by ``own``'s median log residual, shrunk by ``n / (n + SHRINK)``."""
    if not own:
        return pooled
    res = np.median([np.log(max(c, 1e-12) / pooled.base(f)) for _, f, c in own])
    return replace(pooled, offset=pooled.offset + float(res) * len(own) / (len(own) + SHRINK))


class Predictor:
    """Fits for one device of a profile: per op class where there is data, else pooled.

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
        self.form = form
        self.floor = profile.overheads[device].launch_s
        self._fits: dict[str, Fit] = {}

    def pooled(self) -> Fit:
        """The device's fit over all classes."""
        if POOLED not in self._fits:
            self._fits[POOLED] = fit_form(self.form, POOLED, self.data, floor=self.floor)
        return self._fits[POOLED]

    def fit_for(self, op_class: str) -> Fit:
        """The class's own fit (shrunk to the pooled one) if it has :data:`MIN_POINTS`
        kernels, else the pooled fit shifted by the class's few kernels."""
        if op_class not in self._fits:
            own = [d for d in self.data if d[1].op_class == op_class]
            if len(own) >= MIN_POINTS:
                prior = replace(self.pooled(), anchors=())
                self._fits[op_class] = fit_form(self.form, op_class, own, prior=prior, floor=self.floor)
            else:
                self._fits[op_class] = shifted(self.pooled(), own)
        return self._fits[op_class]

    def predict(self, f: KernelFeatures) -> float:
        """Predicted cost in seconds."""
        return self.fit_for(f.op_class).predict(f)


@dataclass(frozen=True)
class EvalRow:
    """Held-out accuracy for one (device, op class): relative errors |pred - meas| / meas."""

    device: str
    op_class: str
    n: int
    median_rel_err: float
    p90_rel_err: float
    fit_scope: str


def held_out_predictions(profile: Profile, device: str, form: str = DEFAULT_FORM):
    """Leave-shapes-out: each measured signature predicted by a fit without it.

    Returns ``[(signature, features, measured, predicted)]``.
    """
    out = []
    for sig, feats, measured in samples(profile, device):
        pred = Predictor(profile, device, form, exclude=frozenset({sig})).predict(feats)
        out.append((sig, feats, measured, pred))
    return out


def evaluate(profile: Profile, form: str = DEFAULT_FORM) -> list[EvalRow]:
    """Held-out accuracy per device and op class, plus an ``all`` row per device."""
    rows = []
    for device in profile.devices:
        preds = held_out_predictions(profile, device, form)
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
