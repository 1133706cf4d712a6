"""The cost model: what each kernel costs on each device, and what moving data costs.

Measured on the user's own machine, kept in one JSON profile per machine:

    kernel_bench     one fused kernel alone, built as the compiler builds it, timed
    overhead_bench   per partition call, per kernel launch, per host switch
    transfer_bench   host<->GPU copies, pinned and pageable, 4 KiB .. 256 MiB
    transfer_model   latency + bytes/bandwidth fits of those copies
    profile_db       the Profile (file format, atomic saves) and its records
    fingerprint      which machine a profile belongs to
    locate           where profiles live; which one a plan uses (resolve_profile)
    profiler         profile(graph): measure what is missing, resumable
    predictor        per-op-class fits for kernels never measured; held-out accuracy
    flash_cost       a flash-marked attention triple priced as the chain that runs (sum rule)
    cost_model       CostModel: the numbers the partitioner asks for

Typical use::

    prof = hetpart.costmodel.profile(graph)                # measure this machine
    cm = CostModel(resolve_profile())                      # or the recorded one
    cm.kernel_cost(graph.kernels["node_3"], "cuda"), cm.transfer_cost(4096, "cpu", "cuda")
"""

from .cost_model import CostModel
from .locate import default_profile_path, recorded_profiles, resolve_profile
from .predictor import evaluate
from .profile_db import KernelRecord, Overheads, Profile, Timing
from .profiler import profile
from .transfer_bench import measure_transfers
from .transfer_model import TransferFit, TransferModel

__all__ = [
    "CostModel", "KernelRecord", "Overheads", "Profile", "Timing", "TransferFit", "TransferModel",
    "default_profile_path", "evaluate", "measure_transfers", "profile", "recorded_profiles", "resolve_profile",
]
