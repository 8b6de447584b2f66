#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE (CUDA + cuBLAS, no node, no network) after scripts/device/prepare.sh
# here, with carry [".device", "dist"]. Two phases so each fits one 10-minute call on a warm
# machine (the build folder stays between calls):
#   bash scripts/device/gpu-check.sh build   # unpack, build ggml-cuda for sm_90 (~5 min)
#   bash scripts/device/gpu-check.sh run     # GPU tests, bench vs llama.cpp, training vs PEFT
# Everything is logged under $OUT, in at most 8 files (the device tool returns no more). GPU_CHECK_CPU=1 does a CPU-only dry run of the same steps.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
D=.device
if [ ! -x "$D/node/bin/node" ]; then
  mkdir -p "$D/node" && tar -xJf "$D/node.tar.xz" -C "$D/node"
  [ -d node_modules ] || tar -xzf "$D/node_modules.tar.gz"
  [ -f third_party/llama.cpp/CMakeLists.txt ] || tar -xzf "$D/llama-src.tar.gz"
fi
export PATH="$PWD/$D/node/bin:$PATH"
DEV=cuda
[ "${GPU_CHECK_CPU:-0}" = 1 ] && DEV=cpu
log() { echo "$*" | tee -a "$OUT/summary.txt"; }
case "${1:-}" in
  build)
    log "$(nvidia-smi -L 2>&1 | head -2)"
    t0=$(date +%s)
    if [ "$DEV" = cuda ]; then export RRR_CUDA=1 CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90}; else export RRR_CUDA=0; fi
    RRR_BUILD_JOBS=$(nproc) node scripts/build-native.mjs > "$OUT/build.log" 2>&1
    log "build rc=$? seconds=$(( $(date +%s) - t0 )) device=$DEV"
    cp build/cmake/native-build.log "$OUT/native-build.log" 2>/dev/null
    ;;
  run)
    node dist/src/cli/main.js info --json > "$OUT/info.json" 2>&1
    # device-placement: every op of generation and training on the GPU, none fallen back to the CPU.
    RRR_TEST_DEVICE=$DEV node --test --test-concurrency=1 dist/test/device-placement.test.js dist/test/engine-parity.test.js \
      dist/test/generator.test.js dist/test/generator-device-sampling.test.js dist/test/generator-adapter.test.js \
      dist/test/trainer.test.js > "$OUT/gpu-tests.log" 2>&1
    log "gpu tests rc=$? $(grep -E '^# (pass|fail)' "$OUT/gpu-tests.log" | tr '\n' ' ')"
    # The DESIGN.md anchor shape on the GPU; the tiny model in a CPU dry run.
    PRESET=qwen2.5-1.5b
    [ "$DEV" = cpu ] && PRESET=tiny
    M=/tmp/rrr-bench-$PRESET.gguf
    [ -f $M ] || node dist/src/cli/main.js make-tiny-model --preset $PRESET --type f16 --out $M > /dev/null
    timeout 300 node dist/src/cli/main.js bench --model $M --device $DEV --flash-attn on --json > "$OUT/bench.json" 2>> "$OUT/errors.log"
    log "bench rc=$?"
    # bench.json has both engines in llama-batched-bench's default layout (one KV stream per
    # sequence, as the DESIGN.md anchors were most likely measured); this one has both unified.
    timeout 120 node dist/src/cli/main.js bench --model $M --device $DEV --flash-attn on --kv-layout unified --no-train \
      --json > "$OUT/bench-unified.json" 2>> "$OUT/errors.log"
    log "bench (unified KV) rc=$?"
    # Our decode with host sampling (full logits rows copied back): what the in-graph head saves.
    timeout 120 node dist/src/cli/main.js bench --model $M --device $DEV --flash-attn on --device-sampling off --no-reference \
      --no-train --parallel 16 64 --json > "$OUT/bench-host-sampling.json" 2>> "$OUT/errors.log"
    log "bench (host sampling) rc=$?"
    if [ "$DEV" = cuda ]; then
      timeout 180 python3 scripts/device/peft_bench.py > "$OUT/peft.json" 2>> "$OUT/errors.log"
      log "peft rc=$? $(cat "$OUT/peft.json")"
    fi
    ;;
  *) echo "usage: gpu-check.sh build|run" >&2; exit 2 ;;
esac
