#!/usr/bin/env bash
# One-shot GPU check of the Triton kernels (≤ 8 minutes on one H100/H200), from the repository root:
#
#   scripts/gpu_check.sh [REPORT.md]        # default: $OUT/gpu_check.md, else runs/gpu_check.md
#
# 1. environment: needs python with torch (CUDA build) and triton; installs only pytest and pytest-timeout
#    if they are missing (nothing heavier; set GPU_CHECK_NO_INSTALL=1 to install nothing);
# 2. tests/gpu (correctness on the device: fp32/fp16/bf16 grid, C < 16 guard, autocast, 70k batch,
#    cross-process gradient bits, CUDA-graph session);
# 3. scripts/gpu_bench_check.py: fused MLP vs two GEMMs vs eager at C = 96, 192, 256, 384, B = 512 and 1,
#    and the dwconv + LayerNorm kernels, beside the performance model.
# Kernels and autotune results are cached in TRITON_CACHE_DIR (Triton's default ~/.triton/cache).
# Writes ONE markdown report (the step outcomes, what was skipped, and the timing table). Every step has
# a timeout; a failed or skipped step is reported and the script goes on; the exit status is non-zero if
# any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

REPORT=${1:-${OUT:-runs}/gpu_check.md}
PY=${PYTHON:-python}
TESTS_TIMEOUT=${GPU_CHECK_TESTS_TIMEOUT:-250}
BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-170}
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
skipped=()
steps=()

note() { echo "gpu_check: $*" >&2; }

run_step() {  # name, timeout seconds, command...
  local name=$1 limit=$2
  shift 2
  local start rc=0
  start=$(date +%s)
  note "$name (timeout ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1 || rc=$?
  local took=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then
    steps+=("| $name | ok | ${took} s |")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    steps+=("| $name | **timed out** after ${limit} s | ${took} s |"); status=1
  else
    steps+=("| $name | **failed** (exit $rc) | ${took} s |"); status=1
  fi
  tail -n 40 "$work/$name.log" >&2 || true
  return 0
}

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  note "no CUDA device visible to torch (or torch missing): nothing to check"
  skipped+=("everything: no CUDA device visible to \`$PY\` (torch.cuda.is_available() is false or torch missing)")
  status=1
elif ! "$PY" -c 'import triton' 2>/dev/null; then
  skipped+=("everything: triton is not importable (it ships with CUDA builds of torch)")
  status=1
else
  if ! "$PY" -c 'import pytest, pytest_timeout' 2>/dev/null; then
    if [ "${GPU_CHECK_NO_INSTALL:-0}" = 1 ]; then
      skipped+=("tests/gpu: pytest / pytest-timeout missing and GPU_CHECK_NO_INSTALL=1")
    else
      timeout 60 "$PY" -m pip install -q pytest pytest-timeout \
        || skipped+=("pip install pytest pytest-timeout failed (offline?)")
    fi
  fi
  if "$PY" -c 'import pytest, pytest_timeout' 2>/dev/null; then
    run_step tests_gpu "$TESTS_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider -x tests/gpu
  else
    skipped+=("tests/gpu: pytest not available")
  fi
  run_step bench "$BENCH_TIMEOUT" "$PY" scripts/gpu_bench_check.py --quick --out "$work/bench.md"
fi

mkdir -p "$(dirname "$REPORT")"
{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo
  "$PY" -c 'import torch; print("Device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")' 2>/dev/null || echo "Device: unknown"
  echo
  echo "| step | outcome | took |"
  echo "|---|---|---|"
  for line in "${steps[@]+"${steps[@]}"}"; do echo "$line"; done
  echo
  if [ "${#skipped[@]}" -gt 0 ]; then
    echo "Skipped:"
    for line in "${skipped[@]}"; do echo "- $line"; done
    echo
  fi
  if [ -s "$work/bench.md" ]; then
    cat "$work/bench.md"
  else
    echo "No timing table (the bench step did not complete)."
  fi
  if [ -f "$work/tests_gpu.log" ]; then
    echo
    echo "tests/gpu: $(tail -n 1 "$work/tests_gpu.log")"
  fi
} >"$REPORT"
note "report: $REPORT"
exit "$status"
