# The shared part of the device scripts (tools/device_round.sh: steps still to run; tools/device_steps_run.sh:
# steps that have run), sourced by both: the settings every step reads (OUT: results folder, BUDGET: seconds a
# step may take, EXPORTS: the corpus's ONNX exports), the helpers steps call, and pack_logs, the scripts' trailer.
# It must travel with every device call that runs either script.
set -u
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-out/device}; mkdir -p "$OUT"
BUDGET=${BUDGET:-540}
EXPORTS=/tmp/corpus
# A call that leaves the shipped profile out to fit the 64 MiB carry (hetpart/costmodel/recorded/h200.json) still
# needs one to plan all-CUDA builds (ProfileError otherwise): the capped profile, if it came along, stands in.
if [ ! -f hetpart/costmodel/recorded/h200.json ] && [ -f bench/results/profile-capped-nvidia-h200.json ]; then
  export HETPART_PROFILE=${HETPART_PROFILE:-$PWD/bench/results/profile-capped-nvidia-h200.json}
fi
corpus() {  # corpus NAME DEVICES MODELS [ENV...]: one stream, its own results file
  local name=$1 devices=$2 models=$3; shift 3
  env "$@" timeout "$BUDGET" python3 bench/corpus.py --models "$models" --devices "$devices" --timeout 300 \
    --budget $((BUDGET - 30)) --export-dir "$EXPORTS" --out "$OUT/corpus-$name.json" > "$OUT/logs/corpus-$name.log" 2>&1
}
corpus_export() {  # corpus_export NAME BATCH [TIMEOUT]: the corpus's ONNX export of NAME at BATCH under $EXPORTS,
                   # written once (log: $OUT/logs/export-NAME-bBATCH.txt); prints its path, absent if the export failed
  local name=$1 batch=$2 f="$EXPORTS/$1-b$2.onnx"
  [ -f "$f" ] || timeout "${3:-60}" python3 -c "import sys; sys.path.insert(0, 'bench'); import corpus; \
    from pathlib import Path; Path('$EXPORTS').mkdir(parents=True, exist_ok=True); corpus.export('$name', $batch, Path('$f'))" \
    > "$OUT/logs/export-$name-b$batch.txt" 2>&1
  echo "$f"
}
resnet50_b1() {  # the path of a resnet50 b1 ONNX file: the corpus's export if a step made one, else the zoo's
  local f="$EXPORTS/resnet50-b1.onnx"
  [ -f "$f" ] || { f=/tmp/resnet50-zoo.onnx; [ -f "$f" ] || python3 -c "import onnx; from hetpart import models; \
    z = models.parse_zoo_spec('zoo:resnet50'); onnx.save(models.build(z[0], small=z[1], **z[2]), '$f')"; }
  echo "$f"
}
cnn_b1() {  # cnn_b1 NAME: a batch-1 ONNX file of densenet121, googlenet, inception_v3 or mobilenet_v2 built by
           # tools/*_onnx.py (written once, under /tmp/cnn), or zoo:resnet50 for resnet50
  local name=$1 f=/tmp/cnn/$1-b1.onnx
  [ "$name" = resnet50 ] && { echo zoo:resnet50; return; }
  mkdir -p /tmp/cnn
  if [ ! -f "$f" ]; then
    case "$name" in
      densenet121) python3 tools/densenet_onnx.py "$f" ;;
      googlenet|inception_v3) python3 tools/inception_onnx.py "$name" "$f" ;;
      mobilenet_v2) python3 tools/mobilenet_v2_onnx.py "$f" ;;
    esac > /dev/null 2>&1
  fi
  echo "$f"
}
blocked_ab() {  # blocked_ab PREFIX "NAME:CAP ..." [ARGS...]: tools/nchwc_ab.py NCHW / NCHW16c / ORT at 16 threads, b1,
                # per model (cnn_b1 NAME) for at most CAP s (0: what is left of BUDGET), into $OUT/PREFIX-NAME-b1-t16.txt
  local prefix=$1 specs=$2 spec name cap left; shift 2
  for spec in $specs; do
    name=${spec%%:*}; cap=${spec##*:}
    left=$((BUDGET - SECONDS - 5)); [ "$cap" -gt 0 ] && [ "$left" -gt "$cap" ] && left=$cap
    [ "$left" -ge 60 ] && timeout "$left" python3 tools/nchwc_ab.py "$(cnn_b1 "$name")" --block 16 --threads 16 \
      --calls 10 --rounds 3 "$@" > "$OUT/$prefix-$name-b1-t16.txt" 2>&1
  done
}
pack_logs() {  # the device tool returns at most 8 files: the logs and any traces-*/ folders travel as one archive
  local extra
  extra=$(cd "$OUT" && ls -d traces-* 2>/dev/null)
  local name=logs n=1  # a second step in the same call packs logs-2.tgz, not over the first's
  while [ -e "$OUT/$name.tgz" ]; do n=$((n + 1)); name=logs-$n; done
  tar -C "$OUT" -czf "$OUT/$name.tgz" logs $extra && rm -rf "$OUT/logs" ${extra:+$(printf "$OUT/%s " $extra)}
  ls -la "$OUT"
}
mkdir -p "$OUT/logs"
