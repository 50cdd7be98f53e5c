#!/usr/bin/env bash
# Set up convnext_fast on a fresh machine and run it, from any folder:
#
#   scripts/setup.sh demo [DEMO FLAGS]     # venv + torch + the project, then `convnext-fast demo` (SYNTHETIC market)
#   scripts/setup.sh test [PYTEST FLAGS]   # venv + torch + the project with its test extra, then the whole suite
#   scripts/setup.sh env                   # only the venv (with the test extra); `source .venv/bin/activate`
#
# Environment:
#   VENV=.venv            where the virtual environment lives (reused if it exists; delete it for a fresh one)
#   PYTHON=python3        the interpreter the venv is made from (>= 3.10)
#   TORCH=cpu             which torch build: cpu (default), cuda (PyPI's default Linux build, CUDA 12.x,
#                         several GB), cu126 / cu128 / ... (that CUDA version from PyTorch's index), or
#                         keep (leave the venv's torch alone; install one yourself first)
#   TORCH_VERSION=2.13.0  the torch release to install (any >= 2.6 works with the project)
#
# Why the torch step is careful: on Linux, PyPI's torch wheel is the CUDA build and pulls ~3 GB of NVIDIA
# libraries, which a CPU machine never uses. TORCH=cpu takes PyTorch's CPU wheel index when it answers
# within a few seconds; otherwise pip's own indexes, but only if what they offer is a CPU build (as on
# machines with a local CPU wheel mirror). It refuses rather than download the CUDA build by surprise.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() {
  [ -z "${build_pid:-}" ] || kill "$build_pid" 2>/dev/null || true
  [ -z "${compile_pid:-}" ] || kill "$compile_pid" 2>/dev/null || true
  echo "setup.sh: $*" >&2
  exit 2
}
note() { echo "setup.sh: $*" >&2; }

MODE=${1:-}
case "$MODE" in
  demo | test | env) shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "the first argument must be demo, test or env, got '${MODE}'" ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-cpu}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
CUDA_INDEX_BASE=https://download.pytorch.org/whl
export PIP_DISABLE_PIP_VERSION_CHECK=1

command -v "$PY" >/dev/null || die "no '$PY' on PATH (set PYTHON=/path/to/python3.10+)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); convnext_fast needs >= 3.10"

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  note "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV" || die "could not create a venv (Debian/Ubuntu: apt-get install python3-venv)"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# A current pip for `--dry-run --report` below; an offline machine keeps the one the venv came with.
python -m pip install -q --upgrade pip || note "could not upgrade pip; going on with $(python -m pip --version)"

reachable() {  # URL: answers within 5 s (an offline machine may hang on DNS, hence the outer timeout)
  timeout 8 python - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).close()
EOF
}

# Prints what `pip install torch==V` would install from pip's configured indexes, one "name==version" a line.
torch_plan() {
  python -m pip install --dry-run --quiet --ignore-installed --report - "torch==$TORCH_VERSION" 2>/dev/null |
    python -c 'import json, sys
for item in json.load(sys.stdin)["install"]:
    print(item["metadata"]["name"] + "==" + item["metadata"]["version"])'
}

install_torch() {
  case "$TORCH" in
    keep)
      python -c 'import torch' 2>/dev/null || die "TORCH=keep but $VENV has no torch; install one or use TORCH=cpu"
      return ;;
    cpu) ;;
    cuda) note "installing the default (CUDA) torch==$TORCH_VERSION from pip's indexes"
      python -m pip install -q --no-compile "torch==$TORCH_VERSION"; return ;;
    cu[0-9]*) note "installing torch==$TORCH_VERSION for $TORCH from PyTorch's index"
      python -m pip install -q --no-compile "torch==$TORCH_VERSION" --index-url "$CUDA_INDEX_BASE/$TORCH"; return ;;
    *) die "TORCH must be cpu, cuda, cu<version> (e.g. cu128) or keep, got '$TORCH'" ;;
  esac
  if python -c 'import sys, torch; sys.exit(torch.version.cuda is not None or torch.__version__.split("+")[0] != sys.argv[1])' \
    "$TORCH_VERSION" 2>/dev/null; then
    note "CPU torch $TORCH_VERSION already in $VENV"
    return
  fi
  if reachable "$CPU_INDEX/torch/"; then
    note "installing CPU torch==$TORCH_VERSION from $CPU_INDEX"
    python -m pip install -q --no-compile "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
    return
  fi
  note "$CPU_INDEX is not reachable; asking pip's own indexes for a CPU build of torch==$TORCH_VERSION"
  local plan
  plan=$(torch_plan) || die "pip cannot resolve torch==$TORCH_VERSION from its indexes (offline?)"
  if grep -q '^torch==.*+cpu$' <<<"$plan" && ! grep -qi '^nvidia-' <<<"$plan"; then
    python -m pip install -q --no-compile "torch==$TORCH_VERSION"
    return
  fi
  die "pip's indexes offer $(grep '^torch==' <<<"$plan" || echo 'no torch'), a CUDA build ($(grep -ci '^nvidia-' <<<"$plan") NVIDIA packages, several GB), and PyTorch's CPU index is unreachable.
  Choose: TORCH=cuda (accept that build), TORCH=keep (after installing a torch yourself), or retry online."
}

# Jobs overlap here, each measured on 2 cores: the C++ extension compiles (~40 s of both cores) while pip
# unpacks torch (~20 s, one core). pip installs without byte-compiling, because it compiles every file on one
# core (~80 s for torch and the test extra): for demo/env `compileall -j 0` does it on every core (torch's
# files while the wheel finishes and the dependencies install); for test, Python compiles each module the
# suite imports once, on first import (PYTHONDONTWRITEBYTECODE is lifted for the run).
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
byte_compile() {  # files that fail to compile (test data inside some packages) are skipped, as pip does
  [ "$MODE" = test ] || python -m compileall -q -j 0 "$@" >/dev/null 2>&1 || true
}
note "building the convnext_fast wheel (the C++ extension) in the background"
python -m pip wheel -q --no-deps -w "$wheels" "$ROOT" >"$wheels/build.log" 2>&1 &
build_pid=$!
install_torch
byte_compile "$site/torch" &
compile_pid=$!
if ! wait "$build_pid"; then
  tail -n 60 "$wheels/build.log" >&2
  die "building the convnext_fast wheel failed (the last lines of its log are above)"
fi
build_pid=""
extra=""
[ "$MODE" = demo ] || extra="[test]"
wheel=$(ls "$wheels"/convnext_fast-*.whl)
note "installing $(basename "$wheel")$extra and its dependencies"
python -m pip install -q --no-compile "$wheel$extra"
rm -rf "$wheels"
wait "$compile_pid" || true
byte_compile "$site"  # what torch's pass compiled is up to date and skipped
note "set up in $(($(date +%s) - start)) s: $(python -c 'import torch, convnext_fast; print("torch", torch.__version__, "| convnext_fast", convnext_fast.__version__, "| backends", convnext_fast.backends())')"

case "$MODE" in
  env)
    echo "ready: source $VENV/bin/activate" ;;
  demo)
    exec convnext-fast demo "$@" ;;
  test)
    # The README's test command (tests/test_readme.py keeps the two the same).
    set +e
    env -u PYTHONDONTWRITEBYTECODE python -m pytest -q -p no:cacheprovider -n 2 tests "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
      echo "setup.sh: pytest collected no tests" >&2
      exit 1
    fi
    exit "$rc" ;;
esac
