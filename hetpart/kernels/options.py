"""KernelOptions: the code-generation choices a build makes beyond the target.

In: what the user asked for (TF32 on/off, split-K mode) and the GPU the code is for
(its SM count, read from the device or defaulted from ``--cuda-arch``).  Out: one
frozen, hashable value passed to :func:`hetpart.kernels.build` and on to the schedule
rules, recorded in the profile a cost model prices with and in the compiled
artifact's manifest -- so a profile measured with one setting is never silently used
to price builds made with another.

Only the CLI edge (:mod:`hetpart.cli`) reads the environment (``HETPART_TF32``,
``HETPART_SPLITK``) and turns it into a :class:`KernelOptions`; no stage below does.
The options change GPU code only; a CPU build is the same whatever they say.

Invariant: :data:`DEFAULT` builds exactly the code hetpart built before the options
existed (TF32 on, split-K for convolutions and matmuls, an H200's 132 SMs, no ``wgmma``
substitution while :data:`hetpart.kernels.wgmma_match.WGMMA_GEMM` is off).  An option added
later is recorded (:meth:`KernelOptions.to_json`) only where it differs from what builds
did before it existed, so files written with it at that value read back equal and
manifests / profiles of such builds stay the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import TargetError, option

SPLIT_K_MODES = ("off", "conv", "all")
"""``off``: never split K; ``conv``: convolutions only; ``all``: convolutions and matmuls."""

DEFAULT_SM_COUNT = 132
"""The H200's (and H100 SXM's) SM count: hetpart's reference GPU."""

SM_COUNT_BY_ARCH = {"sm_70": 80, "sm_75": 40, "sm_80": 108, "sm_86": 84, "sm_89": 142, "sm_90": 132}
"""Default SM counts when cross-compiling for an arch with no GPU to ask: one common
part per arch (V100, T4, A100, RTX A6000, L40S, H100/H200 SXM).  A default, not a
fact about the GPU that will run the code: where it differs, pass ``--sm-count``."""


def _wgmma_switch() -> bool:
    """:data:`hetpart.kernels.wgmma_match.WGMMA_GEMM` now (the default of ``wgmma``; imported
    here, not at the top: ``wgmma_match`` imports this module)."""
    from . import wgmma_match

    return bool(wgmma_match.WGMMA_GEMM)


UNRECORDED = {"wgmma": False}
"""Options added after files recorded options, and the value every build had before: a
file without the key was built with it (:meth:`KernelOptions.from_json`), and
:meth:`KernelOptions.to_json` leaves the key out at that value."""


@dataclass(frozen=True)
class KernelOptions:
    """Code-generation choices of one build (module docstring).

    ``tf32``: float32 contractions on TF32 tensor cores (sm_80+) -- False keeps full
    float32 on CUDA cores.  ``split_k``: one of :data:`SPLIT_K_MODES`.  ``sm_count``:
    the GPU's streaming multiprocessors, which the GPU rules size their grids by.
    ``wgmma``: dense layers on sm_90 replaced by the hand-written Hopper ``wgmma`` GEMM
    (:mod:`.wgmma_substitute`); its default is :data:`.wgmma_match.WGMMA_GEMM` *when the
    options are made* (so a tool that sets the module switch, then makes its options, builds
    with it; :data:`DEFAULT`, made at import, has the switch's value in the source).
    """

    tf32: bool = True
    split_k: str = "all"
    sm_count: int = DEFAULT_SM_COUNT
    wgmma: bool = field(default_factory=_wgmma_switch)

    def __post_init__(self):
        if self.split_k not in SPLIT_K_MODES:
            raise TargetError(f"split-K mode '{self.split_k}' is not one of {', '.join(SPLIT_K_MODES)}")
        if not isinstance(self.sm_count, int) or self.sm_count < 1:
            raise TargetError(f"{option('sm_count')}: the GPU's SM count must be a positive integer (e.g. 132 on "
                              f"an H100 SXM), got {self.sm_count!r}")
        if not isinstance(self.wgmma, bool):
            raise TargetError(f"wgmma must be True or False, got {self.wgmma!r}")

    def describe(self) -> str:
        """One line, e.g. ``tf32 on, split-K all, 132 SMs`` (``, wgmma on`` when it is)."""
        return (f"tf32 {'on' if self.tf32 else 'off'}, split-K {self.split_k}, {self.sm_count} SMs"
                + (", wgmma on" if self.wgmma else ""))

    def to_json(self) -> dict:
        """The options as a dict; a key of :data:`UNRECORDED` left out at its old value."""
        return {k: v for k, v in asdict(self).items() if not (k in UNRECORDED and v == UNRECORDED[k])}

    @classmethod
    def from_json(cls, data: dict | None) -> "KernelOptions":
        """The options in ``data``; None or missing keys are the defaults (files written
        before the options were recorded were built with :data:`DEFAULT`), a missing key of
        :data:`UNRECORDED` its old value (not the module switch's value now)."""
        data = {**UNRECORDED, **(data or {})}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


DEFAULT = KernelOptions()


def sm_count_for_arch(arch: str | None) -> int:
    """The default SM count for a CUDA arch (:data:`SM_COUNT_BY_ARCH`), else
    :data:`DEFAULT_SM_COUNT`."""
    return SM_COUNT_BY_ARCH.get(arch or "", DEFAULT_SM_COUNT)


def device_sm_count() -> int | None:
    """The SM count of this machine's GPU 0, or None without a usable GPU."""
    from ..targets import cuda_available

    if not cuda_available():
        return None
    import tvm

    return int(tvm.cuda(0).multi_processor_count)


def resolve(*, tf32: bool = True, split_k: str = "all", cuda_arch: str | None = None,
            sm_count: int | None = None, wgmma: bool | None = None) -> KernelOptions:
    """The options for a build: ``sm_count`` if given; else, cross-compiling for
    ``cuda_arch``, that arch's default; else this machine's GPU's; else the default.
    ``wgmma``: None is :data:`.wgmma_match.WGMMA_GEMM` now."""
    if sm_count is None:
        local = None if cuda_arch else device_sm_count()
        sm_count = local if local is not None else sm_count_for_arch(cuda_arch)
    return KernelOptions(tf32=tf32, split_k=split_k, sm_count=sm_count,
                         wgmma=_wgmma_switch() if wgmma is None else wgmma)


__all__ = ["DEFAULT", "DEFAULT_SM_COUNT", "KernelOptions", "SM_COUNT_BY_ARCH", "SPLIT_K_MODES", "UNRECORDED",
           "device_sm_count", "resolve", "sm_count_for_arch"]
