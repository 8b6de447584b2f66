#!/usr/bin/env bash
# For a machine with nvcc but no cuBLAS and no GPU (this project's own): builds the CUDA addon
# against a cuBLAS wheel's headers and libraries, with an empty libcuda for the driver calls, into
# a folder of its own (never build/Release), then checks that nothing of ggml, libllama or ours is
# left unresolved, and runs the trainer and placement tests on the CPU with that addon. What it
# cannot check is anything on a GPU. 33 minutes on 2 cores (ggml-cuda for one architecture) the
# first time; about 2 minutes again while /tmp/rrr-cuda-check keeps that build.
#   bash scripts/cuda-link-check.sh [path/to/nvidia_cublas-*.whl]
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=${1:-$(ls /opt/pypi-more/files/nvidia_cublas-*.whl 2>/dev/null | head -1)}
[ -f "$WHL" ] || { echo "cuda-link-check: no cuBLAS wheel (pass its path)" >&2; exit 2; }
W=/tmp/rrr-cuda-check
mkdir -p $W/cublas $W/stubs $W/build $W/out
[ -d $W/cublas/nvidia ] || python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$WHL" $W/cublas
CU=$(dirname "$(find $W/cublas -name cublas_v2.h | head -1)")/..
# Named libcuda.so.1 and linked even though it defines nothing (--no-as-needed), so the addon
# names the driver's library as one it needs, as a build against the real one does: on a GPU
# machine the driver's cu* calls then resolve from it (scripts/device/prebuild-cuda.sh).
echo "" | gcc -shared -Wl,-soname,libcuda.so.1 -o $W/stubs/libcuda.so -x c -
cp $W/stubs/libcuda.so $W/stubs/libcuda.so.1
INC="$(node -p "require('path').resolve('node_modules/node-api-headers/include')");$(node -p "require('path').resolve('node_modules/node-addon-api')")"
# sm_90 machine code only (no PTX beside it): the H100 and H200 run it, and it is smaller to carry.
cmake -S . -B $W/build -DCMAKE_BUILD_TYPE=Release -DRRR_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90-real} \
  -DCMAKE_SHARED_LINKER_FLAGS="-Wl,--no-as-needed" \
  -DRRR_OUTPUT_DIR=$W/out -DCMAKE_JS_INC="$INC" -DCMAKE_CUDA_FLAGS="-I$CU/include" -DCMAKE_CXX_FLAGS="-I$CU/include" \
  -DCUDA_cublas_LIBRARY=$CU/lib/libcublas.so.13 -DCUDA_cublasLt_LIBRARY=$CU/lib/libcublasLt.so.13 \
  -DCUDA_cuda_driver_LIBRARY=$W/stubs/libcuda.so > $W/configure.log 2>&1
stamp=$(bash scripts/device/source-stamp.sh)
rm -f $W/out/stamp
nice -n 15 cmake --build $W/build --target rrr_native -j "$(nproc)" > $W/build.log 2>&1 || { tail -30 $W/build.log; exit 1; }
A=$W/out/rrr_native.node
echo "$stamp" > $W/out/stamp # what it was built from (scripts/device/prebuild-cuda.sh)
# The driver's cu* calls resolve at run time from libcuda; nothing else may be missing.
missing=$(nm -u --demangle $A | grep -ciE ' (ggml|rrr::|llama)' || true)
echo "cuda-link-check: $A built; unresolved ggml/libllama/rrr symbols: $missing"
[ "$missing" = 0 ] || exit 1
LD_LIBRARY_PATH=$W/stubs:$CU/lib RRR_NATIVE_ADDON=$A node -e "console.log('buildInfo', JSON.stringify(require(process.env.RRR_NATIVE_ADDON).buildInfo()))"
LD_LIBRARY_PATH=$W/stubs:$CU/lib RRR_NATIVE_ADDON=$A node --test dist/test/trainer-gradients.test.js dist/test/trainer-nodes.test.js dist/test/trainer-memory.test.js dist/test/trainer-loss.test.js dist/test/trainer-adapters.test.js dist/test/device-placement.test.js 2>&1 | grep -E '^# (pass|fail)'
