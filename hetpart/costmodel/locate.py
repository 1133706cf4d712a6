"""Where profiles live, and which one a plan uses.

* This machine's own profile: ``$XDG_CACHE_HOME/hetpart/profiles/<fingerprint key>.json``
  (``~/.cache/hetpart/...`` when XDG_CACHE_HOME is unset) -- :func:`default_profile_path`.
* Recorded profiles shipped with hetpart: ``hetpart/costmodel/recorded/*.json``,
  measured on a real CPU + GPU machine, for machines that cannot measure a GPU.

:func:`resolve_profile` picks one, in this order: an explicit path or Profile >
``$HETPART_PROFILE`` > this machine's profile, if it exists *and this machine has a
GPU* > the recorded profile matching this machine, else the newest recorded one.

Why skip a GPU-less machine's own profile: it can only hold CPU timings, and a plan
compares CPU and CUDA costs; mixing this machine's CPU with another machine's GPU
would compare numbers from two machines.  Both devices then come from one recorded
machine, and :attr:`Profile.origin` says it was NOT measured here.  A GPU-less
machine's own profile named explicitly (``--profile``, ``$HETPART_PROFILE``) is used
for the CPU, with the recorded machine's CUDA (:func:`with_recorded_gpu`; its
origin says so); planning applies it, not :func:`resolve_profile`, so a profile file
is still shown as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ProfileError, option
from .fingerprint import this_machine
from .profile_db import Profile

ENV_PROFILE = "HETPART_PROFILE"
RECORDED_DIR = Path(__file__).with_name("recorded")


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hetpart`` or ``~/.cache/hetpart``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hetpart"


def default_profile_path() -> Path:
    """This machine's profile file (it need not exist yet)."""
    return cache_dir() / "profiles" / f"{this_machine().key()}.json"


def recorded_profiles() -> list[Path]:
    """The recorded profiles shipped with hetpart, sorted by file name."""
    return sorted(RECORDED_DIR.glob("*.json"))


def pick_recorded(paths: list[Path] | None = None) -> Profile | None:
    """The recorded profile of this machine if one matches, else the newest (by ``created``)."""
    profiles = [Profile.load(p) for p in (recorded_profiles() if paths is None else paths)]
    if not profiles:
        return None
    mine = this_machine()
    for prof in profiles:
        if prof.fingerprint == mine:
            return prof
    return max(profiles, key=lambda p: p.created)


def resolve_profile(path: str | os.PathLike | Profile | None = None) -> Profile:
    """The profile a plan should use (see the module docstring for the order).

    Raises :class:`ProfileError` when an explicitly named file is missing or invalid,
    or when no profile exists at all.
    """
    if isinstance(path, Profile):
        return path
    if path is not None:
        return Profile.load(path)
    if os.environ.get(ENV_PROFILE):
        return Profile.load(os.environ[ENV_PROFILE])
    local = default_profile_path()
    if local.exists() and this_machine().has_gpu:
        prof = Profile.load(local)
        if prof.fingerprint == this_machine():
            return prof
    recorded = pick_recorded()
    if recorded is not None:
        return recorded
    hint = ("measure this machine with `partition profile MODEL`" if this_machine().has_gpu else
            f"this machine has no CUDA GPU, and hetpart ships no recorded profile; pass {option('profile', 'PATH')} "
            "to a profile measured on a machine with a GPU")
    raise ProfileError(f"no cost-model profile found; {hint}")


def with_recorded_gpu(prof: Profile) -> Profile:
    """``prof`` itself, or -- when it was measured on a machine without a GPU, so it
    holds CPU timings only -- a profile combining its CPU with the CUDA device,
    transfers and GPU memory of the recorded profile (:func:`pick_recorded`).

    Its ``origin`` says plainly that the numbers come from two machines; it has no
    ``path``, so it cannot be saved over either file.  Raises :class:`ProfileError`
    saying what to do when there is no recorded GPU to combine with.
    """
    if "cuda" in prof.overheads or prof.fingerprint.has_gpu:
        return prof
    recorded = pick_recorded()
    if recorded is None or "cuda" not in recorded.overheads:
        raise ProfileError(f"{prof.path} holds CPU measurements only (measured on a machine without a GPU) and "
                           "hetpart ships no recorded GPU to combine them with; plan with a profile measured on "
                           "a machine with a CUDA GPU (`partition profile MODEL` there), or omit --profile")
    gpu = {d: recs for d, recs in recorded.kernels.items() if d not in prof.kernels}
    both = Profile(prof.fingerprint, kernels={**prof.kernels, **gpu},
                   overheads={**recorded.overheads, **prof.overheads}, transfers=recorded.transfers,
                   targets={**recorded.targets, **prof.targets}, settings=dict(prof.settings),
                   models=dict(prof.models), created=prof.created, updated=prof.updated,
                   gpu_memory_bytes=recorded.gpu_memory_bytes, cpu_llc_bytes=prof.cpu_llc_bytes)
    both.origin = (f"{prof.path} for the CPU (measured on {prof.fingerprint.describe()}) + the recorded "
                   f"{recorded.path.name} for CUDA and transfers ({recorded.fingerprint.gpu_name}): two machines' "
                   "numbers; for an exact plan, profile a machine with both devices")
    return both
