"""Option groups shared by several subcommands, so each is spelled one way everywhere."""

from __future__ import annotations

import argparse
import os
import re

from ..errors import HetpartError, PlanError, ShapeError, TargetError


def add_model_options(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """MODEL (a path or zoo:NAME[:small]) and repeatable --shape NAME=D0,D1,..."""
    g = parser.add_argument_group("model")
    g.add_argument("model", nargs="+" if many else None, metavar="MODEL",
                   help="an .onnx file, or a built-in model: zoo:NAME or zoo:NAME:small (see `partition zoo`)")
    g.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="fix an input's shape, e.g. --shape input=1,3,224,224 (repeatable)")


def parse_shapes(items: list[str]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        if name in shapes and sep:
            raise ShapeError(f"--shape names input '{name}' twice ({','.join(map(str, shapes[name]))} and {dims}); "
                             "give each input one shape")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise ShapeError(f"--shape '{item}' is not NAME=D0,D1,... with integer dims") from None
        if any(d <= 0 for d in shapes[name]):
            raise ShapeError(f"--shape '{item}': every dim must be a positive integer")
    return shapes


def check_cuda_arch(arch: str | None) -> None:
    """``--cuda-arch`` is ``sm_<digits>`` (e.g. sm_90), or absent."""
    if arch is not None and not re.fullmatch(r"sm_\d+a?", arch):
        raise TargetError(f"--cuda-arch '{arch}' is not a CUDA arch; write it like sm_90 (H100/H200) or sm_80 (A100)")


def check_objective(name: str) -> None:
    from ..partitioner import OBJECTIVES

    if name not in OBJECTIVES:
        raise PlanError(f"--objective: unknown objective '{name}'; choose one of: {', '.join(OBJECTIVES)}")


def parse_gpu_memory(text: str | None) -> int | None:
    """``--gpu-memory`` in bytes (None when absent); a positive size."""
    if text is None:
        return None
    size = parse_bytes(text)
    if size <= 0:
        raise PlanError(f"--gpu-memory '{text}': the cap must be a positive size, e.g. 4GiB")
    return size


def add_target_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("targets")
    g.add_argument("--simulate", action="store_true",
                   help="build and run the CUDA partitions on the CPU (no GPU needed; same plan)")
    g.add_argument("--cuda-arch", metavar="SM", default=None,
                   help="cross-compile CUDA partitions for this arch (e.g. sm_90) when this machine has no GPU")
    add_kernel_options(parser)


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """--precision DEVICE=FORMAT,...: read with :func:`parse_precision`."""
    parser.add_argument("--precision", metavar="DEVICE=FORMAT,...", default=None,
                        help="number format per device: fp32, tf32 (CUDA), bf16 or fp16, e.g. cuda=bf16,cpu=fp32 "
                             "(bf16/fp16: weights stored in it, half the bytes to hold or stream; activations "
                             "and accumulation float32). Default cpu=fp32,cuda=tf32")


def parse_precision(text: str | None):
    """The :class:`~hetpart.contracts.precision.Precision` of ``--precision``
    (PrecisionError naming the valid formats for a bad one)."""
    from ..contracts.precision import parse

    return parse(text)


ENV_TF32 = "HETPART_TF32"
"""Environment variable: "0"/"off"/"false"/"no" is ``--no-tf32``."""

ENV_SPLITK = "HETPART_SPLITK"
"""Environment variable: "0"/"off"/"false"/"no" is ``--split-k off``, "conv" ``--split-k conv``."""

_OFF = ("0", "off", "false", "no")


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    """--no-tf32, --split-k MODE, --sm-count N: the code-generation choices of GPU builds
    (:class:`hetpart.kernels.options.KernelOptions`); read with :func:`kernel_options`."""
    g = parser.add_argument_group("GPU code generation")
    g.add_argument("--no-tf32", action="store_true",
                   help=f"keep float32 matmuls and convolutions on CUDA cores, full float32 (also ${ENV_TF32}=0)")
    g.add_argument("--split-k", choices=["off", "conv", "all"], default=None,
                   help=f"split K of starved contractions across blocks: all (default), conv only, or off "
                        f"(also ${ENV_SPLITK}=0|conv)")
    g.add_argument("--sm-count", type=int, default=None, metavar="N",
                   help="the GPU's SM count the grids are sized for (default: the GPU's, else a default for "
                        "--cuda-arch, e.g. 132 for sm_90)")


def kernel_options(args: argparse.Namespace):
    """The :class:`~hetpart.kernels.options.KernelOptions` the flags of
    :func:`add_kernel_options` (and ``$HETPART_TF32`` / ``$HETPART_SPLITK`` where a flag
    is not given) ask for: the one place the environment is read for them."""
    from ..kernels import options

    tf32 = not getattr(args, "no_tf32", False) and os.environ.get(ENV_TF32, "1").strip().lower() not in _OFF
    split_k = getattr(args, "split_k", None)
    if split_k is None:
        raw = os.environ.get(ENV_SPLITK, "all").strip().lower()
        split_k = "off" if raw in _OFF else ("conv" if raw == "conv" else "all")
    return options.resolve(tf32=tf32, split_k=split_k, cuda_arch=getattr(args, "cuda_arch", None),
                           sm_count=getattr(args, "sm_count", None))


def add_conv_block_option(parser) -> None:
    """--conv-block N: read with :func:`parse_conv_block`."""
    parser.add_argument("--conv-block", default=None, metavar="N",
                        help="all-CPU plans only: build the convolutions channel-blocked, NCHW{N}c (N 8, 16 or 32, "
                             "auto: this CPU's float lanes, 8 on AVX2, 16 on AVX-512 (a wider block is "
                             "correct but slower), or off: NCHW).  Default: an all-CPU plan of a model with "
                             "convolutions is built in NCHW16c on AVX-512 CPUs (at 16 threads 0.56-0.84x of the "
                             "NCHW build on resnet50, mobilenet_v2, googlenet, densenet121, inception_v3), "
                             "NCHW elsewhere.  The plan is made on the NCHW import; with N given, "
                             "one that places any partition off the CPU is refused")


def parse_conv_block(value: str | int | None) -> int | None:
    """``--conv-block``'s value: None (not given: all-CPU plans take
    :func:`~hetpart.importer.conv_layout.default_block`), 0 (``off``: NCHW), one of
    :data:`~hetpart.importer.conv_layout.CONV_BLOCKS`, or ``auto`` (this CPU's float lanes,
    :func:`~hetpart.importer.conv_layout.host_block`); PlanError naming them otherwise."""
    from ..importer.conv_layout import CONV_BLOCKS, host_block

    if value is None:
        return None
    if str(value).strip().lower() in ("off", "none", "nchw"):
        return 0  # NCHW, even where all-CPU plans default to a block (conv_layout.default_block)
    if str(value).strip().lower() == "auto":
        return host_block()
    if str(value).strip().isdigit() and int(value) in CONV_BLOCKS:
        return int(value)
    raise PlanError(f"--conv-block {value}: the channel block must be one of "
                    f"{', '.join(map(str, CONV_BLOCKS))}, auto (the CPU's float lanes: 8 on AVX2, 16 on AVX-512) "
                    f"or off (NCHW)")


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cost model")
    g.add_argument("--profile", metavar="PATH", default=None,
                   help="profile database to use (default: $HETPART_PROFILE, else this machine's "
                        "profile in the user cache, else the recorded profile shipped with hetpart)")


def parse_bytes(text: str) -> int:
    """'4GiB', '512MB', '1e9' -> bytes (HetpartError for anything else, 'inf' and 'nan' included)."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}
    t = text.strip().lower().replace(" ", "")
    number, mult = t, 1
    for u, m in units.items():
        if t.endswith(u):
            number, mult = t[: -len(u)], m
            break
    try:
        return int(float(number) * mult)
    except (ValueError, OverflowError):  # not a number, nan, or inf
        raise HetpartError(f"'{text}' is not a size; write e.g. 4GiB, 512MiB or 2e9") from None
