"""Option groups shared by several subcommands, so each is spelled one way everywhere."""

from __future__ import annotations

import argparse
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


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cost model")
    g.add_argument("--profile", metavar="PATH", default=None,
                   help="profile database to use (default: $HETPART_PROFILE, else this machine's "
                        "profile in the user cache, else the recorded profile shipped with hetpart)")


def parse_bytes(text: str) -> int:
    """'4GiB', '512MB', '1e9' -> bytes."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}
    t = text.strip().lower().replace(" ", "")
    for u, mult in units.items():
        if t.endswith(u):
            try:
                return int(float(t[: -len(u)]) * mult)
            except ValueError:
                break
    try:
        return int(float(t))
    except ValueError:
        raise HetpartError(f"'{text}' is not a size; write e.g. 4GiB, 512MiB or 2e9") from None
