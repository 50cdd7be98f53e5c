#!/usr/bin/env bash
# Builds the C++ micro-benchmarks against csrc/ and the scipy-openblas32 wheel of the active Python:
#   bash benchmarks/cpp/build.sh [outdir]      (default build/cpp-bench)
# then run e.g.  build/cpp-bench/packed_gemm_bench,  build/cpp-bench/packed_model_bench tiny 100 1,
#                build/cpp-bench/memory_bandwidth_bench.
# They time the kernels with no Python in the loop, which is how the numbers quoted in
# csrc/kernels/packed_gemm.cpp, csrc/kernels/kernels.cpp and benchmarks/README.md ("C++ harness") were taken.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
csrc="$here/../../csrc/kernels"
out="${1:-build/cpp-bench}"
mkdir -p "$out"
read -r inc lib < <(python -c "import scipy_openblas32 as s; print(s.get_include_dir(), s.get_lib_dir())")
flags=(-O3 -std=c++17 -fopenmp -fno-math-errno -I"$csrc" -I"$inc")
link=(-L"$lib" -lscipy_openblas -Wl,-rpath,"$lib")
g++ "${flags[@]}" "$here/packed_gemm_bench.cpp" "$csrc/packed_gemm.cpp" "$csrc/isa.cpp" "${link[@]}" -o "$out/packed_gemm_bench"
g++ "${flags[@]}" "$here/packed_model_bench.cpp" "$csrc/packed_model.cpp" "$csrc/kernels.cpp" "$csrc/packed_gemm.cpp" "$csrc/isa.cpp" \
  "${link[@]}" -o "$out/packed_model_bench"
g++ "${flags[@]}" -mavx2 "$here/memory_bandwidth_bench.cpp" -o "$out/memory_bandwidth_bench"
echo "built into $out"
