"""How many bytes of weights this machine's CPU can keep cached from one run to the next.

In: the kernel's cache description in sysfs (``/sys/devices/system/cpu/cpu*/cache/index*/``:
``level``, ``type``, ``size``, ``shared_cpu_list``).  Out: :func:`last_level_cache_bytes`,
the total size of the last-level cache instances serving the machine's CPUs, or None
where sysfs does not say (another OS, a container that hides it).

Read once, when a profile is measured (:func:`hetpart.costmodel.profiler.ensure_overheads`),
and stored in the profile (``Profile.cpu_llc_bytes``): it is a fact about the machine the
timings were taken on, like the GPU's memory, never read while pricing a plan.

Invariant: every instance is counted once (CPUs sharing a cache list the same
``shared_cpu_list``): a 2-core VM with one 32 MiB L3 gives 32 MiB; a host with 8 CCDs of
32 MiB each gives 256 MiB (a run on all cores spreads each weight's slices over them all).
Over all online CPUs, not the affinity mask: TVM pins the calling thread once a parallel
kernel has run (the fingerprint counts cores the same way, :mod:`.fingerprint`).
"""

from __future__ import annotations

from pathlib import Path

SYSFS_CPUS = Path("/sys/devices/system/cpu")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int | None:
    """sysfs cache size (``"32768K"``, ``"1M"``, ``"512"``) in bytes; None if it is not one."""
    text = text.strip().upper()
    scale = _UNITS.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _UNITS else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _caches(root: Path) -> list[tuple[int, str, int]]:
    """``(level, shared_cpu_list, bytes)`` of every data or unified cache of every CPU under ``root``."""
    out = []
    for index in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
        level, kind, size = _read(index / "level"), _read(index / "type"), _read(index / "size")
        shared = _read(index / "shared_cpu_list") or str(index.parent.parent.name)
        nbytes = parse_size(size) if size else None
        if level and level.isdigit() and kind in ("Unified", "Data") and nbytes:
            out.append((int(level), shared, nbytes))
    return out


def last_level_cache_bytes(root: Path = SYSFS_CPUS) -> int | None:
    """Bytes of the highest-level CPU cache, summed over its distinct instances
    (module docstring); None when ``root`` describes no cache."""
    caches = _caches(root)
    if not caches:
        return None
    top = max(level for level, _, _ in caches)
    instances = {shared: nbytes for level, shared, nbytes in caches if level == top}
    return sum(instances.values())
