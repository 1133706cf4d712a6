"""A placement's choice for one kernel: a device, or :data:`STREAM`.

A *placement* maps each kernel to one of the devices (:data:`hetpart.targets.DEVICES`)
or to :data:`STREAM`: on CUDA, with the kernel's weights streamed from pinned host
memory (:mod:`.streaming`).  :func:`device_of` is the one mapping from a choice to the
device that runs it, shared by the problem (:func:`.problem.split`) and the
same-device groups (:mod:`.same_device`), which cannot import each other both ways.
"""

from __future__ import annotations

from ..targets import DEVICES

STREAM = "stream"
"""A placement's value for a kernel run on CUDA with its weights streamed."""


def device_of(choice: str) -> str:
    """The device a placement's choice runs on: the choice itself, or CUDA for :data:`STREAM`."""
    return "cuda" if choice == STREAM else choice
