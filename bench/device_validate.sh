#!/usr/bin/env bash
# What the lead runs on the GPU machine to validate GPU code paths (one device call):
#   source .tvmpack/unpack.sh && bash bench/device_validate.sh
# Results land in $OUT (or ./out/device if OUT is unset).
set -u
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-out/device}; mkdir -p "$OUT"
echo "== cuda-marked tests"
timeout 300 python3 -m pytest -m cuda -q -rs -p no:cacheprovider --timeout 150 tests 2>&1 | tee "$OUT/cuda_tests.log" | tail -40
if [ -d out/xcompiled_mlp ]; then
  echo "== artifact cross-compiled without a GPU, loaded here"
  HETPART_XCOMPILED=out/xcompiled_mlp timeout 60 python3 -m pytest tests/test_compiler_cuda.py -q -rs -p no:cacheprovider -k prebuilt 2>&1 | tail -5
fi
echo "== record_profile smoke (small models)"
timeout 120 python3 bench/record_profile.py --small --quick --out "$OUT/small_profile.json" 2>&1 | tail -15
echo "== runtime bench"
timeout 150 python3 bench/runtime.py --out "$OUT/runtime.json" 2>&1 | tail -30
