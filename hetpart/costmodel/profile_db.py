"""The profile database: one JSON file per machine with everything measured on it.

In: measurements (from :mod:`.kernel_bench`, :mod:`.overhead_bench`,
:mod:`.transfer_bench`).  Out: a :class:`Profile` the :class:`~.CostModel` reads.

File layout (``"schema": "hetpart-profile"``, ``"version": 1``)::

    fingerprint   the machine (see :mod:`.fingerprint`)
    targets       device -> the TVM target the kernels were built for
    settings      how timings were taken (repeats, min_repeat_ms, CPU threads)
    overheads     device -> Overheads (per partition call, per kernel launch, ...)
    kernels       device -> kernel signature -> KernelRecord (features + timing +
                  the schedule rule the kernel was built with there + its
                  access pattern)
    models        model name -> the signatures of its kernels (what was profiled)
    transfers     raw copy timings and their latency/bandwidth fits
    gpu_memory_bytes  the CUDA GPU's total memory (null: no GPU measured); a plan's
                  default GPU memory cap
    cpu_llc_bytes the CPU's last-level cache, all instances (:mod:`.cpu_cache`; null:
                  not recorded); whether a model's CPU weights stay cached between
                  runs (:meth:`~.cost_model.CostModel.weights_stay_cached`)

Version 1 gained the per-record keys ``rule``, ``access`` and ``inputs``, the top-level
``gpu_memory_bytes`` and ``cpu_llc_bytes`` and the overheads' ``session_s``, ``wake_s``, ``weight_read_Bps``,
``contended_weight_read_Bps`` and ``contended_h2d_Bps``
without a version bump: they are additive (older hetpart ignores them; a record without
them loads with ``""``, "not recorded" -- for ``inputs``: timed on random values, as every
kernel was before :mod:`.data_inputs`; overheads without ``wake_s``,
``weight_read_Bps`` or the contended ones load with None, "not measured"; a file without
``cpu_llc_bytes`` with None, "not recorded"),
so files of either age load in both -- except that hetpart older than ``wake_s`` read
overheads with every key they hold (fixed here: :meth:`Overheads.from_json` ignores
unknown keys), so it calls a file with ``wake_s`` malformed.  The per-record key ``flash``
(:data:`.flash_cost.CHAIN`: a flash-marked ``values`` kernel timed as its whole substituted
attention chain, :mod:`.flash_cost`) is additive the same way, written only where set: such a
record's signature is its chain's (:func:`.flash_cost.chain_signature`, ``chain-<scores>-<softmax>-
<values>``), which only a hetpart that knows the key asks about (an older one would still fit its
predictor on it, as one more matmul).  Chain records first lived under the ``values`` kernel's own
signature, which a masked and an unmasked chain can share; such a record still loads, and nothing
reads it as a chain's price (that chain is predicted until profiled again): the key moved, the
version did not.

Invariants: a file is replaced only atomically (:func:`hetpart.contracts.jsonfile.atomic_write_text`),
under a lock, merged with what another process saved meanwhile (no measurement is
lost when two runs profile into one file); a file that is not a valid profile of
this schema and version, or holds a value the cost model cannot use (NaN, a
string for a time: :mod:`.profile_check`), is never overwritten -- loading it
raises :class:`ProfileError` naming it and the record -- and no such value is
ever written.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ProfileError
from ..contracts.jsonfile import atomic_write_text
from . import profile_check
from .fingerprint import Fingerprint, this_machine
from .transfer_model import TransferModel

SCHEMA = "hetpart-profile"
VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one measured function over ``count`` repeats.

    ``number`` is about how many calls each repeat averaged (time_evaluator grows it
    to fill ``min_repeat_ms``; estimated from ``min_s``, it says how stable the
    median is, nothing more).
    """

    median_s: float
    min_s: float
    max_s: float
    count: int
    number: int = 1


@dataclass(frozen=True)
class KernelFeatures:
    """What the predictor knows about a kernel without running it (from :class:`Kernel`)."""

    op_class: str
    ops: tuple[str, ...]
    func: str
    flops: int
    bytes_read: int
    bytes_written: int
    param_bytes: int

    @classmethod
    def of(cls, kernel) -> "KernelFeatures":
        return cls(kernel.op_class, tuple(kernel.ops), kernel.func, int(kernel.flops),
                   int(kernel.bytes_read), int(kernel.bytes_written), int(kernel.param_bytes))

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


@dataclass(frozen=True)
class KernelRecord:
    """One kernel signature on one device: its features and its raw timing.

    ``timing`` is the single-kernel VM call as measured (it still contains the fixed
    per-call cost, :attr:`Overheads.empty_s`; the :class:`CostModel` subtracts it).
    ``status`` is ``"ok"``; ``"failed"`` (it did not build or run on the device: it
    cannot be placed there; ``error`` says why); or ``"dynamic"`` (a data-dependent
    shape makes it unmeasurable alone: its cost is predicted).  Only ``"ok"`` has a
    ``timing``.  ``rule`` names the hetpart schedule rule that scheduled the kernel on
    this device (``hetpart.rule``, e.g. ``CpuMatmul``; ``"tuned"``), ``""`` where it
    was not recorded (older profiles) or no rule applies.  ``access`` is how the
    kernel's PrimFunc reads its inputs (:mod:`.access_pattern`: ``"contiguous"``,
    ``"strided"``), ``""`` where it was not recorded or cannot be told.  ``flash`` is
    :data:`.flash_cost.CHAIN` for a flash-marked ``values`` kernel whose timing is its whole
    substituted attention chain (narrowing kernels + the flash kernel; :mod:`.flash_cost`; its
    ``signature`` is the chain's, :func:`.flash_cost.chain_signature`), ``""`` for every other
    record: the predictor never fits on a chain record.
    """

    signature: str
    features: KernelFeatures
    status: str
    timing: Timing | None = None
    error: str = ""
    rule: str = ""
    access: str = ""
    inputs: str = ""
    flash: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def cost(self, overheads: "Overheads") -> float:
        """Seconds this kernel adds inside a partition: its own work (the timing minus
        the empty-call baseline, never negative) plus one kernel launch."""
        if self.timing is None:
            raise ValueError(f"kernel {self.signature} has no timing ({self.status})")
        return max(self.timing.median_s - overheads.empty_s, 0.0) + overheads.launch_s

    def to_json(self) -> dict:
        d = asdict(self.features)
        d.update(status=self.status, error=self.error, rule=self.rule, access=self.access,
                 **({"inputs": self.inputs} if self.inputs else {}),
                 **({"flash": self.flash} if self.flash else {}),
                 timing=asdict(self.timing) if self.timing else None)
        return d

    @classmethod
    def from_json(cls, signature: str, d: dict) -> "KernelRecord":
        feats = KernelFeatures(**{f.name: d[f.name] for f in fields(KernelFeatures)})
        feats = KernelFeatures(**{**asdict(feats), "ops": tuple(feats.ops)})
        timing = Timing(**d["timing"]) if d.get("timing") else None
        return cls(signature, feats, d["status"], timing, d.get("error", ""), str(d.get("rule", "")),
                   str(d.get("access", "")), str(d.get("inputs", "")), str(d.get("flash", "")))


@dataclass(frozen=True)
class Overheads:
    """Fixed costs on one device, in seconds (see :mod:`.overhead_bench`).

    ``call_s``: invoking a partition function, before its first kernel;
    ``launch_s``: each kernel inside it (GPU: one launch);
    ``empty_s``: a one-kernel VM call timed like the kernels (subtracted from them);
    ``switch_s``: handing control back to the host after a partition (host wall
    clock of call + device sync, beyond ``empty_s``);
    ``session_s``: what hetpart's runtime adds around each partition of a run beyond
    the above (handoff, waits, wake-ups; :mod:`hetpart.runtime.overhead`); 0 where
    it was not measured (profiles older than it);
    ``wake_s``: what a parallel CPU kernel costs more after the thread pool has idled
    long enough for its workers to sleep than back to back (every number above is
    measured hot; :mod:`.overhead_bench`); the cost model charges it to each CPU
    partition that starts after a partition on another device.  0.0 on a GPU; None
    where it was not measured (profiles older than it: the cost model then uses
    :data:`~.cost_model.DEFAULT_WAKE_S` and says so).
    ``weight_read_Bps`` (bytes per second; CPU): how fast the compiler's GEMV reads
    weights that no cache holds, a chain over more weight bytes than any last-level
    cache (:mod:`.weight_read_bench`; every kernel timing is hot, its weights cached).
    The cold-weight floor of a model bigger than the cache
    (:meth:`~.cost_model.CostModel.cold_weight_bandwidth`); None where not measured.
    ``contended_weight_read_Bps`` / ``contended_h2d_Bps`` (bytes per second; CPU): the
    same GEMV's weight reads while a pinned host-to-GPU copy loop runs, and that copy's
    rate meanwhile (:mod:`.contention_bench`): both read host memory.  The cost model
    slows CPU weight reads and streamed weight copies that overlap in time by them
    (:meth:`~.cost_model.CostModel.copy_contention`); None where not measured.
    """

    call_s: float
    launch_s: float
    empty_s: float
    switch_s: float
    session_s: float = 0.0
    wake_s: float | None = None
    weight_read_Bps: float | None = None
    contended_weight_read_Bps: float | None = None
    contended_h2d_Bps: float | None = None

    @classmethod
    def from_json(cls, d: dict) -> "Overheads":
        """From a file's ``overheads[device]``; keys this hetpart does not know (a newer
        hetpart's additions) are ignored, missing optional ones take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Profile:
    """Everything measured on one machine.  Plain data; see the module docstring.

    ``path`` is where it was loaded from or last saved; ``origin`` says in words where
    it came from (for the CLI: which profile, and whether measured here).
    """

    fingerprint: Fingerprint
    kernels: dict[str, dict[str, KernelRecord]] = field(default_factory=dict)
    overheads: dict[str, Overheads] = field(default_factory=dict)
    transfers: TransferModel | None = None
    targets: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    gpu_memory_bytes: int | None = None  # the CUDA GPU's memory where one was measured
    cpu_llc_bytes: int | None = None  # the CPU's last-level cache (all instances) where recorded
    path: Path | None = field(default=None, compare=False)
    origin: str = field(default="", compare=False)
    last_report: object = field(default=None, compare=False, repr=False)  # set by profile()
    _disk_stamp: tuple | None = field(default=None, compare=False, repr=False)  # file as last read/written

    # --- queries ----------------------------------------------------------------
    @property
    def devices(self) -> list[str]:
        """Devices with any kernel measured, in the order hetpart.targets lists them."""
        from ..targets import DEVICES

        return [d for d in DEVICES if self.kernels.get(d)] + sorted(set(self.kernels) - set(DEVICES))

    def set_session_overheads(self, per_partition: dict[str, float]) -> None:
        """Store what a Session costs per partition (seconds, by device, as measured by
        :func:`hetpart.runtime.overhead.session_overheads`) as ``session_s``: the part
        beyond the VM call and host switch already in each device's Overheads."""
        for device, seconds in per_partition.items():
            oh = self.overheads.get(device)
            if oh is None:
                raise ProfileError(f"{self.path or 'the profile'} has no overheads for {device}: "
                                   "profile a model on it first")
            self.overheads[device] = replace(oh, session_s=max(0.0, seconds - oh.call_s - oh.switch_s))

    def record(self, device: str, signature: str) -> KernelRecord | None:
        return self.kernels.get(device, {}).get(signature)

    def measured_here(self) -> bool:
        return self.fingerprint == this_machine()

    def describe(self) -> str:
        """``<path> (measured on this machine)`` or ``... (recorded on X, NOT measured here)``."""
        where = str(self.path) if self.path else "<in memory>"
        if self.measured_here():
            return f"{where} (measured on this machine)"
        return f"{where} (recorded on {self.fingerprint.describe()}, NOT measured here)"

    # --- updates ----------------------------------------------------------------
    def add_kernel(self, device: str, record: KernelRecord) -> None:
        self.kernels.setdefault(device, {})[record.signature] = record
        self.updated = now_iso()

    # --- files ------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "created": self.created,
            "updated": self.updated,
            "fingerprint": self.fingerprint.to_json(),
            "targets": dict(self.targets),
            "settings": dict(self.settings),
            "overheads": {d: asdict(o) for d, o in self.overheads.items()},
            "models": {m: list(s) for m, s in self.models.items()},
            "kernels": {d: {s: r.to_json() for s, r in sorted(recs.items())} for d, recs in self.kernels.items()},
            "transfers": self.transfers.to_json() if self.transfers else None,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "cpu_llc_bytes": self.cpu_llc_bytes,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Profile":
        return cls(
            fingerprint=Fingerprint.from_json(data["fingerprint"]),
            kernels={d: {s: KernelRecord.from_json(s, r) for s, r in recs.items()}
                     for d, recs in data["kernels"].items()},
            overheads={d: Overheads.from_json(o) for d, o in data["overheads"].items()},
            transfers=TransferModel.from_json(data["transfers"]) if data.get("transfers") else None,
            targets=dict(data.get("targets", {})),
            settings=dict(data.get("settings", {})),
            models={m: list(s) for m, s in data.get("models", {}).items()},
            created=data.get("created", ""),
            updated=data.get("updated", ""),
            gpu_memory_bytes=data.get("gpu_memory_bytes"),
            cpu_llc_bytes=data.get("cpu_llc_bytes"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        """Read a profile file.

        Raises :class:`ProfileError` naming ``path`` when it is missing, not JSON, of
        another schema or version, or malformed.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProfileError(f"no profile at {path}; measure one with `partition profile MODEL --profile {path}`") from None
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ProfileError(f"profile {path} is not a text file (a binary file?); pass the path of a "
                               "hetpart profile (JSON) with --profile or $HETPART_PROFILE") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile {path} is corrupt (not valid JSON: {exc.msg} at line {exc.lineno}); "
                               "delete it or pass another --profile; hetpart will not overwrite it") from None
        _check_header(path, data)
        try:
            prof = cls.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"profile {path} is malformed ({type(exc).__name__}: {exc}); "
                               "delete it or pass another --profile") from None
        found = profile_check.problems(prof)
        if found:
            raise ProfileError(f"profile {path} has unusable values: {profile_check.describe(found)}; "
                               "delete those records (they are measured again) or the file, "
                               "or pass another --profile") from None
        prof.path = path
        prof._disk_stamp = _stamp(path)
        prof.origin = prof.describe()
        return prof

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically to ``path`` (default: :attr:`path`) and return it.

        Refuses (:class:`ProfileError`) to replace a file that is not a profile of
        this schema, or a profile of another machine, unless that file is the one
        this profile was loaded from, and to write a value the cost model could not
        use (:mod:`.profile_check`: NaN, infinity, ...).  Several processes may save
        into one file (two ``partition profile`` runs): each save holds an exclusive
        lock on ``.<name>.lock`` beside it and first merges in what another process
        wrote since this one last read or wrote the file (:meth:`merge_missing`), so
        no measurement is lost.  Unreadable or unwritable paths are a ProfileError.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ProfileError("this profile has no file yet; pass a path to save() or --profile PATH")
        found = profile_check.problems(self)
        if found:
            raise ProfileError(f"will not write profile {target}: unusable values "
                               f"{profile_check.describe(found)} (a bug in what measured them?)")
        try:
            with _file_lock(target):
                self._merge_disk(target)
                atomic_write_text(target, json.dumps(self.to_json(), indent=1, sort_keys=False,
                                                     allow_nan=False) + "\n")
                self._disk_stamp = _stamp(target)
        except OSError as exc:
            raise ProfileError(f"cannot write profile {target}: {exc.strerror or exc}; pass a writable "
                               "path with --profile (its parent must be a directory)") from None
        self.path = target
        self.origin = self.describe()
        return target

    def _merge_disk(self, target: Path) -> None:
        """Under the lock: check the file at ``target`` may be replaced, and take in
        what it holds that this profile lacks, unless it is unchanged since this
        profile last read or wrote it."""
        if not target.exists():
            return
        mine = target == self.path
        if mine and _stamp(target) == self._disk_stamp:
            return
        other = Profile.load(target)  # raises on a corrupt or foreign-schema file
        if other.fingerprint != self.fingerprint:
            if not mine:
                raise ProfileError(f"{target} holds the profile of another machine "
                                   f"({other.fingerprint.describe()}); choose another path")
            return
        self.merge_missing(other)

    def merge_missing(self, other: "Profile") -> None:
        """Add what ``other`` (the same machine's profile) has and this one lacks:
        kernel records, overheads, models, targets, settings, transfers.  What this
        profile has wins (it is the newer measurement)."""
        for device, recs in other.kernels.items():
            mine = self.kernels.setdefault(device, {})
            for sig, rec in recs.items():
                mine.setdefault(sig, rec)
        for name in ("overheads", "targets", "settings", "models"):
            merged = dict(getattr(other, name))
            merged.update(getattr(self, name))
            setattr(self, name, merged)
        if self.transfers is None:
            self.transfers = other.transfers
        if self.gpu_memory_bytes is None:
            self.gpu_memory_bytes = other.gpu_memory_bytes
        if self.cpu_llc_bytes is None:
            self.cpu_llc_bytes = other.cpu_llc_bytes
        self.created = min(self.created, other.created) if other.created else self.created


def _stamp(path: Path) -> tuple | None:
    """What tells whether another process replaced ``path``: inode, size, mtime."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _file_lock(target: Path):
    """An exclusive advisory lock (``fcntl.flock``) on ``.<name>.lock`` beside ``target``.

    A lock file of its own, since saves replace ``target`` by renaming (a lock on the
    old inode would not exclude a writer of the new one).  Where ``fcntl`` does not
    exist (Windows) saves are unlocked.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(target.parent / f".{target.name}.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _check_header(path: Path, data) -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ProfileError(f"{path} is not a hetpart profile (schema {got!r}, expected {SCHEMA!r}); "
                           "pass the path of a profile, or delete the file")
    if data.get("version") != VERSION:
        raise ProfileError(f"profile {path} has version {data.get('version')!r}, this hetpart reads version "
                           f"{VERSION}; re-measure it with `partition profile` into a new file")
