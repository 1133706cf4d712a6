#!/usr/bin/env bash
# Stage a small working tree for a device call, and undo it.  The device tool carries the tracked and
# untracked files (64 MiB in all, ~61 of them the .tvmpack): with the pack, the rest must stay under
# ~2.83 MB (2.80 MB fitted in session 51, 2.89 did not).  Run in the repository root:
#
#   TESTS="test_a.py ..." TOOLS="x.py ..." BENCH="corpus.py ..." bash tools/device_stage.sh    # stage
#   python tools/device_preflight.py STEP...    # every file the steps run is there and imports (rerun until ready)
#   ... the device call(s) ...
#   bash tools/device_stage.sh --restore        # everything back (bench/results as it was)
#
# Staged away into .hold/stash (git-excluded: add "/.hold/" to .git/info/exclude on a fresh clone, or the
# stash itself is carried): bench/results (but the capped profile, copied back), docs, notebooks,
# tools/device_steps_run.sh (STEPS_RUN=1 keeps it), every tests/test_*.py, tools/*.py and bench/*.py not
# named in TESTS / TOOLS / BENCH (tools/device_preflight.py always stays), the test helper modules not
# named in HELPERS (default: onnx_cases.py tir_loops.py) or imported by a kept test or by conftest.py (which
# always stays).  NOPROFILE=1 also moves
# the shipped profile hetpart/costmodel/recorded/h200.json (tools/device_lib.sh then plans with the
# capped one); EXTRA_OUT="path ..." moves more tracked files (e.g. README.md, hetpart/bench modules a
# step does not import).
# STEPS="146 147" keeps only those steps' cases in tools/device_round.sh (its other steps' comments are
# ~48 KB; the whole file comes back on --restore).  Steps 146 + 147 (session 52: 2.77 MB, preflight ready):
#   STEPS="146 147" TESTS="test_kernels_wgmma_gemm.py test_kernels_wgmma_substitute.py test_importer_constant_take.py"
#   TOOLS="gpu_wgmma_probe.py gpu_model_switch_ab.py bf16_rule_coverage.py gpu_kernel_categories.py gpu_static_kernels.py
#   cpu_rule_ab.py mobilenet_v2_onnx.py" BENCH=corpus.py NOPROFILE=1 EXTRA_OUT="README.md hetpart/bench/capped.py
#   hetpart/bench/int8.py hetpart/bench/decode_twin.py hetpart/bench/data_parallel.py hetpart/bench/cpu_nms.py
#   hetpart/bench/cpu_pool.py hetpart/bench/cpu_softmax.py hetpart/bench/conformance.py hetpart/bench/serve*.py".
# Step 170 (session 58: 2.83 MB, preflight ready; then, to fit, mv tools/device_stage.sh tools/device_preflight.py
#   .hold/stash/extra/tools/ and move them back before --restore): NOPROFILE=1 STEPS="170"
#   TESTS="test_kernels_wgmma_gelu.py test_costmodel_flash.py" TOOLS="gpu_model_switch_ab.py model_spec.py
#   gpu_wgmma_probe.py" HELPERS="onnx_cases.py tir_loops.py precision_cases.py attention_cases.py nvcc_cases.py
#   asm_cases.py" BENCH=corpus.py EXTRA_OUT="$EXTRA tools/capped_round.sh tools/device_validate.sh".
# Step 171 (session 58: 2.84 MB, preflight ready; the same two files moved out after preflight): NOPROFILE=1
#   STEPS="171" TESTS="test_kernels_wgmma_epilogue.py test_kernels_wgmma_swizzle.py" TOOLS="gpu_model_switch_ab.py
#   model_spec.py gpu_wgmma_probe.py" HELPERS="onnx_cases.py tir_loops.py" BENCH=corpus.py
#   EXTRA_OUT="$EXTRA tools/capped_round.sh tools/device_validate.sh".
# Step 172 (session 58: 2.84 MB, preflight ready; the same two files moved out after preflight): NOPROFILE=1
#   STEPS="172" TESTS="test_kernels_flash_attention.py test_kernels_flash_substitute.py" TOOLS="gpu_model_switch_ab.py
#   model_spec.py gpu_flash_probe.py" HELPERS="onnx_cases.py tir_loops.py precision_cases.py attention_cases.py"
#   BENCH=corpus.py EXTRA_OUT="$EXTRA tools/capped_round.sh tools/device_validate.sh".
# Step 173 (session 59's second form, without the profile: re-stage and preflight; the first form was 2.85 MB with
#   the same two files moved out after preflight): NOPROFILE=1 STEPS="173" TESTS="test_kernels_gpu_layout_copy.py"
#   TOOLS="gpu_model_switch_ab.py model_spec.py" HELPERS="onnx_cases.py tir_loops.py" BENCH=corpus.py
#   EXTRA_OUT="$EXTRA tools/capped_round.sh tools/device_validate.sh".
# Step 174 (session 58: 2.82 MB, preflight ready): NOPROFILE=1 STEPS="174" TESTS="test_kernels_blocked_image_pairs.py"
#   TOOLS="nchwc_ab.py cpu_insitu_ab.py rule_switch_tir_diff.py cpu_rule_ab.py cpu_layer_gap.py cpu_kernel_profile.py"
#   HELPERS="onnx_cases.py tir_loops.py asm_cases.py" BENCH="" EXTRA_OUT="$EXTRA (less hetpart/bench/kernel_table.py and
#   hetpart/bench/cpu_layers.py) tools/capped_round.sh tools/device_validate.sh".
# Step 175 (session 58: 2.82 MB, preflight ready): NOPROFILE=1 STEPS="175" TESTS="test_kernels_flash_substitute.py"
#   TOOLS="gpu_model_switch_ab.py model_spec.py" HELPERS="onnx_cases.py tir_loops.py precision_cases.py attention_cases.py"
#   BENCH=corpus.py EXTRA_OUT="$EXTRA tools/capped_round.sh tools/device_validate.sh".
# Step 165 (session 58) also needed TOOLS "rule_switch_tir_diff.py cpu_rule_ab.py cpu_layer_gap.py
#   cpu_kernel_profile.py" and hetpart/bench/{kernel_table,cpu_layers}.py kept (out of $EXTRA).
# Step 159 (session 55: 2.80 MB, preflight ready, the shipped profile kept):
#   STEPS="159" TESTS="" TOOLS="gpu_kernel_profile.py gpu_kernel_categories.py" BENCH=corpus.py EXTRA_OUT="README.md
#   hetpart/bench/capped.py hetpart/bench/cpu_layers.py hetpart/bench/int8.py hetpart/bench/decode_twin.py
#   hetpart/bench/data_parallel.py hetpart/bench/cpu_nms.py hetpart/bench/cpu_pool.py hetpart/bench/cpu_softmax.py
#   hetpart/bench/conformance.py hetpart/bench/serve*.py hetpart/serving hetpart/together hetpart/data_parallel.py
#   hetpart/bench/kernels.py hetpart/bench/kernel_table.py".
# Session 51's kernel steps fitted at 2.76 MB with NOPROFILE=1 and
# EXTRA_OUT="README.md hetpart/bench/capped.py hetpart/bench/cpu_layers.py hetpart/bench/int8.py
# hetpart/bench/decode_twin.py hetpart/bench/data_parallel.py hetpart/bench/cpu_nms.py
# hetpart/bench/cpu_pool.py hetpart/bench/cpu_softmax.py hetpart/bench/conformance.py hetpart/bench/serve*.py".
set -euo pipefail
S=.hold/stash
[ -f tools/device_lib.sh ] || { echo "run in the repository root" >&2; exit 1; }
if [ "${1:-}" = --restore ]; then
  [ -d "$S" ] || { echo "nothing staged ($S absent)" >&2; exit 1; }
  if [ -d "$S/bench/results" ]; then rm -rf bench/results; mv "$S/bench/results" bench/; fi
  for d in bench tests tools; do for f in "$S/$d"/*; do [ -e "$f" ] && mv "$f" "$d/"; done; done
  for f in "$S/top"/*; do [ -e "$f" ] && mv "$f" .; done
  [ -e "$S/h200.json" ] && mv "$S/h200.json" hetpart/costmodel/recorded/
  if [ -d "$S/extra" ]; then (cd "$S/extra" && find . -type f) | while read -r f; do
    mkdir -p "$(dirname "$f")"; mv "$S/extra/$f" "$f"; done; fi
  rm -rf "$S"
  git status --short
  exit 0
fi
[ -e "$S" ] && { echo "$S exists: bash tools/device_stage.sh --restore first" >&2; exit 1; }
mkdir -p "$S/bench" "$S/tests" "$S/tools" "$S/top"
keep() { case " $1 " in *" $2 "*) return 0;; esac; return 1; }
mv bench/results "$S/bench/"
mv docs notebooks "$S/top/"
for f in tests/test_*.py; do keep "${TESTS:-}" "${f#tests/}" || mv "$f" "$S/tests/"; done
[ -d tests/conformance ] && mv tests/conformance "$S/tests/"
# the helper modules the kept tests (and conftest) import, at any depth, stay as well as HELPERS
NEEDED=$(python3 - <<'PY'
import pathlib, re
tests = pathlib.Path("tests")
helpers = {p.stem for p in tests.glob("*.py") if not p.name.startswith("test_")}
todo, seen = [p for p in tests.glob("*.py") if p.name.startswith("test_") or p.name == "conftest.py"], set()
while todo:
    for name in re.findall(r"^\s*(?:from|import) (\w+)", todo.pop().read_text(), re.M):
        if name in helpers and name not in seen:
            seen.add(name)
            todo.append(tests / f"{name}.py")
print(" ".join(f"{n}.py" for n in sorted(seen)))
PY
)
for f in tests/*.py; do b=${f#tests/}; case "$b" in test_*) continue;; esac
  keep "${HELPERS:-onnx_cases.py tir_loops.py} $NEEDED conftest.py __init__.py" "$b" || mv "$f" "$S/tests/"; done
[ -n "${STEPS_RUN:-}" ] || mv tools/device_steps_run.sh "$S/tools/"
for f in tools/*.py; do keep "${TOOLS:-} device_preflight.py" "${f#tools/}" || mv "$f" "$S/tools/"; done
for f in bench/*.py; do keep "${BENCH:-}" "${f#bench/}" || mv "$f" "$S/bench/"; done
[ -n "${NOPROFILE:-}" ] && mv hetpart/costmodel/recorded/h200.json "$S/h200.json"
for f in ${EXTRA_OUT:-}; do mkdir -p "$S/extra/$(dirname "$f")"; mv "$f" "$S/extra/$f"; done
if [ -n "${STEPS:-}" ]; then  # device_round.sh with only the cases of STEPS (and its header, helpers and "*)")
  mkdir -p "$S/extra/tools"; mv tools/device_round.sh "$S/extra/tools/device_round.sh"
  python3 - "$S/extra/tools/device_round.sh" tools/device_round.sh $STEPS <<'PY'
import re, sys
src, dst, keep = sys.argv[1], sys.argv[2], set(sys.argv[3:])
lines = open(src).read().split("\n")
start = next(i for i, l in enumerate(lines) if l.startswith("case "))
end = max(i for i, l in enumerate(lines) if l.startswith("esac"))
out, block = lines[:start + 1], []
for line in lines[start + 1:end] + ["0)"]:  # a sentinel case closes the last block
    if re.match(r"^([0-9]+|\*)\)", line) and block:
        label = block[0].split(")", 1)[0]
        if label == "*" or label in keep:
            out += block
        block = []
    block.append(line)
open(dst, "w").write("\n".join(out + lines[end:]))
PY
fi
mkdir -p bench/results
# the capped profile: device_lib.sh's fallback where the recorded profile is not carried, and step 137's plans' profile
if [ ! -f hetpart/costmodel/recorded/h200.json ] || [[ " ${STEPS:-} " == *" 137 "* ]]; then
  cp "$S/bench/results/profile-capped-nvidia-h200.json" bench/results/ 2>/dev/null || true
fi
bytes=$(git ls-files -co --exclude-standard | grep -v '^\.hold/' | while read -r f; do if [ -f "$f" ]; then echo "$f"; fi
  done | xargs cat | wc -c)
echo "bytes to carry besides .tvmpack: $bytes (fits at or under ~2830000)"
