#!/usr/bin/env bash
# What to run on the GPU machine to check the GPU code paths (one device call):
#   source .tvmpack/unpack.sh && bash bench/device_validate.sh
# Each test file runs in its own process with a time limit, so one crash or hang
# does not hide the others.  Logs land in $OUT (or ./out/device if OUT is unset).
set -u
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-out/device}; mkdir -p "$OUT"
for f in test_kernels test_detector_gpu test_compiler_cuda test_runtime_cuda test_runtime_dynamic test_costmodel_measure test_bench; do
  timeout 240 python3 -m pytest -m cuda -q -rs -p no:cacheprovider --timeout 200 --timeout-method=thread \
    "tests/$f.py" > "$OUT/$f.log" 2>&1
  echo "$f: exit $?; $(grep -E 'passed|failed|error' "$OUT/$f.log" | tail -1)"
done
if [ -d out/xcompiled_mlp ]; then  # an artifact cross-compiled on a machine without a GPU
  HETPART_XCOMPILED=out/xcompiled_mlp timeout 60 python3 -m pytest tests/test_compiler_cuda.py -q -rs -p no:cacheprovider -k prebuilt 2>&1 | tail -3
fi
