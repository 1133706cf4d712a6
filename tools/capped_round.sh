#!/usr/bin/env bash
# Issue 19's capped table beyond BERT-large: one device call per step, results under $OUT:
#   source .tvmpack/unpack.sh && bash tools/capped_round.sh STEP
# Each step runs one workload at the caps 1/2, 1/3, 1/4 with every contender, stops
# starting contenders at BUDGET - RESERVE seconds (default 520 - 80) and writes what it
# has; records already in bench/results/capped-nvidia-h200.json (merge each step's
# $OUT/capped-*.json there before the next call) are skipped, so running a step again
# goes on where it stopped.
#
# STEP llama_decode | moe | dlrm: zoo models (no torch needed for hetpart, ORT and the
#      rules; llama_decode's torch_cpu/accelerate twin needs torch, moe and dlrm have none).
# STEP llama_prefill: the transformers LlamaConfig twin (needs torch + transformers to
#      export once, 4.4 GB: the export goes to $EXPORTS, kept between steps on one machine).
# STEP first: hetpart, its bf16 and the two memory rules at 1/2 on every new workload
#      (the rows the goals read first), before the full steps.
set -u
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-out/device}; mkdir -p "$OUT/logs"
BUDGET=${BUDGET:-520}
RESERVE=${RESERVE:-80}
EXPORTS=${EXPORTS:-/tmp/capped-exports}
SKIP=""; [ -f bench/results/capped-nvidia-h200.json ] && SKIP="--skip-done bench/results/capped-nvidia-h200.json"
capped() {  # capped NAME WORKLOADS CAPS [--contenders LIST]
  local name=$1 workloads=$2 caps=$3; shift 3
  timeout $((BUDGET + 20)) python3 bench/capped.py --workloads "$workloads" --caps "$caps" --budget "$BUDGET" \
    --reserve "$RESERVE" --export-dir "$EXPORTS" $SKIP "$@" --out "$OUT/capped-$name.json" \
    > "$OUT/logs/capped-$name.txt" 2>&1
}
case "${1:-first}" in
first) capped first llama_decode,moe,dlrm,llama_prefill 1/2 \
         --contenders "hetpart,hetpart bf16,llama.cpp-style rule,ORT-style rule" ;;
llama_decode|moe|dlrm|llama_prefill) capped "$1" "$1" 1/2,1/3,1/4 ;;
*) echo "unknown step $1" >&2; exit 2 ;;
esac
