#!/usr/bin/env bash
# Runs the trainer's finite-difference tests with the GPU's bounds on a CPU build whose f32 dot
# products round their operands to TF32, as ggml-cuda's f32 products on tensor cores do. It is
# how the GPU's finite-difference bound (FD_TOL in test/helpers/trainer-fixtures.ts) was checked without a
# GPU. The rounding is a few lines of ours put into a throwaway copy of the pinned ggml (under
# $RRR_TF32_DIR, default /tmp/rrr-tf32-emu); the tree's own build is not touched.
# The emulation rounds more than a GPU does in places (every f32 dot product, the LoRA path's
# small ones too) and less in others (not OUT_PROD). On 2026-11-27 every finite-difference check
# passed under it; two comparisons of other paths with the f32 one did not (q8_0's cosine 0.9977;
# merged vs unmerged with KL, 0.046 vs 0.167 at one element), which on an H200 passed or parted
# by less (stop 14: 0.105 vs 0.0765).
#   bash scripts/tf32-emulation.sh [test-name-pattern]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=${RRR_TF32_DIR:-/tmp/rrr-tf32-emu}
pattern=${1:-LoRA gradients match finite differences}
[ -f third_party/llama.cpp/CMakeLists.txt ] || { echo "third_party/llama.cpp is missing: run npm install first" >&2; exit 1; }
[ -f dist/test/trainer-gradients.test.js ] || { echo "dist/ is missing: run npx tsc -p . first" >&2; exit 1; }

if [ ! -f "$work/build/Release/rrr_native.node" ]; then
  rm -rf "$work" && mkdir -p "$work/third_party"
  git ls-files -z | grep -zv '^test/\|^src/' | xargs -0 cp --parents -t "$work"
  cp -r third_party/llama.cpp "$work/third_party/"
  ln -s "$root/node_modules" "$work/node_modules"
  # llamafile's f32 GEMM would bypass ggml_vec_dot_f32, the one place rounded.
  sed -i 's/^set(GGML_CCACHE .*/&\nset(GGML_LLAMAFILE OFF CACHE BOOL "" FORCE)/' "$work/CMakeLists.txt"
  vec="$work/third_party/llama.cpp/ggml/src/ggml-cpu/vec.cpp"
  perl -0pi -e 's/(void ggml_vec_dot_f32\([^)]*\) \{\n)/$1    if (getenv("RRR_EMULATE_TF32")) {\n        auto tf32 = [](float v) { uint32_t u; memcpy(&u, &v, 4); u = (u + 0x1000u) & 0xffffe000u; memcpy(&v, &u, 4); return v; };\n        float acc = 0.0f;\n        for (int i = 0; i < n; ++i) acc += tf32(x[i]) * tf32(y[i]);\n        *s = acc;\n        return;\n    }\n/' "$vec"
  grep -q RRR_EMULATE_TF32 "$vec" || { echo "could not put the rounding into $vec (has the pin moved?)" >&2; exit 1; }
  sed -i '1i #include <cstdint>\n#include <cstdlib>\n#include <cstring>' "$vec"
  echo "building the TF32-rounding addon in $work (a few minutes)"
  (cd "$work" && node scripts/build-native.mjs > "$work/build.log" 2>&1) || { tail -20 "$work/build.log"; exit 1; }
fi

RRR_NATIVE_ADDON="$work/build/Release/rrr_native.node" RRR_EMULATE_TF32=1 RRR_TEST_TOL=gpu \
  node --test --test-name-pattern "$pattern" dist/test/trainer-gradients.test.js dist/test/trainer-nodes.test.js dist/test/trainer-memory.test.js dist/test/trainer-loss.test.js dist/test/trainer-adapters.test.js
