"""A placement's choice for one kernel: a device, :data:`STREAM` or :data:`MAPPED`.

A *placement* maps each kernel to one of the devices (:data:`hetpart.targets.DEVICES`),
to :data:`STREAM`: on CUDA, with the kernel's weights streamed from pinned host
memory (:mod:`.streaming`), or to :data:`MAPPED`: on CUDA, with its weights left in
pinned host memory and read by the kernel through their mapped device pointer (offered
only under :data:`.streaming.MAPPED_WEIGHTS`).  :func:`device_of` is the one mapping from a choice to the
device that runs it, shared by the problem (:func:`.problem.split`) and the
same-device groups (:mod:`.same_device`), which cannot import each other both ways.
"""

from __future__ import annotations

from ..targets import DEVICES

STREAM = "stream"
"""A placement's value for a kernel run on CUDA with its weights streamed."""


MAPPED = "mapped"
"""A placement's value for a kernel run on CUDA whose weights stay in pinned host memory,
read over PCIe through their mapped device pointer on every call (zero copy: no ring slot,
no copy; each byte the call reads crosses once, a gather's chosen rows only)."""


def device_of(choice: str) -> str:
    """The device a placement's choice runs on: the choice itself, or CUDA for :data:`STREAM`
    and :data:`MAPPED`."""
    return "cuda" if choice == STREAM or choice == MAPPED else choice
