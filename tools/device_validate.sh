#!/usr/bin/env bash
# What to run on the GPU machine to check the GPU code paths (one device call):
#   source .tvmpack/unpack.sh && bash tools/device_validate.sh [FILE...]
# Each test file runs in its own process with a time limit, so one crash or hang
# does not hide the others; JOBS files run at once (default 3: the tests check
# results, not speed, so sharing the GPU and the 16 cores changes nothing they assert).
# Logs land in $OUT (or ./out/device if OUT is unset); one summary line per file.
set -u
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-out/device}; mkdir -p "$OUT"
JOBS=${JOBS:-3}; PER_FILE_S=${PER_FILE_S:-240}
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test_compiler_cuda test_runtime_cuda test_kernels test_costmodel_measure
                                 test_detector_gpu test_runtime_dynamic test_bench
                                 test_kernels_cuda_compile test_importer_elementwise_ops)
one() {
  local f=$1 start=$SECONDS
  timeout "$PER_FILE_S" python3 -m pytest -m cuda -q -rs -p no:cacheprovider --timeout $((PER_FILE_S - 20)) \
    --timeout-method=thread "tests/$f.py" > "$OUT/$f.log" 2>&1
  echo "$f: exit $?, $((SECONDS - start)) s; $(grep -E 'passed|failed|error' "$OUT/$f.log" | tail -1)"
}
export -f one; export OUT PER_FILE_S
printf '%s\n' "${files[@]}" | xargs -P "$JOBS" -I{} bash -c 'one {}'
if [ -d out/xcompiled_mlp ]; then  # an artifact cross-compiled on a machine without a GPU
  HETPART_XCOMPILED=out/xcompiled_mlp timeout 60 python3 -m pytest tests/test_compiler_cuda.py -q -rs -p no:cacheprovider -k prebuilt 2>&1 | tail -3
fi
