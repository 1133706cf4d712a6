"""The transfer model: what copying ``n`` bytes between host and GPU costs.

Raw points (size, seconds) are measured per *direction* (``h2d``, ``d2h``) and
*kind* of host memory (``pinned``, ``pageable``); each (direction, kind) is fitted
to ``seconds = latency + bytes / bandwidth``.  The raw points stay in the profile
so a fit can be redone or plotted.

The fit minimises *relative* squared error (each row divided by its measured
time), so the 4 KiB points, where latency dominates, weigh as much as the
256 MiB ones, where bandwidth does.  Latency and 1/bandwidth are kept
non-negative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np

DIRECTIONS = ("h2d", "d2h")
KINDS = ("pinned", "pageable")


@dataclass(frozen=True)
class TransferPoint:
    """One measured size: median, min and max seconds over ``count`` copies."""

    direction: str
    kind: str
    nbytes: int
    median_s: float
    min_s: float
    max_s: float
    count: int


@dataclass(frozen=True)
class TransferFit:
    """``seconds(n) = latency_s + n / bandwidth_Bps`` for one (direction, kind)."""

    direction: str
    kind: str
    latency_s: float
    bandwidth_Bps: float

    def seconds(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_Bps


@dataclass
class TransferModel:
    """All raw points and their fits, keyed ``"h2d/pinned"`` etc."""

    points: list[TransferPoint] = field(default_factory=list)
    fits: dict[str, TransferFit] = field(default_factory=dict)

    def fit(self, direction: str, kind: str = "pinned") -> TransferFit | None:
        return self.fits.get(f"{direction}/{kind}")

    def to_json(self) -> dict:
        return {"points": [asdict(p) for p in self.points], "fits": {k: asdict(f) for k, f in self.fits.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "TransferModel":
        return cls(
            points=[TransferPoint(**p) for p in data["points"]],
            fits={k: TransferFit(**f) for k, f in data["fits"].items()},
        )

    @classmethod
    def from_points(cls, points: list[TransferPoint]) -> "TransferModel":
        """Fit every (direction, kind) that has at least two distinct sizes."""
        fits = {}
        for d in DIRECTIONS:
            for k in KINDS:
                pts = [p for p in points if p.direction == d and p.kind == k]
                if len({p.nbytes for p in pts}) >= 2:
                    lat, bw = fit_latency_bandwidth([p.nbytes for p in pts], [p.median_s for p in pts])
                    fits[f"{d}/{k}"] = TransferFit(d, k, lat, bw)
        return cls(points=list(points), fits=fits)


def nonneg_relative_lstsq(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients ``w >= 0`` minimising ``sum(((features @ w - y) / y) ** 2)``.

    Exact for the few columns used here: every subset of columns is solved without
    bounds and the best solution with no negative coefficient wins.
    """
    a = features / y[:, None]
    b = np.ones_like(y)
    n = features.shape[1]
    best, best_err = np.zeros(n), float(np.sum(b**2))
    for size in range(1, n + 1):
        for cols in combinations(range(n), size):
            w_sub, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(w_sub < 0):
                continue
            w = np.zeros(n)
            w[list(cols)] = w_sub
            err = float(np.sum((a @ w - b) ** 2))
            if err < best_err:
                best, best_err = w, err
    return best


def fit_latency_bandwidth(nbytes, seconds) -> tuple[float, float]:
    """``(latency_s, bandwidth_Bps)`` of ``seconds ~ latency + nbytes / bandwidth``."""
    x = np.asarray(nbytes, dtype=float)
    y = np.asarray(seconds, dtype=float)
    lat, inv_bw = nonneg_relative_lstsq(np.stack([np.ones_like(x), x], axis=1), y)
    if inv_bw <= 0:  # only latency explains the points: bandwidth unmeasurably high
        inv_bw = 1e-15
    return float(lat), float(1.0 / inv_bw)
