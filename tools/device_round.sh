#!/usr/bin/env bash
# One device call, results under $OUT (the steps still to run; issue and branch in each step's comment):
#   source .tvmpack/unpack.sh && bash tools/device_round.sh STEP
# In the order to run them (closing note of session 47, "Left open: device steps in order"):
#   125 (issue 19, session 48: the streamed layer partitions' mapped GEMV input, COPY_GPU_CONTRACTION_READS),
#   121 (the streaming-plan cuda tests with today's graph switches), 120 (issue 19, chunked refills),
#   123 (issue 19, session 48: throttled refills / small copies by kernel, after 120's probe said chunks do not help),
#   122 (issue 19, a turn's host cost: LEAN_MARKERS / DRIVER_CALLS / GROUPED_H2D),
#   117 (issue 18, corpus CPU rows in NCHW16c), 114 (issue 19, BERT-large caps), 111, 107 (issue 18, batch > 1),
#   79, 52 (profile re-recorded), 103, 97, 96, 98 (issue 18), 71 (issue 17, b32), 56 (issue 19, bf16).
# Steps that have run live in tools/device_steps_run.sh, kept runnable to reproduce their results; results files
# cite them as "tools/device_round.sh N", so such an N here says so and runs it there.
# Settings and helpers (OUT, BUDGET: default 540 s, EXPORTS, corpus, cnn_b1, blocked_ab, ...) are in
# tools/device_lib.sh, which must travel with this file.  Each step stops its work at BUDGET seconds.
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/device_lib.sh"
case "${1:-1}" in
125)  # (BUDGET=300) issue 19, the ~84 MB streamed layer partitions of llama_decode at 1/2 that span 230-390 us on the
     # GPU against 94 predicted (branch stream-gpu, bench/results/stream-gpu-partitions-2core.md).  Offline: their
     # kernels are the resident build's (CUDA source identical) and their weights are read at HBM speed elsewhere
     # (p24/p25, 63/92 MB, 60 us); what they have that the ~38 MB ones (126-135 us) lack is the gate GEMV (46 MB)
     # reading the rms norm's output, which also goes to the CPU and so is a *mapped* GPU->CPU crossing: the norm
     # writes it into pinned host memory and the GEMV reads it through PCIe once per thread block (352 x 8 KB), the
     # read COPY_TO_GPU removed from the CPU->GPU side (step 115's probe: 292 -> 61 us).  handoff.COPY_GPU_CONTRACTION_READS
     # (off): such a crossing (artifact's contraction_reads) is copied (device buffer + one d2h) instead.
     # (1) the cuda test: a CPU GEMV, then softmax -> 46 MB GEMV on the GPU with the softmax also read by the CPU:
     # results both ways = the unpartitioned build, the GPU partition's span each way ("STEP125" lines);
     # (2) tools/capped_rules_ab.py llama_decode 1/2, step 115's plan from .hold/plans119.tgz as 'hetpart' (as step
     # 122), the switch on (--set) against 'hetpart before' = off (--session-before), 3 rounds, one traced run each;
     # (3) spans-125.txt: each CUDA partition's GPU span in both traces beside the plan's prediction, the d2h copies.
     # Decides: the switch goes on if (1) passes and hetpart <= 0.97x 'hetpart before' (round medians) with the
     # ~84 MB partitions' spans down to <= ~1.6x predicted (~150 us; the ~38 MB ones' ratio); then the ~2 ms a token
     # was the mapped read.  If the spans drop but the run does not, the new d2h copies wait (their spans in (3):
     # behind a refill on the copy engine?).  If the spans stay, the read is not the cause: the next measure is
     # per-kernel GPU time of one such partition in situ (nsys / CUPTI) against the profile.
  BUDGET=300; sw=hetpart.runtime.handoff.COPY_GPU_CONTRACTION_READS
  pt="python3 -m pytest -v -s -rfE --tb=short -p no:cacheprovider -m cuda"
  python3 -c "import pytest_timeout" 2>/dev/null && pt="$pt --timeout 80"
  timeout 90 $pt tests/test_runtime_contraction_reads.py > "$OUT/pytest-125.txt" 2>&1
  mkdir -p /tmp/plans119 /tmp/plans125
  if [ -f .hold/plans119.tgz ] && tar xzf .hold/plans119.tgz -C /tmp/plans119; then
    cp /tmp/plans119/hetpart_before.plan.json /tmp/plans125/hetpart.plan.json
  fi
  left=$((BUDGET - SECONDS - 15))
  [ "$left" -ge 120 ] && timeout "$left" python3 tools/capped_rules_ab.py \
    --profile bench/results/profile-capped-nvidia-h200.json --plans /tmp/plans125 --workload zoo:llama_decode --cap 1/2 \
    --contenders hetpart --set $sw=1 --session-before $sw=0 --rounds 3 --trace "$OUT/traces-125" \
    --json "$OUT/capped-125-ab.json" > "$OUT/capped-125-ab.txt" 2>&1
  [ -f /tmp/plans125/hetpart.plan.json ] && timeout 10 python3 - "$OUT/traces-125" /tmp/plans125/hetpart.plan.json \
    > "$OUT/spans-125.txt" 2>&1 <<'PY'
import json, statistics, sys
from pathlib import Path
traces, plan = Path(sys.argv[1]), json.load(open(sys.argv[2]))
parts = {p["name"]: p for p in plan["partitions"] if p["device"] == "cuda"}
spans = {}
for f in sorted(traces.glob("*.trace.json")):
    ev = json.load(open(f)); ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    tid = next((e["tid"] for e in ev if e.get("ph") == "M" and e.get("pid") == 1 and e.get("name") == "thread_name"
                and e["args"]["name"] == "cuda stream"), None)
    xs = [e for e in ev if e.get("ph") == "X" and e.get("pid") == 1 and e.get("tid") == tid]
    spans[f.name.replace(".trace.json", "")] = {e["name"]: e["dur"] for e in xs if e["name"] in parts}
    d2h = [e for e in xs if e["name"].startswith("d2h")]
    listed = ", ".join("%s %.0f" % (e["name"], e["dur"]) for e in d2h[:12])
    print(f"{f.name}: d2h on the cuda stream {len(d2h)} ({listed})")
who = sorted(spans)
print(f"{'partition':10} {'MB':>6} {'pred us':>8} " + " ".join(f"{w:>16}" for w in who))
for n, p in parts.items():
    print(f"{n:10} {p['weight_bytes'] / 1e6:6.1f} {p['predicted_s'] * 1e6:8.0f} "
          + " ".join(f"{spans[w].get(n, float('nan')):16.0f}" for w in who))
for label, test in (("~84 MB streamed", lambda p: p["weights"] == "streamed" and p["weight_bytes"] > 80e6 and len(p["kernels"]) > 10),
                    ("~38 MB streamed", lambda p: p["weights"] == "streamed" and 30e6 < p["weight_bytes"] < 40e6),
                    ("all cuda", lambda p: True)):
    names = [n for n, p in parts.items() if test(p)]
    print(f"{label} ({len(names)}): " + "; ".join(
        f"{w} median {statistics.median([spans[w][n] for n in names if n in spans[w]] or [float('nan')]):.0f} us"
        f" sum {sum(spans[w].get(n, 0) for n in names):.0f}" for w in who))
PY
  ;;
124)  # (BUDGET=420) issue 18, batch 32 at 16 threads: step 117 (session 48) measured zoo:resnet50 b32 1.41x ORT
     # (266.2 / 188.7 ms) where per core it is 0.95x (session 45, Xeon) and session 45 measured 1.11-1.13x at 16
     # threads, before rules/cpu_blocked_conv.BATCH_PLANE_GROUPS (step 111) and BATCH_GROUP_SPLIT (step 107) were
     # merged on by per-core numbers alone.  (1) tools/nchwc_ab.py resnet50 b32, 16 threads, "before" = both
     # switches off; (2) with what is left, the same at b8.  Decides: a switch goes off if before / NCHWc < 1.0 by
     # more than the rounds' spread at either batch (then steps 111 / 107 split which of the two it is); if
     # NCHWc / ORT stays >= 1.3 with both off too, the b32 gap is elsewhere (the next step: tools/cpu_layer_gap.py
     # --block 16 --in-situ --wall at b32 names the layers).  Carry tools/nchwc_ab.py and tools/cpu_rule_ab.py.
  BUDGET=420; sw=hetpart.kernels.rules.cpu_blocked_conv
  timeout 250 python3 tools/nchwc_ab.py zoo:resnet50 --batch 32 --block 16 --threads 16 --calls 2 --rounds 3 \
    --before $sw.BATCH_PLANE_GROUPS=0 --before $sw.BATCH_GROUP_SPLIT=0 > "$OUT/blk-batch-both-resnet50-b32-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 5))
  [ "$left" -ge 90 ] && timeout "$left" python3 tools/nchwc_ab.py zoo:resnet50 --batch 8 --block 16 --threads 16 \
    --calls 3 --rounds 3 --before $sw.BATCH_PLANE_GROUPS=0 --before $sw.BATCH_GROUP_SPLIT=0 \
    > "$OUT/blk-batch-both-resnet50-b8-t16.txt" 2>&1 ;;
111)  # (BUDGET=590) issue 18 at batch > 1: the stride-1 1x1s in MLAS's pointwise order per image (branch
     # blk-batch-1x1, bench/results/cpu-batch-1x1-2core.md).  rules/cpu_blocked_conv.BATCH_PLANE_GROUPS: a batched
     # stride-1 1x1 on a plane <= 1024 pixels whose tile's weights pass 96 KiB takes PLANE_IC_GROUPS' plane schedule
     # per image -- fused(n, oc_chunk / B) parallel, input channels in L1-sized groups outside the plane's pixel
     # tiles, accumulators in the output plane -- where main runs the batched 2 x 14 row tile.  resnet50 b8 on the
     # 16-core build: 1024->256 @14x14 (x5) and 1024->512 @14x14; also inception_v3's 768->* @17x17 and 2048/1280->*
     # @8x8, googlenet's 832->* @7x7, densenet121's transition-free 1x1s @14x14 / 7x7.  Per core (dev VM, 1 thread,
     # CPU time, in situ): resnet50 0.945 / 0.963 (whole b8 0.998), inception_v3 768->* 0.80, others neutral.  Here,
     # 16 threads, tools/nchwc_ab.py NCHW / NCHW16c (after) / ORT / NCHW16c before (= the switch off): (1) resnet50
     # b8, (2) b32, (3) the test file, (4) if time is left, inception_v3 b8.
     # Decides: the switch stays on if NCHWc/before <= 1.0 at b8 and b32 (and inception_v3 b8 if run); off if > 1.01
     # at either resnet50 batch (then the per-core gain does not survive 16 cores sharing L2/L3 bandwidth).
  BUDGET=590; sw=hetpart.kernels.rules.cpu_blocked_conv
  timeout 180 python3 tools/nchwc_ab.py zoo:resnet50 --batch 8 --block 16 --threads 16 --calls 3 --rounds 3 \
    --before $sw.BATCH_PLANE_GROUPS=0 > "$OUT/blk-batch-1x1-resnet50-b8-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 60))
  [ "$left" -ge 90 ] && timeout $((left < 230 ? left : 230)) python3 tools/nchwc_ab.py zoo:resnet50 --batch 32 \
    --block 16 --threads 16 --calls 2 --rounds 3 --before $sw.BATCH_PLANE_GROUPS=0 \
    > "$OUT/blk-batch-1x1-resnet50-b32-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 3))
  [ "$left" -ge 15 ] && timeout $((left < 50 ? left : 50)) python3 -m pytest -q -p no:cacheprovider \
    tests/test_kernels_cpu_blocked_conv.py > "$OUT/pytest-blk-batch-1x1.txt" 2>&1
  left=$((BUDGET - SECONDS - 5))
  [ "$left" -ge 60 ] && f=$(cnn_b1 inception_v3) && [ -f "$f" ] && timeout "$left" python3 tools/nchwc_ab.py "$f" \
    --batch 8 --block 16 --threads 16 --calls 2 --rounds 2 --before $sw.BATCH_PLANE_GROUPS=0 \
    > "$OUT/blk-batch-1x1-inception_v3-b8-t16.txt" 2>&1 ;;
107)  # (BUDGET=590) issue 18 at batch > 1 on 16 threads: the cores' weight slices (branch blk-batch-spread,
     # bench/results/cpu-batch-spread-2core.md).  rules/cpu_blocked_conv.BATCH_GROUP_SPLIT: a batched blocked conv
     # whose batch is in its parallel tile loop, on 8+ cores, runs its block groups in p parts outside the batch --
     # fused(part, n, groups/p, rows, cols) -- where that cuts the modelled bytes into the busiest core's L2 by 25%+
     # (group_split: TVM's contiguous static chunks, an LRU of 1.5 MiB): each core keeps a weight slice and streams
     # images through it, where batch-outer (main; also ORT's MLAS NCHWc partition: n, filter set, row) gives it
     # half an image (b8) or two (b32) and all their groups' weights.  resnet50 b8: the 7x7 stage's 512 3x3 (x2,
     # p=8: 4.7 -> 1.8 MiB a core) and 512->2048 (x3, p=8: 2.1 -> 0.9); b32 also the 14x14 3x3s (x5, p=4) -- 68 MiB
     # less a core in all at b32, 12.5 at b8 (1-1.5% of the run at ~20 GB/s a core).  Per core (dev VM, 1 thread,
     # the 16-core build): b8 whole run 1.018 (noise), in situ changed kernels 0.98 / 1.03; b32 sum 1.005.  Here, 16 threads,
     # tools/nchwc_ab.py NCHW / NCHW16c (after) / ORT / NCHW16c before (= the switch off): (1) resnet50 b8,
     # (2) b32, (3) the test files, (4) if time is left, resnet50 b8 per layer in whole runs, wall time, 16 threads
     # (tools/cpu_layer_gap.py --block 16 --in-situ --wall: hetpart's kernels vs ORT's profiled nodes).
     # Decides: the switch stays on if NCHWc/before <= 1.0 at b8 and b32; off if > 1.01 at either.  Either way
     # NCHWc/ORT here against the per-core ratio (dev VM, 1 thread, the same 16-core build: 1.03-1.08x ORT at b8)
     # says how much of the 16-thread gap is the spread at all: within it, the gap is per core (the stride-1 1x1s at
     # b > 1, the md's 1-thread layer table against (4)), above it the spread -- (4) names the layers.
  BUDGET=590; sw=hetpart.kernels.rules.cpu_blocked_conv
  timeout 200 python3 tools/nchwc_ab.py zoo:resnet50 --batch 8 --block 16 --threads 16 --calls 3 --rounds 3 \
    --before $sw.BATCH_GROUP_SPLIT=0 > "$OUT/blk-batch-spread-resnet50-b8-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 60))
  [ "$left" -ge 90 ] && timeout $((left < 230 ? left : 230)) python3 tools/nchwc_ab.py zoo:resnet50 --batch 32 \
    --block 16 --threads 16 --calls 2 --rounds 3 --before $sw.BATCH_GROUP_SPLIT=0 \
    > "$OUT/blk-batch-spread-resnet50-b32-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 3))
  [ "$left" -ge 15 ] && timeout $((left < 60 ? left : 60)) python3 -m pytest -q -p no:cacheprovider \
    tests/test_kernels_cpu_blocked_conv.py tests/test_weight_prefetch.py > "$OUT/pytest-blk-batch-spread.txt" 2>&1
  left=$((BUDGET - SECONDS - 5))
  f=/tmp/resnet50-zoo-b8.onnx
  [ "$left" -ge 90 ] && { [ -f "$f" ] || python3 -c "import onnx; from hetpart import models; \
    z = models.parse_zoo_spec('zoo:resnet50:batch=8'); onnx.save(models.build(z[0], small=z[1], **z[2]), '$f')"; }
  left=$((BUDGET - SECONDS - 5))
  [ "$left" -ge 80 ] && [ -f "$f" ] && TVM_NUM_THREADS=16 timeout "$left" python3 tools/cpu_layer_gap.py "$f" \
    --block 16 --in-situ --wall --runs 10 --top 40 > "$OUT/blk-batch-spread-layer-gap-b8-t16.txt" 2>&1 ;;
114)  # (BUDGET=590) issue 19, BERT-large under caps with today's plans (branch bert-cap,
     # bench/results/capped-bert-limit.md): hetpart only, float32, at 1/2, 1/3, 1/4, records with
     # chain_bound_ms and cpu_compute_limit_ms (the table's bert rows show "-": recorded before the columns;
     # the twin offline: limit + CPU compute 8.89 / 12.54 / 14.36 ms).  Offline on the twin
     # (recorded profile) the plans predict 11.90 / 16.47 / 18.81 ms, copy-bound (97-99% of the latency on
     # the copy track), 1.05x their copy floor at the model's 51.2 GB/s link.  Decides: measured within 15%
     # of predicted and at most ~1.15x the copy floor at the run's h2d (10.47 / 14.49 / 16.50 ms at 55.5 GB/s)
     # confirms the gap to the issue's limit is the limit's (CPU compute and ring/activations not counted),
     # not the planner's; chain_bound_ms above limit_ms on these rows says the limit is not reachable.
  BUDGET=590
  timeout $((BUDGET - 10)) python3 bench/capped.py --workloads bert_large --caps 1/2,1/3,1/4 --contenders hetpart \
    --budget $((BUDGET - 20)) --reserve 60 --out "$OUT/capped-bert-114.json" > "$OUT/capped-bert-114.txt" 2>&1 ;;
117)  # (BUDGET=590) issue 18, the all-CPU corpus rows at 16 threads as the default all-CPU path builds them (NCHW16c on
     # AVX-512: hetpart.importer.conv_layout.default_block), against ONNX Runtime on every core, in one call (branch
     # cpu-gap, bench/results/cpu-pad-rows-2core.md).  The corpus CPU records in bench/results/corpus-nvidia-h*.json are
     # stale (before the NCHW16c path); per core (dev VM, 1 thread, CPU time, today) every model is at or under ORT:
     # densenet121 0.92 / 0.90 (b1 / b32), mobilenet_v2 0.97 / 0.98, googlenet 0.98, zoo:resnet50 1.01 (b1; 0.95 at b32
     # on the Xeon, session 45), inception_v3 1.01 (session 45, Xeon).  (1) bench/corpus.py --devices cpu
     # --cpu-conv-block 16 --time, b1: zoo:resnet50, densenet121, mobilenet_v2, googlenet, inception_v3 (torchvision
     # exports; records say layout NCHW16c, peer onnxruntime_cpu, peer_ms ORT at physical_cores threads); (2) the same,
     # zoo:resnet50 b32, into the same file; (3) with what is left, tools/nchwc_ab.py zoo:resnet50 b1 at 16 threads with
     # cpu_blocked_conv.PADDING_ROWS=1 as the "before" side (off by default: the padding pass as rows, the column loop
     # partitioned; per core 0.994 / 1.002 of off on the changed kernels, inside the noise).
     # Decides: a row with hetpart_ms / peer_ms <= 1.00 meets issue 18 at 16 threads and replaces the stale record (its
     # key has conv_block 16); a row over 1.0 that is <= 1.0 per core (all but resnet50 b1's 1.01) puts its gap in how
     # the work spreads over 16 cores, not in the kernels -- the next step there is tools/cpu_layer_gap.py --in-situ
     # --wall on that model.  PADDING_ROWS is turned on only if (3)'s before (on) / NCHWc (off) <= 0.98 (a gain past
     # the 16-thread noise); else it stays off.
  BUDGET=590; f="$OUT/corpus-cpu-nchw16c.json"
  timeout 340 python3 bench/corpus.py --devices cpu --batches 1 --time --cpu-conv-block 16 --budget 320 \
    --export-dir "$EXPORTS" --models zoo:resnet50,mobilenet_v2,googlenet,densenet121,inception_v3 \
    --out "$f" > "$OUT/logs/corpus-cpu-b1-nchw16c.log" 2>&1
  left=$((BUDGET - SECONDS - 110)); [ "$left" -gt 150 ] && left=150
  [ "$left" -ge 60 ] && timeout "$left" python3 bench/corpus.py --devices cpu --batches 32 --time --cpu-conv-block 16 \
    --budget $((left - 15)) --export-dir "$EXPORTS" --models zoo:resnet50 --skip-done "$f" --out "$f" \
    > "$OUT/logs/corpus-cpu-b32-nchw16c.log" 2>&1
  left=$((BUDGET - SECONDS - 5))
  [ "$left" -ge 50 ] && timeout "$left" python3 tools/nchwc_ab.py zoo:resnet50 --block 16 --threads 16 --calls 10 \
    --rounds 3 --before hetpart.kernels.rules.cpu_blocked_conv.PADDING_ROWS=1 > "$OUT/pad-rows-resnet50-b1-t16.txt" 2>&1 ;;
79)  # (BUDGET=590) issue 18 at batch 32 all-CPU, the corpus transformers (branch cpu-b32-text,
     # bench/results/cpu-b32-text-2core.md): they had CPU rows at batch 1 only.  On the 2-core AVX2 box, 1 thread, by
     # CPU time, the zoo's stand-ins (2 layers) were under ORT at b1/b8/b32 except a CLIP-text-like one (seq 77:
     # 1.33x b1, 1.35x b8, 1.18x b32), swin (1.06x / 1.13x) and llama with its lm_head (1.04x b1, 0.97x b32).  The
     # switch there (register_tile.WIDE_ROWS_ROW_MAJOR off: a row-major matmul with 77 rows keeps 6 rows, not 7 x 2
     # spilled vectors) changes no kernel on AVX-512 (rule_switch_tir_diff: 0 of 15 of the CLIP-like stand-in, 0 of
     # 39 of convnext), so only the rows are recorded here: (1) the corpus's all-CPU b32 records (bench/corpus.py,
     # device cpu, peer onnxruntime_cpu, --repeat 5), worst-on-the-box first; (2) if time is left, which kernels of
     # the clip_text b32 export the switch changes for this host (expected: none)
  BUDGET=590
  timeout 540 python3 bench/corpus.py --devices cpu --batches 32 --time --repeat 5 --budget 530 --export-dir "$EXPORTS" \
    --models clip_text,llama,swin_t,whisper_encoder,vit_b_16,bert,gpt2,t5_encoder,distilbert,roberta \
    --out "$OUT/corpus-cpu-b32-text.json" > "$OUT/logs/corpus-cpu-b32-text.log" 2>&1
  left=$((BUDGET - SECONDS - 5))
  [ "$left" -ge 20 ] && [ -f "$EXPORTS/clip_text-b32.onnx" ] && timeout "$left" python3 tools/rule_switch_tir_diff.py \
    "$EXPORTS/clip_text-b32.onnx" --before hetpart.kernels.register_tile.WIDE_ROWS_ROW_MAJOR=1 \
    > "$OUT/b32-text-switch-diff.txt" 2>&1 ;;
52)  # (BUDGET=580) issue 18's "profile re-recorded": the shipped profile's timings were taken by profile()
     # with build workers that could still be starting beside the timing (the 4 ms tick, fixed in BuildPool.start):
     # every zoo kernel on both devices again into $OUT/h200.json (resumes: to continue a cut-off run, copy it
     # to bench/results/h200-rerecord.json first), then how it differs from the shipped one
  [ -f bench/results/h200-rerecord.json ] && cp bench/results/h200-rerecord.json "$OUT/h200.json"
  timeout $((BUDGET - 40)) python3 tools/record_profile.py --out "$OUT/h200.json" > "$OUT/logs/record.txt" 2>&1
  python3 tools/compare_profiles.py hetpart/costmodel/recorded/h200.json "$OUT/h200.json" --top 15 \
    > "$OUT/profile-compare.txt" 2>&1 ;;
103)  # (BUDGET=590) build (compile) time of all-CPU models at 16 cores (branch build-time,
     # bench/results/build-time-2core.md).  Two switches, both off = before (= main): (a)
     # importer.constant_builds.ENABLED: FoldConstant builds each distinct function once per import, ahead on
     # threads (it built every call site: 85 builds of 21 distinct functions on zoo:resnet50:small NCHW16c; 32 of
     # densenet121 NCHW16c's 35 s import on the dev box); (b) kernels.parallel_build.ENABLED: a CPU build's
     # PrimFuncs scheduled on threads, lowered and code-generated as 2 LLVM modules per CPU on threads, objects
     # written on threads (TIR passes + LLVM were 33 of densenet121 NCHW16c's 39 s build, on one core).
     # Generated code unchanged (tools/build_code_hash.py: the import's folded constants, every kernel's
     # scheduled TIR and every symbol's disassembly equal to main's on the three builds).  Here:
     # bench/build_stages.py per model, one process each, side parallel (both on) then serial (both off: it gets
     # the warm process, so the gain is not overstated): import and compile wall seconds and seconds per stage.
     # Decides: both stay on if parallel's import + compile wall < serial's on every model; the stages left
     # (schedule's Python under the GIL; link; load) name what a next step could take on.
  BUDGET=590
  for spec in "zoo:resnet50:16:150" "zoo:resnet50:0:120" "densenet121:16:0"; do
    IFS=: read -r m b cap <<< "${spec#zoo:}"; [ "${spec#zoo:}" != "$spec" ] && m=zoo:$m || m=$(cnn_b1 "$m")
    left=$((BUDGET - SECONDS - 10)); [ "$cap" -gt 0 ] && [ "$left" -gt "$cap" ] && left=$cap
    name=$(basename "${m#zoo:}" .onnx)
    [ "$left" -ge 40 ] && timeout "$left" python3 bench/build_stages.py "$m" --blocks "$b" --sides parallel serial \
      --json "$OUT/build-time-$name-b$b.json" 2>&1 | grep -v "Unknown pragma" > "$OUT/build-time-$name-b$b.txt"
  done ;;
97)  # (BUDGET=590) issue 18, the channel-blocked import's parallel structure at 16 threads (branch blk-threads,
     # bench/results/cpu-blocked-parallel-audit.md).  tools/parallel_audit.py (16-core target, per-core ms timed on
     # the 2-vCPU AVX-512 dev box) found densenet121 NCHW16c's 58 concat+BN+ReLU kernels serial (2.3 ms of 38 ms per
     # core, modelled 5.9 ms at 16 threads against an ideal 2.4) and the stem-pool NCHW -> NCHW16c transform serial
     # (densenet121, googlenet: ~0.23 ms).  Two switches, both off = before (= main): (a) a blocked concat runs in
     # parallel over plane chunks sized for the cores, one launch (cpu_injective.PARALLEL_BLOCKED_CONCAT); (b) a nest
     # writing strided (the layout transform) is parallel from 16 Ki outputs (cpu_injective.STRIDED_WRITES_PARALLEL).
     # Per core (dev box, 16-core build, 1 thread, CPU time) densenet121 NCHW16c after/before 1.01 (noise range).
     # Here: tools/nchwc_ab.py NCHW / NCHW16c (after) / ORT / NCHW16c before, 16 threads, b1: densenet121, googlenet,
     # mobilenet_v2, resnet50.  Decides: (1) the switches stay on if after <= before on each; (2) the blocked import
     # can become the default for all-CPU plans if NCHW16c (after) <= NCHW on every one of the four ("NCHWc/NCHW"
     # <= 1.00); a model above names what is left (the audit's table for it: tools/parallel_audit.py MODEL --measure).
  BUDGET=590; off="--before hetpart.kernels.rules.cpu_injective.PARALLEL_BLOCKED_CONCAT=0"
  off="$off --before hetpart.kernels.rules.cpu_injective.STRIDED_WRITES_PARALLEL=0"
  blocked_ab blk-threads "densenet121:290 googlenet:100 mobilenet_v2:75 resnet50:0" $off ;;
96)  # (BUDGET=590) issue 18 at batch > 1 in the channel-blocked import (branch blk-batch,
     # bench/results/cpu-batch-blocked-1core.md).  Switches of rules/cpu_blocked_conv, batch 1 unchanged by all:
     # (a) BATCH_FULL_REGISTERS: a batched blocked conv on 32 registers whose reduction ic*kh*kw >= 576 (3x3s of >= 64
     # channels, 1x1s of >= 1024) leaves 1 register spare, not 3: 2 oc blocks x 14 columns (28 accumulators) on
     # 14/28/56-wide outputs instead of 2 x 7 / 2 x 8; (b) BATCH_PADDING_PER_IMAGE: a padded batched blocked conv pads one
     # image at a time under a serial batch loop, its tiles' parallel loop per image (before: the whole batch padded
     # in one pass, the tiles' loop fused over the batch).  On the 2-vCPU AVX-512 dev VM, 1 thread, CPU time, b8:
     # the changed convs 0.83-0.97x alone, whole models in the bench file.  Here, 16 threads, batch 32,
     # tools/nchwc_ab.py NCHW / NCHW16c (after) / ORT / NCHW16c before: (1) resnet50, before = (b) off; (2) resnet50,
     # before = (a) off; (3) resnet50, "before" = (c) BATCH_IMAGES_PARALLEL=1 (off by default: a padded conv's batch
     # loop the parallel one, each thread padding and tiling whole images, one fork-join per conv instead of two per
     # image); (4) googlenet, before = (a) and (b) off; (5) densenet121 likewise if time is left; (6) the test file.
     # Decides: (a), (b) stay on if their row's NCHWc/before <= 1.0; > 1.02 turns one off (for (b): 64 fork-joins per
     # padded conv where there were 2, or the per-core gain gone at 16 threads); (c) turns on if (3)'s NCHWc/before
     # > 1.02 (its side faster), which also answers (b)'s fork-join cost.  Dev VM, 1 thread, CPU time, resnet50 b32:
     # after 1.076x ORT, before 1.132x (0.951).  NCHW16c/ORT at b32 is issue 18's per-batch blocked number.
  BUDGET=590; sw=hetpart.kernels.rules.cpu_blocked_conv
  timeout 150 python3 tools/nchwc_ab.py zoo:resnet50 --batch 32 --block 16 --threads 16 --calls 3 --rounds 3 \
    --before $sw.BATCH_PADDING_PER_IMAGE=0 > "$OUT/blk-batch-resnet50-b32-t16-padding.txt" 2>&1
  timeout 140 python3 tools/nchwc_ab.py zoo:resnet50 --batch 32 --block 16 --threads 16 --calls 3 --rounds 3 \
    --before $sw.BATCH_FULL_REGISTERS=0 > "$OUT/blk-batch-resnet50-b32-t16-registers.txt" 2>&1
  timeout 140 python3 tools/nchwc_ab.py zoo:resnet50 --batch 32 --block 16 --threads 16 --calls 3 --rounds 3 \
    --before $sw.BATCH_IMAGES_PARALLEL=1 > "$OUT/blk-batch-resnet50-b32-t16-images-parallel.txt" 2>&1
  g=$(cnn_b1 googlenet)
  left=$((BUDGET - SECONDS - 20)); [ "$left" -gt 130 ] && left=130
  [ "$left" -ge 60 ] && timeout "$left" python3 tools/nchwc_ab.py "$g" --batch 32 --block 16 --threads 16 --calls 3 \
    --rounds 3 --before $sw.BATCH_FULL_REGISTERS=0 --before $sw.BATCH_PADDING_PER_IMAGE=0 \
    > "$OUT/blk-batch-googlenet-b32-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 40))
  d=; [ "$left" -ge 100 ] && d=$(cnn_b1 densenet121)
  [ "$left" -ge 100 ] && timeout "$left" python3 tools/nchwc_ab.py "$d" --batch 32 --block 16 --threads 16 --calls 3 \
    --rounds 3 --before $sw.BATCH_FULL_REGISTERS=0 --before $sw.BATCH_PADDING_PER_IMAGE=0 \
    > "$OUT/blk-batch-densenet121-b32-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 3))
  [ "$left" -ge 15 ] && timeout "$left" python3 -m pytest -q -p no:cacheprovider tests/test_kernels_cpu_blocked_conv.py \
    > "$OUT/pytest-blk-batch.txt" 2>&1 ;;
98)  # (BUDGET=590) issue 18, googlenet / inception_v3 / the depthwise nets in the channel-blocked import per core
     # (branch blk-incep, bench/results/cpu-incep-blocked-1core.md).  Six switches, all off = before: (a)
     # cpu_blocked_conv.PLAIN_INPUT: the NCHW->NCHWc stem conv on the blocked tile; (b) blocked_sink.MAX_STEM_WINDOW
     # 9 -> 49: googlenet's (and resnet50's) 7x7 stem writes blocked (no transform after its pool); (c)
     # cpu_matmul.GEMV_ROW_STREAM: a batch-1 head Gemm of >= 1 MiB streams its weight rows (one column part per
     # core); (d) cpu_blocked_conv.PLANE_1X1: inception_v3's ragged 17x17 1x1s tile the fused plane; (e)
     # fast_exp.SHORT_SIGMOID: sigmoid from exp(-|x|) (EfficientNet's SiLU); (f) separable_pool.BLOCKED: a blocked
     # 3x3 s1 pool as a separable pool (parallel over planes only).  On the 2-vCPU AVX-512 dev VM, 1 thread, CPU
     # time, NCHW16c x ORT before -> after: googlenet 1.117 -> 1.077, inception_v3 1.094 -> 1.065, mobilenet_v2
     # 1.077 -> 1.026, zoo:mobilenet 1.007 -> 0.973, zoo:efficientnet 1.175 -> 0.850, resnet50 1.159 -> 1.149.
     # Here: (1) tools/nchwc_ab.py NCHW / NCHW16c after / ORT / NCHW16c before at 16 threads, per net in this
     # order; (2) if time is left, (c)+(e) on the default NCHW build (they change it too) at 16 threads; (3) the
     # test file.  Decides: the switches stay on if (1) NCHWc/before <= 1.00 on every net (noise: +-2%); a net at
     # > 1.02 means a 16-thread cost of (c) (fewer, narrower column parts) or (f) (12-52 planes for 16 cores) --
     # the next call A/Bs those two alone there; blocked-by-default for googlenet / inception_v3 needs (1)'s
     # NCHWc/ORT < NCHW/ORT.
  BUDGET=590
  off="--before hetpart.kernels.rules.cpu_blocked_conv.PLAIN_INPUT=0 --before hetpart.importer.blocked_sink.MAX_STEM_WINDOW=9"
  off="$off --before hetpart.kernels.rules.cpu_matmul.GEMV_ROW_STREAM=0 --before hetpart.kernels.rules.cpu_blocked_conv.PLANE_1X1=0"
  off="$off --before hetpart.kernels.fast_exp.SHORT_SIGMOID=0 --before hetpart.kernels.separable_pool.BLOCKED=0"
  for m in "$(cnn_b1 googlenet)" "$(cnn_b1 inception_v3)" zoo:efficientnet "$(cnn_b1 mobilenet_v2)" zoo:mobilenet; do
    left=$((BUDGET - SECONDS - 60)); name=$(basename "${m#zoo:}" .onnx); name=${name%-b1}
    [ "$left" -ge 60 ] && timeout $((left < 130 ? left : 130)) python3 tools/nchwc_ab.py "$m" --block 16 --threads 16 \
      --calls 10 --rounds 3 $off > "$OUT/blk-incep-$name-t16.txt" 2>&1
  done
  left=$((BUDGET - SECONDS - 30))
  [ "$left" -ge 60 ] && timeout "$left" python3 tools/cpu_rule_ab.py "$(cnn_b1 mobilenet_v2)" zoo:efficientnet --threads 16 \
    --calls 10 --rounds 3 --before hetpart.kernels.rules.cpu_matmul.GEMV_ROW_STREAM=0 \
    --before hetpart.kernels.fast_exp.SHORT_SIGMOID=0 > "$OUT/blk-incep-nchw-t16.txt" 2>&1
  left=$((BUDGET - SECONDS - 3))
  [ "$left" -ge 20 ] && timeout "$left" python3 -m pytest -q -p no:cacheprovider tests/test_kernels_blocked_stem_gemv.py \
    > "$OUT/pytest-blk-incep.txt" 2>&1 ;;
71)  # (BUDGET=300; 590 adds (4)) issue 17 at batch 32 (branch gpu-b32-conv; bench/results/gpu-b32-conv-analysis.md):
     # the corpus's b32 rows put hetpart 2-2.7x behind PyTorch's CUDA graph, but hetpart_ms is Session.run from numpy
     # to numpy (19.3 MB of input copied in at b32, timed beside 4 compiles) and peer_ms the graph's GPU time alone;
     # session 6 timed ResNet-50 b32's kernels at 4.29 ms.  Of the kernels, ResNet-50's 3x3 convolutions at 28x28-7x7
     # and its 1x1 stride-2 one at 14x14 (14 launches, ~1.56 ms of ~4.1, cuDNN ~1.11) ran with no overlap of a
     # slice's loads and MMAs (bounds-tested loads: cp.async measured slower) on grids of 3-6 blocks per SM;
     # gpu_tensor_core.REGISTER_PREFETCH now loads slice k+1 into registers during slice k's MMAs.
     # (1) the prefetch's cuda tests against ORT and the tensor-core rule's; (2) the changed kernels timed alone,
     # switch off (before) / on in alternating rounds (ResNet-50 and ConvNeXt-T zoo graphs, b32); (3) the corpus's b32
     # fp32 (TF32) rows for resnet50 and googlenet, now with peer_host_ms (the graph timed numpy to numpy, as hetpart);
     # (4) with time left, resnet50 b32's per-kernel table and where its forward's wall time goes
  timeout 100 python3 -m pytest -m cuda -q -rf -p no:cacheprovider --timeout 60 \
    tests/test_kernels_tc_prefetch.py tests/test_kernels_tensor_core.py > "$OUT/logs/cuda-tests.txt" 2>&1
  left=$((BUDGET - SECONDS - 130))
  [ "$left" -ge 40 ] && timeout $((left < 90 ? left : 90)) python3 tools/gpu_switch_ab.py zoo:resnet50 zoo:convnext \
    --batch 32 --before hetpart.kernels.rules.gpu_tensor_core.REGISTER_PREFETCH=0 --rounds 3 \
    --out "$OUT/prefetch-ab-b32.json" --md "$OUT/prefetch-ab-b32.md" > "$OUT/logs/prefetch-ab.txt" 2>&1
  left=$((BUDGET - SECONDS - 10))
  [ "$left" -ge 60 ] && timeout $((left < 280 ? left : 280)) python3 bench/corpus.py --devices cuda --batches 32 --time \
    --quiet-timing --budget $(((left < 280 ? left : 280) - 15)) --export-dir "$EXPORTS" --models resnet50,googlenet \
    --out "$OUT/corpus-b32-fp32.json" > "$OUT/logs/corpus-b32-fp32.log" 2>&1
  left=$((BUDGET - SECONDS - 10))
  [ "$left" -ge 120 ] && timeout "$left" python3 tools/gpu_kernel_profile.py resnet50 --batch 32 --runs 10 \
    --export-dir "$EXPORTS" --json "$OUT/kernels-resnet50-b32.json" --md "$OUT/gpu-b32-kernels-resnet50.md" \
    > "$OUT/logs/kernel-profile-b32.txt" 2>&1 ;;
56)  # (BUDGET=590) issue 19, hetpart bf16's error on llama_decode at 1/2 (2.05e-2 > the 2e-2 tolerance): rounding
     # the weights alone gives 1.663e-2 at 22 layers in ONNX Runtime (lm_head kept float32: 1.670e-2, so the
     # drift is the layers'), leaving ~4e-3 to the run; the bf16 contender with TF32 on and off (HETPART_TF32=0:
     # activations not rounded to TF32 -- a decode step's M=1 products are bandwidth-bound, so off may cost nothing)
  BUDGET=540 RESERVE=40 timeout 580 bash tools/capped_round.sh bf16tf32 > "$OUT/logs/capped-bf16tf32-step.txt" 2>&1 ;;
121)  # (BUDGET=300) the cuda-marked tests of streaming plans with today's defaults: since session 47
     # compiler.extract.STREAMING_CUDA_GRAPHS and STATIC_IO_CUDA_GRAPHS are on (every CUDA partition of a streaming
     # plan built with every parameter fixed, a VM per buffer-address set; bench/results/capped-stream-graphs-nvidia-h100.md).
     # Step 118 ran the static-I/O decoder test and the mixed resident/streamed test with it on (passed); these never
     # ran with it on: streaming on the GPU against resident, the GPU GEMM between CPU partitions (streamed), external
     # weights on a real GPU.  Carry the four test files (and hetpart/costmodel/recorded/h200.json, moved for room) as
     # a .tgz.  Decides: all pass -> the switches' defaults stand; a failure with STATIC_IO on that passes with
     # --set ...STATIC_IO_CUDA_GRAPHS=0 (rerun it that way) -> the switch goes off until fixed.
  BUDGET=300; pt="python3 -m pytest -v -rfE --tb=short -p no:cacheprovider -m cuda"
  python3 -c "import pytest_timeout" 2>/dev/null && pt="$pt --timeout 120"
  timeout $((BUDGET - 10)) $pt tests/test_runtime_streaming.py tests/test_runtime_static_io.py \
    tests/test_kernels_prepack.py tests/test_compiler_external_weights.py > "$OUT/pytest-121.txt" 2>&1 ;;
120)  # (BUDGET=590) issue 19, chunked ring refills (branch copy-chunks; weight_stream.CHUNKED_REFILLS, off, chunk
     # REFILL_CHUNK_BYTES = 8 MiB).  bench/results/capped-decode-gap-s47.md: a CUDA partition's 8 KB input copy (compute
     # stream) ended 4-6 us after the in-flight 46-92 MB weight refill (copy stream) landed, every time (8/8, 6/6, 3/3
     # in three traces), ~1.6 ms a token on the fast host; likely one copy engine serving both streams' H2D in order.
     # With the switch a refill is ceil(n / 8 MiB) cudaMemcpyAsync (~11 for 92 MB), its landed event after the last.
     # (1) tools/copy_queue_probe.py: a 92 MB pinned copy through CopyEngine.fill (one copy; chunks of 4/8/16 MiB),
     # 0.3 ms later two 8 KB copies on another stream: each small copy's end against the big one's landing, the big
     # copy's time and the host's enqueue time.  (2) the cuda test of chunked refills (odd chunk, bit-identical to one
     # copy).  (3) tools/capped_rules_ab.py llama_decode at 1/2, plans from .hold/plans119.tgz: 'hetpart' = step 115's
     # plan (main's default plan, 14 streamed layers; its trace has the 1.6 ms), the switch on for the run (--set),
     # 'hetpart before' = the same plan with it off (--session-before: CopyEngine reads it when a session opens),
     # beside the llama.cpp-style rule, 3 rounds, one traced run each.  (4) with >= 220 s left, the same A/B on the
     # launch-price plan (plans119's 'hetpart', GRAPHLESS_CUDA_LAUNCH set as in step 119; its refills are twice as large).
     # Decides: CHUNKED_REFILLS on if (1)'s 8 MiB row has no small copy that waited (ends well before the landing,
     # "waited: 0") and (2) passed and hetpart <= 0.97x 'hetpart before' in (3) (medians of the rounds); (1)'s big_ms
     # and enqueue_us rows say what chunking costs (device, host) for the cost model.
  BUDGET=590; sw=hetpart.runtime.weight_stream.CHUNKED_REFILLS
  timeout 60 python3 tools/copy_queue_probe.py --chunks 0,4194304,8388608,16777216 --reps 20 \
    --json "$OUT/copy-queue-probe.json" > "$OUT/copy-queue-probe.txt" 2>&1
  timeout 100 python3 -m pytest -m cuda -q -rf -p no:cacheprovider --timeout 90 tests/test_runtime_streaming.py \
    -k chunked > "$OUT/pytest-chunked.txt" 2>&1
  mkdir -p /tmp/plans119 /tmp/plans120
  if [ -f .hold/plans119.tgz ] && tar xzf .hold/plans119.tgz -C /tmp/plans119; then
    cp /tmp/plans119/hetpart_before.plan.json /tmp/plans120/hetpart.plan.json
    cp /tmp/plans119/llamacpp-style_rule.plan.json /tmp/plans120/
  fi
  ab() {  # ab NAME PLANS CONTENDERS [ARGS...]: the switch on for the run, off for 'hetpart before'
    local name=$1 plans=$2 who=$3 left; shift 3
    left=$((BUDGET - SECONDS - 10)); [ "$left" -gt 330 ] && [ "$name" = chunks ] && left=330
    [ "$left" -ge 150 ] && timeout "$left" python3 tools/capped_rules_ab.py \
      --profile bench/results/profile-capped-nvidia-h200.json --plans "$plans" --workload zoo:llama_decode --cap 1/2 \
      --contenders "$who" --set $sw=1 --session-before $sw=0 "$@" --rounds 3 --trace "$OUT/traces-$name" \
      --json "$OUT/capped-$name-ab.json" > "$OUT/capped-$name-ab.txt" 2>&1
  }
  ab chunks /tmp/plans120 "hetpart,llama.cpp-style rule"
  [ $((BUDGET - SECONDS)) -ge 220 ] && ab chunks-graphless /tmp/plans119 hetpart \
    --set hetpart.partitioner.layout.GRAPHLESS_CUDA_LAUNCH=1 ;;
123)  # (BUDGET=420) issue 19, the small input copy that waits for a weight refill: two remedies (branch copy-queue,
     # bench/results/copy-queue-2core.md).  Step 120's probe (H100, session 48): chunks enqueued at once do not help --
     # the copy engine serves submitted H2D copies in submission order across streams, so an 8 KB input copy submitted
     # after the chunks still waits for all of them (waited 20/20 at every chunk size).  (a) weight_stream.THROTTLED_REFILLS
     # (off; THROTTLE_IN_FLIGHT K): the refill's 8 MiB chunks submitted by the CopyEngine's copier thread, chunk i only
     # once chunk i - K landed (blocking event wait), so a small copy waits <= K chunks (~170 us each).  (b)
     # runtime.small_copy.SMALL_H2D_BY_KERNEL (off; <= 64 KiB): the CPU->GPU crossing copied by a TVM kernel on the
     # compute stream reading the pinned buffer through its mapped pointer (SM loads, not the copy engine).
     # (1) tools/copy_queue_probe.py, 92 MB + two 8 KB copies 0.3 ms later: one copy, 8 MiB chunks at once (step 120's
     # rows), throttled K=1 / K=2 at 8 MiB, K=2 at 4 MiB, and the kernel copy: per row the small copies' duration and
     # end against the landing, big_ms, the caller's enqueue, the copier thread's submit time and CPU time, bytes read
     # back.  The better remedy = the row (throttled or kernel) with the least small-copy duration whose bytes are
     # identical and whose big_ms <= 1.05x one copy's; written to copy-queue-choice.txt.  (2) the cuda tests of both
     # (bit-identical to the plain copy).  (3) tools/capped_rules_ab.py llama_decode 1/2, plans from .hold/plans119.tgz
     # as step 120 (its 'hetpart_before.plan.json' as 'hetpart'), the chosen switch on for 'hetpart' (--set) and off for
     # 'hetpart before' (--session-before: both switches are read when a session opens), beside the llama.cpp-style
     # rule, 3 rounds, one traced run each.
     # Decides: a switch goes on if its probe row has "waited: 0 / 0" (the small copies end well before the landing),
     # its bytes are identical, (2) passes and, for the chosen one, hetpart <= 0.97x 'hetpart before' in (3) (medians);
     # the other remedy stays off unless the lead A/Bs it too (its probe row says whether it would pay).  (1)'s
     # copier_cpu_us and big_ms say what throttling costs the host and the copy.
  BUDGET=420; ws=hetpart.runtime.weight_stream; sc=hetpart.runtime.small_copy
  timeout 90 python3 tools/copy_queue_probe.py --chunks 0,8388608 --throttle 1:8388608,2:8388608,2:4194304 \
    --kernel --reps 20 --json "$OUT/copy-queue-probe.json" > "$OUT/copy-queue-probe.txt" 2>&1
  python3 - "$OUT/copy-queue-probe.json" > "$OUT/copy-queue-choice.txt" 2>&1 <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["variants"]
one = next(r for r in rows if r["chunk"] is None and not r["kernel"])
ok = [r for r in rows if (r["throttle"] or r["kernel"]) and all(r["small_bytes_identical"])
      and r["big_ms"] <= 1.05 * one["big_ms"]]
best = min(ok, key=lambda r: max(r["small_us"]), default=None) or next(r for r in rows if r["kernel"])
sw = "hetpart.runtime.small_copy.SMALL_H2D_BY_KERNEL" if best["kernel"] else \
    "hetpart.runtime.weight_stream.THROTTLED_REFILLS"
print(f"chosen: {best['label']} (small copies {max(best['small_us']):.1f} us, waited {best['waited']}, "
      f"big {best['big_ms']:.3f} ms vs one copy {one['big_ms']:.3f})")
print("SWITCH", sw, best["throttle"] or 2)
PY
  read -r _ sw k < <(grep '^SWITCH' "$OUT/copy-queue-choice.txt") || { sw=$sc.SMALL_H2D_BY_KERNEL; k=2; }
  pt="python3 -m pytest -v -rfE --tb=short -p no:cacheprovider -m cuda"
  python3 -c "import pytest_timeout" 2>/dev/null && pt="$pt --timeout 80"
  timeout 100 $pt tests/test_runtime_small_copy.py tests/test_runtime_streaming.py -k "kernel or throttled" \
    > "$OUT/pytest-123.txt" 2>&1
  mkdir -p /tmp/plans119 /tmp/plans123
  if [ -f .hold/plans119.tgz ] && tar xzf .hold/plans119.tgz -C /tmp/plans119; then
    cp /tmp/plans119/hetpart_before.plan.json /tmp/plans123/hetpart.plan.json
    cp /tmp/plans119/llamacpp-style_rule.plan.json /tmp/plans123/
  fi
  left=$((BUDGET - SECONDS - 10))
  [ "$left" -ge 150 ] && timeout "$left" python3 tools/capped_rules_ab.py \
    --profile bench/results/profile-capped-nvidia-h200.json --plans /tmp/plans123 --workload zoo:llama_decode \
    --cap 1/2 --contenders "hetpart,llama.cpp-style rule" --set "$sw=1" --set "$ws.THROTTLE_IN_FLIGHT=$k" \
    --session-before "$sw=0" --rounds 3 --trace "$OUT/traces-copy-queue" --json "$OUT/capped-copy-queue-ab.json" \
    > "$OUT/capped-copy-queue-ab.txt" 2>&1 ;;
122)  # (BUDGET=300) issue 19, the host cost of a streaming plan's CPU->CUDA->CPU turn (branch turn-cost,
     # bench/results/turn-cost-2core.md).  Step 119's trace: ~550 us a turn on the H100 (11 a token, ~6 ms of ~24)
     # where ~120 were predicted; offline (null streams) the runtime's Python is ~45-55 us a turn, and a turn makes
     # ~15-18 CUDA runtime calls: the rest is those calls, TVM's launch and the waits.  Three switches, each read
     # when a session opens: executor.LEAN_MARKERS (on): untimed runs record no marker after an input copy or a
     # non-streamed launch, a mapped output is read on its launch's marker (records 7.5 -> 4.0 a turn in the small
     # llama_decode); cuda_api.DRIVER_CALLS (off): event record / stream wait / event sync / pinned copies through
     # libcuda with ctypes instead of cuda-bindings' wrappers; handoff.GROUPED_H2D (off): a CPU partition's outputs
     # read on the GPU in one block, one copy (llama_decode's turns copy two 8 KB inputs; s47 saw the second wait
     # ~1.6 ms a token behind the weight refill).  (1) the cuda tests: results bit for bit with each switch on and
     # off; (2) tools/turn_cost.py on the GPU, the small llama_decode (6 turns, caches on device, 2 rounds a side,
     # sides alternating): 'after' = all three on, 'ungrouped' = GROUPED_H2D off, 'lean' = only LEAN_MARKERS on,
     # 'before' = all off -- host us a turn, the phase table per stage, the host us of one stream call of each kind;
     # (3) tools/capped_rules_ab.py llama_decode at 1/2 (step 115's plan as 'hetpart', as step 120) with DRIVER_CALLS
     # and GROUPED_H2D on (--set; only if (1) passed, else LEAN_MARKERS alone) against 'hetpart before' = all off
     # (--session-before), the rule beside, 3 rounds, one traced run each (a traced run marks every operation: the
     # traces differ by the other two switches; the s47 second-input-copy wait shows on their cuda stream tracks);
     # (4) with time left, (2)'s build with TVM_THREAD_POOL_SPIN_COUNT=0 ('after' only).
     # Decides (host us a turn in (2); neighbouring sides differ by one switch): DRIVER_CALLS on if (1) passes and
     # 'ungrouped' / 'lean' <= 0.9; LEAN_MARKERS stays on if 'lean' / 'before' <= 1.0; GROUPED_H2D on if (1) passes,
     # 'after' / 'ungrouped' <= 1.0 and (3)'s traces show a turn's input copy no longer waiting for the refill; all
     # three only if (3)'s hetpart <= 'hetpart before' (round medians).  If (2)'s record / copy / wait calls cost a
     # few us each and a turn is still ~10x the offline Python, the turn is TVM's launch and the waits (the launch /
     # call / sync columns): the next lever is the planner pricing turns (s47 section 4 (3)).  (4)'s host a turn
     # <= 0.8x (2)'s 'after' says TVM's spinning pool workers slow the host's calls.
  BUDGET=300; drv=hetpart.runtime.cuda_api.DRIVER_CALLS; lean=hetpart.runtime.executor.LEAN_MARKERS
  grp=hetpart.runtime.handoff.GROUPED_H2D
  timeout 80 python3 -m pytest -m cuda -q -rf -p no:cacheprovider tests/test_runtime_turn_cost.py \
    > "$OUT/pytest-turn-cost.txt" 2>&1
  # DRIVER_CALLS and GROUPED_H2D on only where (1) passed; otherwise (2)-(4) measure LEAN_MARKERS alone
  on=(); dv=False; grep -q " passed" "$OUT/pytest-turn-cost.txt" && ! grep -q "failed\|error" "$OUT/pytest-turn-cost.txt" \
    && on=(--set $drv=1 --set $grp=1 --session-before $drv=0 --session-before $grp=0) && dv=True
  timeout 70 python3 tools/turn_cost.py --model llama_decode --layers 6 --runs 120 --repeats 2 --set $drv=$dv \
    --set $grp=$dv --variant "ungrouped:$grp=False" --variant "lean:$drv=False,$grp=False" \
    --variant "before:$drv=False,$grp=False,$lean=False" --save /tmp/turn-cost-122 \
    --json "$OUT/turn-cost.json" > "$OUT/turn-cost.txt" 2>&1
  mkdir -p /tmp/plans119 /tmp/plans122
  if [ -f .hold/plans119.tgz ] && tar xzf .hold/plans119.tgz -C /tmp/plans119; then
    cp /tmp/plans119/hetpart_before.plan.json /tmp/plans122/hetpart.plan.json
    cp /tmp/plans119/llamacpp-style_rule.plan.json /tmp/plans122/
  fi
  left=$((BUDGET - SECONDS - 25))
  [ "$left" -ge 120 ] && timeout "$left" python3 tools/capped_rules_ab.py \
    --profile bench/results/profile-capped-nvidia-h200.json --plans /tmp/plans122 --workload zoo:llama_decode --cap 1/2 \
    --contenders "hetpart,llama.cpp-style rule" "${on[@]}" --session-before $lean=0 \
    --rounds 3 --trace "$OUT/traces-turn-cost" --json "$OUT/capped-turn-cost-ab.json" > "$OUT/capped-turn-cost-ab.txt" 2>&1
  # (4) the same build with TVM's idle pool workers not spinning (they sched_yield 300000 rounds after each CPU
  # partition on every other core): a turn's host time against (2)'s 'after' says whether they slow the host's calls
  left=$((BUDGET - SECONDS - 3))
  [ "$left" -ge 15 ] && TVM_THREAD_POOL_SPIN_COUNT=0 timeout "$left" python3 tools/turn_cost.py --model llama_decode \
    --layers 6 --runs 120 --set $drv=$dv --set $grp=$dv --load /tmp/turn-cost-122 --json "$OUT/turn-cost-spin0.json" \
    > "$OUT/turn-cost-spin0.txt" 2>&1 ;;
*)  # a step that has run: tools/device_steps_run.sh has it (an unknown step does nothing, as before)
  if [[ ${1:-1} =~ ^[0-9]+$ ]] && grep -qs "^${1:-1})" "$here/device_steps_run.sh"; then
    echo "step ${1:-1} has run: it is tools/device_steps_run.sh ${1:-1}; running that"
    exec bash "$here/device_steps_run.sh" "${1:-1}"
  elif [ ! -f "$here/device_steps_run.sh" ]; then
    echo "no step ${1:-1} here, and tools/device_steps_run.sh (the steps that have run) did not come along" >&2
  fi ;;
esac
pack_logs
