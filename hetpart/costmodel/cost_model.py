"""CostModel: the numbers the partitioner asks for, read from one :class:`Profile`.

* ``kernel_cost(kernel, device)``: seconds per call of a kernel inside a partition
  = its measured work (timing minus the empty-call baseline) + one kernel launch
  (:meth:`KernelRecord.cost`).  The launch is added here, once; it is not in the
  stored timing's work part.  Unmeasured kernels are predicted (:mod:`.predictor`)
  unless ``predict=False``, from the kernel's features and its schedule rule on the
  device (:meth:`CostModel.rule_of`: recorded, or found by scheduling its PrimFunc
  for the profile's recorded target -- no GPU needed -- when the CostModel was
  given the kernel's op graph; else ``""`` and the predictor uses its class fit)
  and its access pattern (:meth:`CostModel.access_of`: recorded, or read off its
  PrimFunc the same way; :mod:`.access_pattern`).  A flash-marked attention triple on a
  CUDA target that runs it as the flash kernel (sm_90) is priced by :mod:`.flash_cost`'s
  sum rule: ``scores`` and ``softmax`` 0, ``values`` the whole substituted chain.
* ``transfer_cost(n, src, dst)``: the pinned-memory fit (the runtime hands tensors
  over through pinned buffers); 0 on the same device.
* ``partition_overhead(device)``: calling a partition, the host switch after it and
  the session's own per-partition cost (:attr:`Overheads.session_s`).
* ``wake_cost(device)``: what a partition on ``device`` adds when it starts after one
  on the other device: the CPU thread pool's wake-up (:attr:`Overheads.wake_s`; the
  partitioner charges it per boundary, :func:`hetpart.partitioner.layout.partition_overheads`).
  A profile older than it has none: :data:`DEFAULT_WAKE_S` stands in, and
  ``wake_origin(device)`` says so.
  With :data:`INLINE_TURNS` it is the inline run's turn instead (:data:`INLINE_TURN_S`:
  a 7 us resume on the CPU, the host's pre-launch work on CUDA).
* ``graphless_cuda()``: what a CUDA partition of a plan built without CUDA graphs costs on
  the host (:data:`GRAPHLESS_CUDA_S`: a call, a launch per kernel, a handoff after a CPU
  partition; issue 19, from a traced run); ``launches(kernel)``: kernels it launches (0 for
  a view the build turns into a ``reshape``).
* ``scaled(gpu=k, link=k)``: what-if -- every CUDA kernel k x slower, or the link's
  bandwidth k x narrower.
* ``with_weight_bandwidth({"cpu": bytes_per_s})``: cold weights -- no kernel on a
  named device costs less than one launch plus reading its weights
  (``param_bytes``) at that bandwidth.  A microbenchmark repeats one kernel, so its
  weights stay in the last-level cache; in a model whose weights exceed that cache
  (every model bigger than the GPU) each weight is read from memory once per run.
  On the 2-core EPYC (32 MiB L3) a 46 MB LLaMA GEMV ran at 70-78 GB/s alone and
  44 GB/s in the model, a 16.8 MB one at 175 GB/s alone and 45 GB/s in the model;
  the H200 profile's 16.8 MB GEMV was timed at 234 GB/s on a host whose memory
  reads 90-95 GB/s (bench/results/capped-predictions.md).
* ``cold_weight_bandwidth(device)``: the bandwidth for that floor as the profile
  measured it with the compiler's own GEMV over weights no cache holds
  (:attr:`Overheads.weight_read_Bps`, :mod:`.weight_read_bench`; ``partition profile
  --weight-read``); None where the profile has none.  A CostModel prices with that floor
  by default wherever the profile measured it (``weight_bandwidth=None``), so the plans
  of ``partition`` and of the capped benchmark see one price; ``with_hot_weights()``
  drops it.  The capped benchmark prefers it to its own torch sum, a snapshot
  that read 66.4 GB/s on the H200 in the run whose ORT-style plan then read its CPU
  weights at >= 100 GB/s (bench/results/capped-pricing-nvidia-h200.md).
* ``weights_stay_cached(kernel, device)``: the floor's rule.  Weights come from memory
  only when the weights a run reads on the device do not fit in its last-level cache
  (:attr:`Profile.cpu_llc_bytes`, recorded when the profile was measured,
  :mod:`.cpu_cache`).  The cost model prices a kernel before any placement exists, so
  the weight set it compares is a bound: everything the kernel's graph (the one given to
  :meth:`add_graph` that holds it) reads as weights, on any device.  A graph whose
  weights all fit (a small MLP or a mobilenet on the 2-core EPYC's 32 MiB L3) is priced
  at its hot timings wherever its kernels go -- exact, since no placement puts more on
  the CPU.  A graph whose weights do not fit is floored wherever its kernels go: exact
  for every plan whose CPU weights exceed the cache (a 1B LLaMA with gigabytes of
  weights on the CPU), and at most ``cache bytes / bandwidth`` high (plus launches) for
  a plan that keeps less than a cache's worth of weights on the CPU.  Where the cache size was not
  recorded (older profiles, the shipped H200 one) or the kernel's graph is unknown, the
  floor applies, as before the rule.  Activations are not counted (a batch-1
  model's are small next to its weights); neither is another model served in the same
  process evicting them.  ``cache_bytes={"cpu": 0}`` floors every graph (what-if: a
  cold cache); ``bench/results/llc-floor.md`` has the measurements.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..errors import ProfileError
from . import flash_cost, profile_check
from .predictor import Predictor
from .profile_db import KernelFeatures, Overheads, Profile
from .access_pattern import kernel_access
from .kernel_shape import graph_weight_bytes, weight_bytes_read
from .fingerprint import recorded_options
from .schedule_rule import kernel_rule, target_of

GPU_DEVICES = ("cuda",)

DEFAULT_WAKE_S = {"cpu": 200e-6}
"""The CPU wake cost of a profile that did not measure it (older than ``wake_s``).

Not 0: every overhead such a profile holds was measured hot, and pricing a CPU
partition after a GPU one hot is what made the planner pick a 108-partition plan (44
CPU partitions) for LLaMA decode at half its weights on the H200: predicted 33.5 ms,
ran 54.8 ms, while the two-partition rules' plans ran 24.7-29.6 ms (issue 19).  That
gap is at most 21.3 / 44 = 0.48 ms per CPU partition entered from the GPU; a cold
call of the wake kernel on the 2-core sandbox cost ~0.1-0.15 ms more than a hot one
(bench/results/wake-cost.md).  200 us sits between the two; any value above ~40 us
already prices that plan above the llama.cpp-style rule's.  A GPU has no pool to
wake: 0."""


INLINE_TURNS = False
"""On: :meth:`CostModel.wake_cost` prices a device change as an *inline* run has it
(:data:`INLINE_TURN_S`): a CPU partition entered from a CUDA one pays the CPU's resume, not
a pool wake, and a CUDA partition entered from a CPU one pays the host's work before its
GPU work starts.  Off (before): the profile's ``wake_s`` (or :data:`DEFAULT_WAKE_S`, 200 us
on the CPU) and nothing on CUDA.  An inline run (``Session.run`` on an idle session, the
default: the calling thread runs every stage) is what the latency objective and the
capped benchmark time; a pipelined run through the worker threads may still wake them.
Issue 19.  Off: device step 126 (session 49, another H100 host, bench/results/turn-price-nvidia-h100.md)
ran its plan no faster (0.994x) and its errors at that host's CPU rate 2-3x larger."""


INLINE_TURN_S = {"cpu": 7e-6, "cuda": 130e-6}
"""What a partition adds on an inline run when the one before it ran on the other device,
by its device (charged by :func:`hetpart.partitioner.layout.partition_overheads` as the wake
cost, as :data:`DEFAULT_WAKE_S` is): ``"cpu"`` on a CPU partition after a CUDA one,
``"cuda"`` on a CUDA partition after a CPU one.  Fitted on session 48's two traced inline
runs of llama_decode at 1/2 (step 115's plan, H100 host, CUDA graphs on;
bench/results/turn-cost-nvidia-h100.md, turn-price-2core.md), host clock, the 8 steady turns
p3..p17 of each:

* ``"cpu"``: the next CPU partition starts ~7 us after its CUDA predecessor's GPU work
  ends (the calling thread's wait returning); the CPU layer partitions measured 912-989 us
  for 92.3 MB of weights, no 200 us wake in them.
* ``"cuda"``: a turn's CPU end -> next CPU start less the CUDA partition's GPU time
  (CUDA events) is 166 / 168 us (medians of the two traces): the CPU stage's tail (input
  copies enqueued, outputs published) ~85 us, the host span start -> graph launch ~42,
  launch start -> GPU start ~30 (the launch itself 35-40 us), GPU end -> CPU start ~7.
  Less what the timeline already prices there (two 5 us input copies, three ~3.9 us output
  copies, the CUDA call's 7.5 us overhead, ``"cpu"``): ~130 us.
The turns whose input copy queues behind a weight copy (p19, p21: +300 us, the copy
engine, capped-decode-gap-s47.md section 2) are not in it.  One host, two traces: not in
any profile."""


class GraphlessCuda(NamedTuple):
    """What a CUDA partition of a plan built without CUDA graphs costs on the host
    (:data:`GRAPHLESS_CUDA_S`): ``call_s`` per partition call, ``launch_s`` per kernel it
    launches, ``handoff_s`` more when it is entered from a CPU partition."""

    call_s: float
    launch_s: float
    handoff_s: float

    def host_turn(self, launches: int) -> float:
        """Seconds the host spends on one call launching ``launches`` kernels."""
        return self.call_s + launches * self.launch_s


GRAPHLESS_CUDA_S = GraphlessCuda(call_s=140e-6, launch_s=7.3e-6, handoff_s=440e-6)
"""A CUDA partition of a plan without CUDA graphs (:meth:`CostModel.graphless_cuda`; priced
where :data:`hetpart.partitioner.layout.GRAPHLESS_CUDA_LAUNCH`): the Relax VM launches its
kernels one by one from a Python worker, so the partition lasts ``max(its kernels + the
profile's overhead, call_s + launches * launch_s)``, and ``handoff_s`` more when a CPU
partition runs before it (the CPU worker enqueueing the crossing copies, the CUDA worker's
wake, the outputs' markers back; what the timeline's ~5 us copies leave unpriced).

Issue 19, device step 115 (session 47, H100 host, TVM_NUM_THREADS=16, GEMV 42-60 GB/s):
llama_decode at 1/2, hetpart's plan (11 CPU layers interleaved with 16-17-kernel streamed
CUDA partitions, then p23..p27 on CUDA alone), traced with COPY_TO_GPU on and off
(bench/results/capped-copy-to-gpu-nvidia-h100.md; the fit: bench/results/capped-launch-price.md):

* ``launch_s``: the 180-kernel tail p27 (171 launched: 9 are ``reshape`` views that
  RewriteDataflowReshape turns into no kernel, :meth:`CostModel.launches`) spent
  1272 / 1229 us in its VM call (copy on / off): 7.4 / 7.2 us a kernel.
* ``call_s``: the host turn (``host pX``: inputs, ring, launch, refill enqueue, outputs)
  less 7.3 us a launch, of the CUDA partitions that follow a CUDA one: p24 / p25 / p26
  (4 / 3 / 2 kernels) 160 / 131 / 115 us (copy on), 180 / 153 / 132 (off): ~140 us.
  Their GPU spans (86 / 94 / 27 us) end inside the turn: the host, not the GPU, sets the
  pace; p27's GPU (2020 us, its kernels 1.7x the H200 profile's) outlasts its turn (1517).
* ``handoff_s``: a CPU partition's end to the next CPU partition's start, around each of the
  10 steady interleaved CUDA partitions (15-16 launched, predicted ~90 us of kernels):
  median 729 us (copy on; 652-785) / 698 (off; 607-716), of which the model above
  prices the turn (140 + 16 * 7.3 = 257 us) and the crossing copies (~21 us: 2 h2d, 3
  d2h): 450 / 420 left.  The CPU worker's end to the CUDA worker's turn alone is ~200 us
  (copy on: it enqueues the h2d copies first, each ~70 us of host time beside TVM's 16
  spinning pool workers) and the turn after the launch ~175 us (the ring's refill, three
  output markers), against ~65 us in p24..p26.
p23 (8 launched, after p22_cpu, its outputs read on CUDA: no way back to the CPU) costs
512 us to p24's turn against the 658 priced: the handoff grows with the crossings (~70 us of
host time an h2d copy, ~35 an output back), priced here per entry.  BERT-large's plans
of today (22 one-kernel CPU partitions at 1/3) reprice +28..+68% over session 41's
measurements with it, so it is off by default (:data:`hetpart.partitioner.layout.GRAPHLESS_CUDA_LAUNCH`).
One host, one trace: not in any profile."""


GATHER_FLOOR_COUNTS_COPY = True
"""A gather of weights (a MoE step's ``Gather`` of its chosen experts' stacked weights)
is floored at the rows it reads plus the copy of them it writes (:func:`cold_weight_traffic`),
not at the rows alone.  A dense matmul reads its weights in place; a gather materialises
them: 23 MB of chosen expert rows read AND 23 MB written per projection on zoo moe, the
written copy far past any core's cache.  The H200 run (bench/results/capped-moe-pricing.md)
measured the three moe plans (ORT-style rule, llama.cpp-style rule, all-CPU) 0.20-0.31 ms
per CPU expert gather over their rows-only prediction at 95.5 GB/s; the written copy at
that bandwidth is 0.24 ms.  Off: the rows alone (before)."""


def cold_weight_traffic(f: KernelFeatures) -> int:
    """Bytes one call of the kernel ``f`` moves to or from memory for its weights when they
    are cold: :func:`.kernel_shape.weight_bytes_read`, plus, for a gather of weights
    (:data:`GATHER_FLOOR_COUNTS_COPY`), the bytes it writes (the gathered copy).  0 for a
    kernel without weights; an embedding lookup of a few rows adds a few rows."""
    read = weight_bytes_read(f)
    if read and GATHER_FLOOR_COUNTS_COPY and f.op_class == "gather":
        return read + f.bytes_written
    return read


class CostModel:
    """Kernel, transfer and partition costs of one machine (see the module docstring)."""

    def __init__(self, profile: Profile, *, predict: bool = True, gpu_scale: float = 1.0, link_scale: float = 1.0,
                 graph=None, weight_bandwidth: dict[str, float] | None = None,
                 cache_bytes: dict[str, int] | None = None, _checked: bool = False):
        found = [] if _checked else profile_check.problems(profile)
        if found:  # a Profile built in code skips Profile.load's check
            raise ProfileError(f"{profile.path or 'the profile'} has unusable values: {profile_check.describe(found)}")
        self.profile = profile
        self.kernel_options = recorded_options(profile.settings)  # what its kernels were built with
        self.predict = predict
        self.gpu_scale = float(gpu_scale)
        self.link_scale = float(link_scale)
        # None: cold weights as the profile measured them (its GEMV sweep), none where it did not
        self.weight_bandwidth = _checked_bandwidths(_measured_cold_reads(profile) if weight_bandwidth is None
                                                    else weight_bandwidth)
        # None: the last-level cache the profile recorded (a device without one: the floor always applies)
        self.cache_bytes = _checked_cache_bytes(_recorded_caches(profile) if cache_bytes is None else cache_bytes)
        self._graph_weights: dict[int, int] = {}  # id(graph) -> weight bytes its kernels read
        self._predictors: dict[str, Predictor] = {}
        self._graphs: list = []  # op graphs whose modules hold the PrimFuncs of kernels asked about
        self._rules: dict[tuple[str, str], str] = {}  # (device, signature) -> rule: schedule each once
        self._accesses: dict[str, str] = {}  # signature -> access pattern: analyse each once
        self._launches: dict[str, int] = {}  # signature (a flash chain's) -> launches (0: a view): analyse each once
        self._flash_targets: dict[str, bool] = {}  # target JSON -> whether it runs flash chains
        self._flash_roles: dict[str, str | None] = {}  # signature -> flash role (None: unmarked or unknown)
        if graph is not None:
            self.add_graph(graph)

    def add_graph(self, graph) -> "CostModel":
        """Let :meth:`rule_of` find the PrimFuncs of ``graph``'s kernels; returns self.
        Adding the same graph again changes nothing."""
        if not any(g is graph for g in self._graphs):
            self._graphs.append(graph)
        return self

    def rule_of(self, kernel, device: str) -> str:
        """The schedule rule ``kernel`` gets on ``device``: the profile's record of it,
        else its PrimFunc (from a graph given to :meth:`add_graph`) scheduled for the
        profile's target of ``device``, cached per signature; ``""`` when neither is
        known (then the predictor uses the class fit, as for a profile without rules)."""
        rec = self.profile.record(device, kernel.signature)
        if rec is not None and rec.rule:
            return rec.rule
        key = (device, kernel.signature)
        if key not in self._rules:
            self._rules[key] = self._scheduled_rule(kernel, device)
        return self._rules[key]

    def access_of(self, kernel, device: str) -> str:
        """The access pattern of ``kernel``: the profile's record of it on ``device``,
        else read off its PrimFunc (from a graph given to :meth:`add_graph`; it does
        not depend on the device), cached per signature; ``""`` when neither is known
        (then the predictor stops at the (class, rule) fit)."""
        rec = self.profile.record(device, kernel.signature)
        if rec is not None and rec.access:
            return rec.access
        if kernel.signature not in self._accesses:
            graph = self._graph_of(kernel)
            self._accesses[kernel.signature] = kernel_access(graph, kernel) if graph is not None else ""
        return self._accesses[kernel.signature]

    def _graph_of(self, kernel):
        """The graph given to :meth:`add_graph` that holds ``kernel`` (same id and
        signature, so its module has the PrimFunc), or None; of several, the first whose kernel
        equals ``kernel`` (its tensors too: two models' ``node_8`` may share a signature, not the
        flash chain its inputs come from), else the first."""
        held = [g for g in self._graphs if _holds(g, kernel)]
        return next((g for g in held if g.kernels[kernel.id] == kernel), held[0] if held else None)

    def _scheduled_rule(self, kernel, device: str) -> str:
        target = self.profile.targets.get(device)
        graph = self._graph_of(kernel)
        if not target or graph is None:
            return ""
        try:
            return kernel_rule(graph, kernel, target_of(target), self.kernel_options)
        except Exception:  # noqa: BLE001 - a target this TVM cannot parse: predict without the rule
            return ""

    # --- kernels ------------------------------------------------------------------
    def _where(self) -> str:
        return str(self.profile.path or "the profile")

    def _overheads(self, device: str) -> Overheads:
        try:
            return self.profile.overheads[device]
        except KeyError:
            raise ProfileError(f"{self._where()} has no measurements for device '{device}'; "
                               f"measured devices: {', '.join(self.profile.overheads) or 'none'}. Measure it "
                               f"with `partition profile MODEL --device {device}` on a machine that has it, "
                               "or plan without --profile (the recorded profile)") from None

    def _scale(self, device: str) -> float:
        return self.gpu_scale if device in GPU_DEVICES else 1.0

    def _predictor(self, device: str) -> Predictor:
        if device not in self._predictors:
            self._predictors[device] = Predictor(self.profile, device)
        return self._predictors[device]

    def is_predicted(self, kernel, device: str) -> bool:
        """True when ``kernel_cost`` for this kernel comes from the predictor, not a measurement
        (a flash triple's ``scores`` and ``softmax`` are priced by the sum rule, not predicted;
        its ``values`` is measured only by a chain record: :mod:`.flash_cost`)."""
        flash = self._flash_role(kernel, device)
        rec = self._record(kernel, device)
        if flash is not None:
            return flash == "values" and not (rec is not None and rec.flash == flash_cost.CHAIN)
        return rec is None or rec.status == "dynamic"

    def _flash_role(self, kernel, device: str) -> str | None:
        """The flash role of ``kernel`` where the profile's ``device`` target runs marked triples as
        the flash kernel (:func:`.flash_cost.substitutes`), else None: priced as itself."""
        if device not in GPU_DEVICES:
            return None
        target = self.profile.targets.get(device, "")
        if target not in self._flash_targets:
            self._flash_targets[target] = flash_cost.substitutes(target)
        if not self._flash_targets[target]:
            return None
        if kernel.signature not in self._flash_roles:  # the signature hashes the mark: cached per signature
            graph = self._graph_of(kernel)
            if graph is None:  # not known yet (add_graph may bring it): priced as itself
                return None
            marked = flash_cost.role(graph, kernel)
            if marked is not None and marked[0] == "values" and flash_cost.triple_of(graph, kernel) is None:
                marked = None
            self._flash_roles[kernel.signature] = marked[0] if marked is not None else None
        return self._flash_roles[kernel.signature]

    def _record(self, kernel, device: str):
        """The :class:`.profile_db.KernelRecord` ``kernel`` is priced by on ``device``: for the
        ``values`` kernel of a flash chain the chain's record (:func:`.flash_cost.chain_signature`:
        a masked and an unmasked chain whose ``values`` kernels share a signature have one each; an
        older hetpart's chain record at the ``values`` kernel's own signature is never read), else
        the record under its own signature; None where there is none."""
        if self._flash_role(kernel, device) != "values":
            return self.profile.record(device, kernel.signature)
        chain = self._chain_of(kernel)
        return self.profile.record(device, chain) if chain is not None else None

    def _chain_of(self, kernel) -> str | None:
        """:func:`.flash_cost.chain_signature` of ``kernel`` in the graph that holds it (None: not
        the ``values`` kernel of a whole chain there, or no graph given holds it)."""
        graph = self._graph_of(kernel)
        return flash_cost.chain_signature(graph, kernel) if graph is not None else None

    def _flash_cost(self, kernel, device: str) -> float:
        """The sum rule (:mod:`.flash_cost`): ``scores`` / ``softmax`` 0, ``values`` its chain --
        the chain record's cost, else the predicted cost of each kernel the chain launches."""
        if self._flash_role(kernel, device) != "values":
            return 0.0
        rec = self._record(kernel, device)
        if rec is not None and rec.flash == flash_cost.CHAIN:
            if rec.ok:
                return rec.cost(self._overheads(device)) * self._scale(device)
            if rec.failed:
                return math.inf
        if not self.predict:
            raise ProfileError(f"{kernel.id} (flash attention chain of {kernel.func}) has no measurement on "
                               f"{device} in {self._where()}; run `partition profile MODEL` or allow prediction")
        predictor, launch = self._predictor(device), self._overheads(device).launch_s
        try:
            cost = sum(flash_cost.predicted_flash_s(f, launch) if rule == flash_cost.FLASH_RULE
                       else predictor.predict(f, rule) for f, rule in flash_cost.chain_features(self._graph_of(kernel),
                                                                                                kernel))
        except ProfileError as exc:
            raise ProfileError(f"cannot cost {kernel.id} ({kernel.func}) on {device}: {exc}") from None
        return cost * self._scale(device)

    def supports(self, kernel, device: str) -> tuple[bool, str]:
        """``(False, reason)`` when the profile records that the kernel failed on ``device``."""
        from ..kernels.capabilities import unsupported_reason

        reason = unsupported_reason(kernel, device)
        if reason:
            return False, f"{kernel.id} ({kernel.func}) on {device}: {reason}"
        rec = self._record(kernel, device)
        if rec is not None and rec.failed:
            return False, f"{kernel.id} ({kernel.func}) on {device}: {rec.error}"
        return True, ""

    def kernel_cost(self, kernel, device: str) -> float:
        """Seconds per call inside a partition, launch included; ``inf`` if it cannot run there.

        Raises :class:`ProfileError` naming the kernel when it is unmeasured and
        prediction is off (or impossible).
        """
        if not self.supports(kernel, device)[0]:
            return math.inf
        if self._flash_role(kernel, device) is not None:
            return self._flash_cost(kernel, device)
        oh = self._overheads(device)
        rec = self.profile.record(device, kernel.signature)
        if rec is not None and rec.ok:
            return max(rec.cost(oh), self.weight_floor(kernel, device)) * self._scale(device)
        if rec is not None and rec.failed:
            return math.inf
        if not self.predict:
            raise ProfileError(f"{kernel.id} ({kernel.op_class} kernel {kernel.func}) has no measurement on {device} "
                               f"in {self._where()}; run `partition profile MODEL` or allow prediction")
        try:
            cost = self._predictor(device).predict(KernelFeatures.of(kernel), self.rule_of(kernel, device),
                                                   self.access_of(kernel, device))
        except ProfileError as exc:
            raise ProfileError(f"cannot cost {kernel.id} ({kernel.func}) on {device}: {exc}") from None
        return max(cost, self.weight_floor(kernel, device)) * self._scale(device)

    def mapped_cost(self, kernel) -> float:
        """Seconds per call of ``kernel`` on CUDA with its weights read in place from mapped
        pinned host memory (:data:`hetpart.partitioner.choice.MAPPED`): its CUDA cost, or the
        bytes it reads (:func:`.kernel_shape.weight_bytes_read`: a gather only its rows) at the
        pinned host-to-device fit (:meth:`transfer_cost`: its latency standing for the launch),
        whichever is more.  Assumes a kernel's mapped reads go at the copy engine's rate; measured
        (tools/gpu_mapped_weights_probe.py, H100) they go at 42-50 GB/s against the copy's ~54:
        10-25% optimistic (bench/results/capped-mapped-weights.md)."""
        read = weight_bytes_read(KernelFeatures.of(kernel))
        return max(self.kernel_cost(kernel, "cuda"), self.transfer_cost(read, "cpu", "cuda"))

    def weight_floor(self, kernel, device: str) -> float:
        """The least a call of ``kernel`` on ``device`` can cost with its weights cold:
        one launch plus the weight bytes it reads (:func:`.kernel_shape.weight_bytes_read`:
        a gather only its rows) and, for a gather of weights, the copy of them it writes
        (:func:`cold_weight_traffic`) at :attr:`weight_bandwidth` of ``device``; 0.0 where no
        bandwidth is given for it, or where its weights stay cached between runs
        (:meth:`weights_stay_cached`)."""
        bandwidth = self.weight_bandwidth.get(device)
        nbytes = cold_weight_traffic(KernelFeatures.of(kernel)) if bandwidth else 0
        if not nbytes or self.weights_stay_cached(kernel, device):
            return 0.0
        return self._overheads(device).launch_s + nbytes / bandwidth

    def weights_stay_cached(self, kernel, device: str) -> bool:
        """True when every weight ``kernel``'s graph reads fits in ``device``'s last-level
        cache (:attr:`cache_bytes`), so none comes from memory from one run to the next
        and the kernel is priced at its (hot) timing.  False where the cache size is not
        known or the kernel's graph was not given (:meth:`add_graph`).  The rule and its
        bound: the module docstring."""
        cache = self.cache_bytes.get(device)
        bound = self._weight_bound(kernel) if cache is not None else None
        return bound is not None and bound <= cache

    def _weight_bound(self, kernel) -> int | None:
        """The most weight bytes a run of ``kernel``'s graph reads: the largest
        :meth:`graph_weight_bytes` of the graphs given to :meth:`add_graph` that hold it
        (the graph itself, and copies with the same kernels, e.g. one counting CUDA's
        bf16 bytes); None when none does."""
        sizes = [self.graph_weight_bytes(g) for g in self._graphs if _holds(g, kernel)]
        return max(sizes) if sizes else None

    def graph_weight_bytes(self, graph) -> int:
        """:func:`.kernel_shape.graph_weight_bytes` of ``graph``; cached for the graphs
        this cost model holds (:meth:`add_graph`: their ids stay theirs while held)."""
        key = id(graph)
        if key in self._graph_weights:
            return self._graph_weights[key]
        nbytes = graph_weight_bytes(graph)
        if any(g is graph for g in self._graphs):
            self._graph_weights[key] = nbytes
        return nbytes

    def cold_weight_bandwidth(self, device: str) -> float | None:
        """Bytes per second ``device`` reads weights at when no cache holds them, as the
        profile measured it (:attr:`Overheads.weight_read_Bps`); None where it did not
        (or has no overheads for ``device``)."""
        oh = self.profile.overheads.get(device)
        return None if oh is None else oh.weight_read_Bps

    def copy_contention(self) -> tuple[float, float] | None:
        """``(cpu_read, h2d_copy)``: the fraction of its own rate the CPU's cold weight reads
        and a pinned host-to-GPU copy each keep while both run (both read host memory),
        from the profile's :attr:`Overheads.contended_weight_read_Bps` over its
        ``weight_read_Bps`` and :attr:`Overheads.contended_h2d_Bps` over the pinned h2d
        fit's bandwidth, each clamped to (0, 1]; None where any of them was not measured.
        :mod:`hetpart.partitioner.timeline` slows overlapping tasks by them."""
        oh = self.profile.overheads.get("cpu")
        tm = self.profile.transfers
        fit = tm.fit("h2d", "pinned") if tm else None
        if oh is None or fit is None or None in (oh.weight_read_Bps, oh.contended_weight_read_Bps,
                                                 oh.contended_h2d_Bps):
            return None
        return (min(1.0, oh.contended_weight_read_Bps / oh.weight_read_Bps),
                min(1.0, oh.contended_h2d_Bps / fit.bandwidth_Bps))

    def last_level_cache(self, device: str) -> int | None:
        """Bytes of ``device``'s last-level cache as this cost model prices with it
        (:attr:`cache_bytes`: the profile's record unless given); None where unknown."""
        return self.cache_bytes.get(device)

    def with_hot_weights(self) -> "CostModel":
        """A copy with no weight floor on any device: every kernel at its timing, taken with
        its weights cached (what the profile measured before the cold-read bandwidth)."""
        out = self.scaled()
        out.weight_bandwidth = {}
        return out

    def with_weight_bandwidth(self, bandwidths: dict[str, float]) -> "CostModel":
        """A copy whose kernels on each device in ``bandwidths`` cost at least their
        :meth:`weight_floor` (bytes per second; the module docstring says why).
        Raises :class:`ProfileError` for a bandwidth that is not a positive number."""
        out = self.scaled()
        out.weight_bandwidth = {**self.weight_bandwidth, **_checked_bandwidths(bandwidths)}
        return out

    # --- transfers and partitions -----------------------------------------------------
    def transfer_cost(self, nbytes: int, src: str, dst: str) -> float:
        """Seconds to move ``nbytes`` from ``src`` to ``dst`` (pinned fit); 0.0 when equal."""
        if src == dst or nbytes <= 0:
            return 0.0
        direction = "h2d" if dst in GPU_DEVICES else "d2h"
        tm = self.profile.transfers
        fit = tm.fit(direction, "pinned") if tm else None
        if fit is None:
            raise ProfileError(f"{self._where()} has no {direction} transfer model; "
                               "measure it on the GPU machine with `partition profile --transfer`")
        return fit.latency_s + nbytes * self.link_scale / fit.bandwidth_Bps

    def partition_overhead(self, device: str) -> float:
        """Seconds per partition call on ``device``: calling it, the host switch after it,
        and the runtime's own handling of it (where the profile measured that)."""
        oh = self._overheads(device)
        return oh.call_s + oh.switch_s + oh.session_s

    def wake_cost(self, device: str) -> float:
        """Seconds a partition on ``device`` adds when it starts after a partition on
        another device: :attr:`Overheads.wake_s`, or :data:`DEFAULT_WAKE_S` where the
        profile did not measure it (:meth:`wake_origin` tells which)."""
        if INLINE_TURNS:
            return INLINE_TURN_S.get(device, 0.0)
        oh = self._overheads(device)
        if oh.wake_s is not None:
            return oh.wake_s
        return DEFAULT_WAKE_S.get(device, 0.0)

    def graphless_cuda(self) -> GraphlessCuda:
        """What a CUDA partition of a plan without CUDA graphs costs on the host:
        :data:`GRAPHLESS_CUDA_S`, from a traced run (not in any profile yet)."""
        return GRAPHLESS_CUDA_S

    def launches(self, kernel) -> int:
        """Kernel launches one call of ``kernel`` makes: 0 when its PrimFunc (from a graph
        given to :meth:`add_graph`) is a pure reshape, which the build's
        ``RewriteDataflowReshape`` turns into a view (``R.reshape``, no kernel); else 1
        (also where the PrimFunc is unknown).  Cached per signature.  A flash triple on a
        target that substitutes it (:mod:`.flash_cost`): ``scores`` / ``softmax`` 0, ``values`` the
        chain's kernels (narrowing, a masked chain's bias kernel, flash; cached per chain signature)."""
        role = self._flash_role(kernel, "cuda")
        key = (self._chain_of(kernel) if role == "values" else None) or kernel.signature
        if key not in self._launches:
            graph = self._graph_of(kernel)
            if role is not None:
                self._launches[key] = len(flash_cost.chain_features(graph, kernel)) if role == "values" else 0
            else:
                self._launches[key] = 1 if graph is None else _launches(graph.module[kernel.func])
        return self._launches[key]

    def wake_origin(self, device: str) -> str:
        """``"measured"`` or why :meth:`wake_cost` is a default."""
        if INLINE_TURNS:
            return (f"inline turns (INLINE_TURNS): {INLINE_TURN_S.get(device, 0.0) * 1e6:.0f} us, "
                    "from a traced run, not the profile")
        if self._overheads(device).wake_s is not None:
            return "measured"
        return (f"not measured ({self._where()} is older than the wake cost): default "
                f"{DEFAULT_WAKE_S.get(device, 0.0) * 1e6:.0f} us")

    def scaled(self, gpu: float = 1.0, link: float = 1.0) -> "CostModel":
        """A what-if copy: CUDA kernels ``gpu`` x slower, link bandwidth ``link`` x narrower."""
        out = CostModel(self.profile, predict=self.predict, gpu_scale=self.gpu_scale * gpu,
                        link_scale=self.link_scale * link, weight_bandwidth=self.weight_bandwidth,
                        cache_bytes=self.cache_bytes, _checked=True)  # same profile, checked once
        out._graphs, out._rules, out._accesses = self._graphs, self._rules, self._accesses  # same profile
        out._launches = self._launches
        out._graph_weights = self._graph_weights
        return out


def _measured_cold_reads(profile: Profile) -> dict[str, float]:
    """Per device, the cold weight-read bandwidth ``profile`` measured
    (:attr:`Overheads.weight_read_Bps`); devices it did not measure are left out."""
    return {d: oh.weight_read_Bps for d, oh in profile.overheads.items() if oh.weight_read_Bps is not None}


def _recorded_caches(profile: Profile) -> dict[str, int]:
    """Per device, the last-level cache ``profile`` recorded (the CPU's,
    :attr:`Profile.cpu_llc_bytes`); empty where it recorded none."""
    llc = profile.cpu_llc_bytes
    return {} if llc is None else {"cpu": llc}


def _checked_cache_bytes(caches: dict[str, int]) -> dict[str, int]:
    """``caches`` as ints; ProfileError naming a device whose value is not a whole
    number of bytes >= 0 (0: nothing stays cached)."""
    out = {}
    for device, value in caches.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProfileError(f"last-level cache of {device} must be a whole number of bytes >= 0, got {value!r}")
        out[device] = value
    return out


def _checked_bandwidths(bandwidths: dict[str, float]) -> dict[str, float]:
    """``bandwidths`` as floats; ProfileError naming a device whose value is not a
    positive finite number of bytes per second."""
    out = {}
    for device, value in bandwidths.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not (v > 0 and math.isfinite(v)):
            raise ProfileError(f"weight bandwidth of {device} must be a positive number of bytes per second, "
                               f"got {value!r}")
        out[device] = v
    return out


def _launches(func) -> int:
    """0 for a PrimFunc the build rewrites into a view (TVM's ``has_reshape_pattern``, the
    test ``RewriteDataflowReshape`` applies), else 1."""
    from tvm import relax

    return 0 if relax.analysis.has_reshape_pattern(func) else 1


def _holds(graph, kernel) -> bool:
    """True when ``graph`` has ``kernel`` (same id and signature), so its module holds the PrimFunc."""
    mine = getattr(graph, "kernels", {}).get(kernel.id)
    return mine is not None and mine.signature == kernel.signature
