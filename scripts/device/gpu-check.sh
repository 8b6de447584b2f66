#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE (CUDA + cuBLAS, no node, no network) after scripts/device/prepare.sh
# here, with carry [".device", "dist"]. A session is lent 15 device-minutes in all, so the usual
# way is one call that does everything inside a 10-minute command:
#   bash scripts/device/gpu-check.sh all     # build, bench vs llama.cpp, PEFT, GPU tests
# `build` and `run` are its two halves, for a warm machine (the build folder stays between calls).
# `all` works to a deadline (GPU_CHECK_SECONDS, default 570 s) and does the steps in the order of
# GPU_CHECK_STEPS (default "bench tests extra"; "train" is the profiled training bench, "train:a,b"
# only its variants labelled a and b, "precision" the gradients of 16-bit bases against f32,
# "fusion" the kept-layers test without ggml-cuda's op fusion, "fusedtests" our fused nodes'
# tests alone, "fusedtests:notf32" those without TF32 in cuBLAS). With
# scripts/device/prebuild-cuda.sh run here as well, the build is the CUDA
# addon built on the CPU machine where its sources match (no nvcc at all); otherwise:
# while nvcc builds ggml-cuda (niced, so it does not starve the timed Python), PEFT's anchor runs
# on the idle GPU and the bench model is written with the CPU addon carried in .device/cpu-addon
# (if it fails there, the model is made after the build). Everything is logged under $OUT in at
# most 8 files (the device tool returns no more). GPU_CHECK_CPU=1 does a CPU-only dry run.
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
DEADLINE=$((T0 + ${GPU_CHECK_SECONDS:-570}))
OUT=${OUT:-/tmp/gpu-check-out}
mkdir -p "$OUT"
D=.device
# node is unpacked outside .device so a dry run here leaves the carried folder as prepare.sh made it.
NODE_DIR=/tmp/rrr-device-node
if [ ! -x $NODE_DIR/bin/node ]; then
  mkdir -p $NODE_DIR && tar -xJf "$D/node.tar.xz" -C $NODE_DIR
fi
[ -d node_modules ] || tar -xzf "$D/node_modules.tar.gz"
[ -f third_party/llama.cpp/CMakeLists.txt ] || tar -xzf "$D/llama-src.tar.gz"
export PATH="$NODE_DIR/bin:$PATH"
DEV=cuda
[ "${GPU_CHECK_CPU:-0}" = 1 ] && DEV=cpu
CLI="node dist/src/cli/main.js"
PRESET=qwen2.5-1.5b
[ "$DEV" = cpu ] && PRESET=tiny
M=/tmp/rrr-bench-$PRESET.gguf

log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }
# Seconds left before the deadline, capped at $1; 0 when less than $2 are left.
budget() { local left=$((DEADLINE - $(date +%s))); [ $left -gt "$1" ] && left=$1; [ $left -lt "${2:-20}" ] && left=0; echo $left; }

# A CUDA addon built on the CPU machine (prebuild-cuda.sh) where it matches this tree's sources
# and finds the GPU: the build then takes seconds instead of ~4.5 minutes.
use_prebuilt() {
  [ "$DEV" = cuda ] && [ -f $D/cuda-addon.node.xz ] || return 1
  local want have
  want=$(cat $D/cuda-addon.stamp)
  have=$(bash scripts/device/source-stamp.sh)
  if [ "$want" != "$have" ]; then
    log "prebuilt CUDA addon is for sources $want, these are $have: building"
    # where the trees part (errors.log), should the files say the same and only their order differ
    [ -f $D/cuda-addon.files ] && { echo "locale: $(locale 2>&1 | tr '\n' ' ')"; diff $D/cuda-addon.files <(bash scripts/device/source-stamp.sh --list) | head -20; } >> "$OUT/errors.log"
    return 1
  fi
  mkdir -p build/Release
  xz -dc $D/cuda-addon.node.xz > build/Release/rrr_native.node
  # It was linked here against a cuBLAS wheel: find the machine's CUDA 13 runtime and cuBLAS
  # wherever they are (a build on the machine would have them in its run path).
  local f dir dirs=
  for f in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
    dir=$(ldconfig -p 2> /dev/null | awk -v f=$f '$1 == f { print $NF; exit }')
    [ -n "$dir" ] || dir=$(find /usr/local /usr/lib /opt -name $f 2> /dev/null | head -1)
    [ -n "$dir" ] && dirs="$dirs:$(dirname "$dir")"
  done
  export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if $CLI info --json 2>> "$OUT/errors.log" | grep -q '"type": "gpu"'; then
    log "prebuilt CUDA addon (sources $have) loads and finds the GPU: no build"
    return 0
  fi
  log "prebuilt CUDA addon did not load or found no GPU: building"
  rm -f build/Release/rrr_native.node
  return 1
}

do_build() {
  log "$(nvidia-smi -L 2>&1 | head -1)"
  use_prebuilt && return 0
  local t0
  t0=$(date +%s)
  if [ "$DEV" = cuda ]; then export RRR_CUDA=1 CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90}; else export RRR_CUDA=0; fi
  RRR_BUILD_JOBS=$(nproc) nice -n 19 node scripts/build-native.mjs > "$OUT/build.log" 2>&1
  local rc=$?
  log "build rc=$rc seconds=$(( $(date +%s) - t0 )) device=$DEV"
  [ $rc = 0 ] || tail -c 200000 build/cmake/native-build.log > "$OUT/build.log" 2>/dev/null
  return $rc
}

# make-tiny-model writes atomically: a writer that fails part-way leaves no file behind.
make_model() {
  [ -f $M ] || $CLI make-tiny-model --preset $PRESET --type f16 --out $M > /dev/null 2>> "$OUT/errors.log"
}

# The DESIGN.md anchor shape: both engines in llama-batched-bench's default layout (one KV
# stream per sequence, as the anchors were most likely measured), plus the training row.
do_bench() {
  local s; s=$(budget 240 60)
  [ "$s" = 0 ] && { log "bench skipped: out of time"; return; }
  timeout "$s" $CLI bench --model $M --device $DEV --flash-attn on --repeat 2 --json > "$OUT/bench.json" 2>> "$OUT/errors.log"
  log "bench rc=$?"
}

do_tests() {
  local s; s=$(budget 240 40)
  [ "$s" = 0 ] && { log "gpu tests skipped: out of time"; return; }
  # device-placement: every op of generation and training on the GPU, none fallen back to the CPU.
  RRR_TEST_DEVICE=$DEV timeout "$s" node --test --test-concurrency=1 dist/test/device-placement.test.js \
    dist/test/engine-parity.test.js dist/test/generator.test.js dist/test/generator-device-sampling.test.js \
    dist/test/generator-adapter.test.js dist/test/trainer-gradients.test.js dist/test/trainer-nodes.test.js dist/test/trainer-memory.test.js dist/test/trainer-loss.test.js dist/test/trainer-adapters.test.js > "$OUT/gpu-tests.log" 2>&1
  log "gpu tests rc=$? $(grep -E '^# (pass|fail)' "$OUT/gpu-tests.log" | tr '\n' ' ')"
}

# LoRA gradients of f16 (ggml's f16 cuBLAS sums, then with bf16 cuBLAS) and bf16 bases against
# the f32 base's, on the 1.5B shape cut to 4 layers: one JSON line each into summary.txt.
do_precision() {
  local s; s=$(budget 120 40)
  [ "$s" = 0 ] && { log "precision skipped: out of time"; return; }
  timeout "$s" node scripts/device/grad-precision.mjs --device $DEV > /tmp/precision.jsonl 2>> "$OUT/errors.log"
  log "precision rc=$?"
  while read -r line; do log "precision: $line"; done < /tmp/precision.jsonl
}

# Both engines with one unified window of cells for the whole batch, then ours with host sampling.
do_extra_benches() {
  local s; s=$(budget 90 40)
  [ "$s" = 0 ] && { log "unified bench skipped: out of time"; return; }
  timeout "$s" $CLI bench --model $M --device $DEV --flash-attn on --kv-layout unified --no-train \
    --json > "$OUT/bench-unified.json" 2>> "$OUT/errors.log"
  log "bench (unified KV) rc=$?"
  s=$(budget 60 30)
  [ "$s" = 0 ] && { log "host-sampling bench skipped: out of time"; return; }
  timeout "$s" $CLI bench --model $M --device $DEV --flash-attn on --device-sampling off --no-reference \
    --no-train --parallel 16 64 --json > "$OUT/bench-host-sampling.json" 2>> "$OUT/errors.log"
  log "bench (host sampling) rc=$?"
}

do_peft() {
  [ "$DEV" = cuda ] || return 0
  # Its one JSON line goes into summary.txt: the device returns at most 8 files.
  timeout 200 python3 scripts/device/peft_bench.py > /tmp/peft.json 2>> "$OUT/errors.log"
  log "peft rc=$? $(cat /tmp/peft.json)"
}

# Training variants, each one `bench` run appended as a line {"label", "report"} to
# bench-train.jsonl (one file, as the device returns at most 8). Most wanted first. The H200 (2026-11-26) gave
# 0.64x PEFT for the default, 0.68x merged, 0.71x merged with a 16 GiB budget, and showed time not
# following the census's bytes (roles at a quarter of the memory bandwidth), so next: whether the
# GPU idles between kernels (`util`: 20 steps under nvidia-smi dmon's SM utilisation, into
# summary.txt) and what ggml-cuda's CUDA graphs do for a step (`nographs`, the same 20 steps
# without them); then the default step (since the H200: the adapter merged into f16 weights, the
# frozen weights transposed in every step) and the fused one (the default before) profiled (time
# per op kind and role) and counted (census, ggml-cuda's kernels), the 16 GiB budgets, the adapter
# path, no flash attention, the transposed weights kept, no recomputation, and bf16 cuBLAS.
# `budget16-f16` and `norecompute-f16` keep gate and up in f16 (StepOptions.keptF16, off by
# default: 19 kept layers planned in 16 GiB against 13 in f32, the same bytes moved, 3.4 TFLOP
# less recomputed, but four casts a kept layer at the H200's 0.5-0.6 TB/s CPY rate).
# `merged-split` is the default without its joined backward products ([Wq | Wk | Wv]ᵀ with
# dq, dk and dv side by side, which fuse 'bytes' picks): the copies that joining takes are
# ggml-cuda's CPY and CONCAT, 0.5 to 0.6 TB/s in the H200's profile, where the adds and
# conversions that separate products need ran at 1.2 to 2.4.
# `fusedattn` and `budget16-fusedattn` take attention back in our own node (TrainerOptions.
# fusedAttnBackward: cuBLAS batched TF32 products on a backend beside ggml-cuda, never run on a
# GPU before): the H200's profile gave ggml's ops 78 ms of the attention backward a step.
# `fusedattn-ws64` and `-ws512` give it 64 and 512 MiB of work space instead of 256 (2, 8 and
# 16 sequences at a time at 16 x 512 tokens, 31 MiB each: batched products of 4, 16 and 32);
# `-ws32` one sequence at a time, whose [L, L] passes (25 MB) fit the H100's and H200's 50 MB L2.
# `fusedattn-nographs` without ggml-cuda's CUDA graphs: the node cuts each step into 2 n_layer + 1
# pieces, and ggml-cuda captures a graph for each of its own.
# `fusedmlp` takes the SwiGLU back in our own node (TrainerOptions.fusedMlpBackward: one
# elementwise kernel for what ggml's MUL, SILU_BACK and SWIGLU did, 33 of 659 GB planned at this
# shape); `fusedboth` with the attention's node as well, `budget16-fusedboth` in 16 GiB.
# `fusedmerge` merges with our node (TrainerOptions.fusedMerge: W + s·B·A in one kernel, a
# recomputed layer's transpose with it; 24 of 658 GB and 977 of 6,538 ops planned at this shape,
# where the H200 ran the merges' roles at 0.75 TB/s); `fusedall` takes all three nodes, and
# `budget16-fusedall` in 16 GiB.
# The 16 GiB budgets weigh splitting the batch so that more layers keep their activations
# (StepOptions.keptSplit, on by default: at this shape 2 micro-batches of 8 sequences with all 28
# layers kept, where one keeps 13; 8.4 TFLOP fewer, 8 GB more planned); `budget16-nosplit` and
# `budget16-fusedall-nosplit` keep the fewest micro-batches that fit, as before. Micro-batches of
# one shape now run one graph (built once a step), so ggml-cuda sees the same graph twice in a
# row and may capture it as a CUDA graph on the second: `budget16-nographs` says what that costs.
# `mergebf16` merges into bf16 with our node (TrainerOptions.mergeBf16): ggml-cuda's bf16
# products write f32 results where its f16 ones write f16 converted after (604.8 -> 550.1 GB
# planned at this shape); `budget16-fusedall-bf16` with all three nodes in 16 GiB (485.9 GB
# against 520.8). `fusedattn-f16` runs the attention node's products on f16 copies
# (TrainerOptions.fusedAttnF16: tensor-core f16 products instead of TF32, 28 bytes per [L, L]
# number instead of 40); `budget16-best` is everything untimed together in 16 GiB.
# `fusedlora` takes each group of adapters' gradients in two nodes of ours (TrainerOptions.
# fusedLoraBackward: cuBLAS f32 products in the runs of our other nodes, where ggml's ops took
# about a dozen small ops an adapter), against `fusedmerge`; `budget16-best-lora` adds it to
# `budget16-best` (5,312 ops and 413.9 GB planned against 7,328 and 431.2: the same FLOPs, and
# down's adapter reads silu(g)·u from the SwiGLU node instead of a SwiGLU rebuilt for it). With
# the SwiGLU node, its gradients come with 16-bit copies for gate's and up's dx products, and a
# merged 16-bit step's forward SwiGLU is a node of ours (464.1 GB planned for `budget16-best`
# before these, 431.2 after). `budget16-best-lora16` takes the MLP's adapter gradients in bf16
# (TrainerOptions.fusedLora16: PEFT's bf16 precision there) from the SwiGLU node's bf16 copies
# and silu(g)·u, which then writes 16 bits alone: 368.9 GB planned.
# `fusedhead` takes the LM head and the loss's gradient at it in one node of ours
# (TrainerOptions.fusedHead: per chunk cuBLAS writes f32 logits, one block a row reads them twice
# and writes -coef·p over them in 16 bits, cuBLAS multiplies that by the head as stored), against
# `default`; `budget16-best-head` adds it to `budget16-best-lora16`, and `budget16-best-head2k`
# with 2,048-row chunks (the head read half as often). `fusednorm` takes each layer's norms'
# backward in nodes of ours (TrainerOptions.fusedNormBackward: the dx terms' sum, the weight,
# RMS_NORM_BACK and the residual's ADD in one pass) against `default`, and `budget16-best-norm`
# adds them to `budget16-best-head`: 55 runs of ours more a micro-batch, each two host waits,
# which is what this measures. Since d4611ab the attention node's steps skip the [L, L] blocks
# the causal mask zeroes whole (20 cuBLAS calls a chunk instead of 5). Planned at 28 kept layers,
# 2 x 4,096 tokens, 1,104-row chunks (GB, ops, MiB of compute buffer): `budget16-best-lora16`
# 354.1, 5,312, 12,169; `-head` 341.7, 5,210, 11,751; with the norms too (`-norm`) 327.8, 4,934,
# 11,751; that with 2,048-row chunks 324.0. `gateup16` writes the MLP's gate and up products in
# 16 bits by our node (TrainerOptions.gateUp16), read so by the SwiGLU's nodes and kept so;
# `budget16-best-gu16` adds it to `budget16-best-norm`: 303.1 GB, 4,934 ops, 7,831 MiB in the
# same two micro-batches. The memory it frees lets one micro-batch fit with 22 layers kept:
# `budget16-best-gu16-1mb` (--no-train-kept-split) plans 295.2 GB in 2,575 ops with 6% more
# FLOPs (56.45 TFLOP), which the planner prices a little above two micro-batches; the GPU says
# which is faster. `-sg16` adds the SwiGLU's gradient in 16 bits (TrainerOptions.swigluGrad16):
# 294.9 GB in two micro-batches, 287.0 GB in one. `-dw` variants wait on the device around runs of
# ours (--train-node-waits device: our backend fronts ggml-cuda, custom_backend.h) where the
# scheduler waits on the host twice a run (143 runs a micro-batch in `budget16-best-sg16`).
# `-kn` keeps the kept layers' norms (--train-kept-norms) where the backward pass rebuilds them:
# 294.9 -> 283.6 GB and 4,934 -> 4,710 ops planned, 7,831 -> 8,968 MiB of compute buffer;
# `-4k` reads the LM head once a micro-batch (4,096-row chunks): 278.0 GB, 10,706 MiB.
# A third field sets environment variables for that run.
# The flags the `budget16-best*` variants build on, each the one before and more.
BEST="--train-memory-gib 16 --train-fused-attn-backward --train-fused-attn-f16 --train-fused-mlp-backward --train-fused-merge --train-merge-bf16"
BEST_LORA16="$BEST --train-fused-lora-backward --train-fused-lora-16"
BEST_NORM="$BEST_LORA16 --train-fused-head --train-fused-norm-backward"
BEST_SG16="$BEST_NORM --train-gate-up-16 --train-swiglu-grad-16"
TRAIN_VARIANTS=(
  # --train-all-nodes (every node of ours and device waits, train --all-nodes) in 16 GiB, where the
  # planner's GPU prices (ops and host waits counted since 2026-11-27) should now take one
  # micro-batch, 5 timed steps; the same profiled (each op waited on alone) and counted; and at
  # the default budget (80% of the free memory).
  "budget16-allnodes|--train-memory-gib 16 --train-all-nodes --train-steps 5"
  "budget16-allnodes-prof|--train-memory-gib 16 --train-all-nodes --train-profile --train-census"
  "allnodes|--train-all-nodes --train-steps 5"
  "util|--train-steps 20"
  "nographs|--train-steps 20|GGML_CUDA_DISABLE_GRAPHS=1"
  "default|--train-profile --train-census"
  "fusedattn|--train-fused-attn-backward --train-profile --train-census"
  "budget16-fusedattn|--train-memory-gib 16 --train-fused-attn-backward"
  "fusedmlp|--train-fused-mlp-backward --train-profile --train-census"
  "fusedboth|--train-fused-attn-backward --train-fused-mlp-backward --train-profile --train-census"
  "budget16-fusedboth|--train-memory-gib 16 --train-fused-attn-backward --train-fused-mlp-backward"
  "fusedmerge|--train-fused-merge --train-profile --train-census"
  "fusedall|--train-fused-attn-backward --train-fused-mlp-backward --train-fused-merge --train-profile --train-census"
  "budget16-fusedall|--train-memory-gib 16 --train-fused-attn-backward --train-fused-mlp-backward --train-fused-merge"
  "mergebf16|--train-fused-merge --train-merge-bf16 --train-profile --train-census"
  "fusedattn-f16|--train-fused-attn-backward --train-fused-attn-f16 --train-profile --train-census"
  "budget16-best|$BEST"
  "fusedlora|--train-fused-merge --train-fused-lora-backward --train-profile --train-census"
  "budget16-best-lora|$BEST --train-fused-lora-backward"
  "budget16-best-lora16|$BEST_LORA16"
  "fusedhead|--train-fused-head --train-profile --train-census"
  "budget16-best-head|$BEST_LORA16 --train-fused-head"
  "budget16-best-head2k|$BEST_LORA16 --train-fused-head --train-chunk-rows 2048"
  "fusednorm|--train-fused-norm-backward --train-profile --train-census"
  "budget16-best-norm|$BEST_NORM"
  "gateup16|--train-fused-mlp-backward --train-fused-merge --train-fused-lora-backward --train-gate-up-16 --train-profile --train-census"
  "budget16-best-gu16|$BEST_NORM --train-gate-up-16"
  "budget16-best-gu16-1mb|$BEST_NORM --train-gate-up-16 --no-train-kept-split"
  "budget16-best-sg16|$BEST_SG16"
  "budget16-best-sg16-1mb|$BEST_SG16 --no-train-kept-split"
  "budget16-best-sg16-dw|$BEST_SG16 --train-node-waits device"
  "budget16-best-sg16-kn|$BEST_SG16 --train-kept-norms"
  "budget16-best-sg16-kn-dw|$BEST_SG16 --train-kept-norms --train-node-waits device"
  "budget16-best-sg16-kn-4k|$BEST_SG16 --train-kept-norms --train-chunk-rows 4096"
  "budget16-best-sg16-kn-4k-dw|$BEST_SG16 --train-kept-norms --train-chunk-rows 4096 --train-node-waits device"
  "budget16-best-sg16-1mb-dw|$BEST_SG16 --no-train-kept-split --train-node-waits device"
  "fusedall-dw|--train-fused-attn-backward --train-fused-mlp-backward --train-fused-merge --train-node-waits device"
  "budget16-fusedall-bf16|--train-memory-gib 16 --train-fused-attn-backward --train-fused-mlp-backward --train-fused-merge --train-merge-bf16"
  "fusedattn-ws32|--train-fused-attn-backward --train-attn-workspace-mib 32"
  "fusedattn-ws64|--train-fused-attn-backward --train-attn-workspace-mib 64"
  "fusedattn-ws512|--train-fused-attn-backward --train-attn-workspace-mib 512"
  "fusedattn-nographs|--train-fused-attn-backward|GGML_CUDA_DISABLE_GRAPHS=1"
  "fused|--no-train-merge-adapter --train-profile --train-census"
  "merged-split|--train-merge-adapter --train-fuse-adapter off --train-profile"
  "budget16|--train-memory-gib 16"
  "budget16-nosplit|--train-memory-gib 16 --no-train-kept-split"
  "budget16-nographs|--train-memory-gib 16|GGML_CUDA_DISABLE_GRAPHS=1"
  "budget16-fusedall-nosplit|--train-memory-gib 16 --no-train-kept-split --train-fused-attn-backward --train-fused-mlp-backward --train-fused-merge"
  "budget16-f16|--train-memory-gib 16 --train-kept-f16"
  "budget16-fused|--train-memory-gib 16 --no-train-merge-adapter"
  "budget16-cache|--train-memory-gib 16 --train-transposed cache"
  "path|--no-train-merge-adapter --train-fuse-adapter off --train-profile --train-census"
  "noflash|--flash-attn off --train-profile --train-census"
  "cache|--train-transposed cache"
  "norecompute|--no-train-recompute"
  "norecompute-f16|--no-train-recompute --train-kept-f16"
  "bf16|--train-cublas bf16 --train-census"
)
# $1: the labels to run, comma-separated (`train:default,bf16` in GPU_CHECK_STEPS); all if empty.
do_train_benches() {
  local v label flags envs s rc dmon
  for v in "${TRAIN_VARIANTS[@]}"; do
    label=${v%%|*}
    flags=${v#*|}
    envs=
    [[ $flags == *"|"* ]] && { envs=${flags#*|}; flags=${flags%%|*}; }
    [ -z "${1:-}" ] || [[ ",$1," == *",$label,"* ]] || continue
    s=$(budget "${GPU_CHECK_VARIANT_SECONDS:-120}" 35)
    [ "$s" = 0 ] && { log "training bench $label skipped: out of time"; return; }
    # The device-side waits (-dw) are the newest path: one that hangs would spend the deadline on
    # each of its siblings, so after a time-out the others are skipped.
    if [[ $label == *-dw ]] && [ -n "${dw_hung:-}" ]; then log "training bench $label skipped: $dw_hung timed out"; continue; fi
    dmon=
    if [ "$label" = util ] && command -v nvidia-smi > /dev/null; then
      nvidia-smi dmon -s u -d 1 > /tmp/dmon.log 2>&1 &
      dmon=$!
    fi
    # shellcheck disable=SC2086
    env $envs timeout "$s" $CLI bench --model $M --device $DEV --no-generation $flags --json > /tmp/bench-train-one.json 2>> "$OUT/errors.log"
    rc=$?
    [[ $label == *-dw ]] && { [ $rc = 124 ] || [ $rc = 137 ]; } && dw_hung=$label
    if [ -n "$dmon" ]; then
      kill "$dmon" 2> /dev/null
      # SM utilisation (%) once a second, in order: the model loading, then the steps.
      log "dmon sm% (util): $(awk '$1 ~ /^[0-9]+$/ {print $2}' /tmp/dmon.log | tr '\n' ' ')"
    fi
    [ $rc = 0 ] && node -e 'const fs=require("fs");fs.appendFileSync(process.argv[2], JSON.stringify({label:process.argv[1],report:JSON.parse(fs.readFileSync("/tmp/bench-train-one.json","utf8"))})+"\n")' "$label" "$OUT/bench-train.jsonl"
    log "bench (training, $label: $flags${envs:+ with $envs}) rc=$rc"
  done
}

# Kept layers' gradients parted from recomputed ones on the H200 only for qwen3 (3e-5), likely as
# ggml-cuda fuses RMS_NORM + MUL + ROPE where they are neighbours: without its fusion they should
# be the same bits again.
do_fusion_check() {
  local s; s=$(budget 60 20)
  [ "$s" = 0 ] && { log "fusion check skipped: out of time"; return; }
  GGML_CUDA_DISABLE_FUSION=1 RRR_TEST_DEVICE=$DEV timeout "$s" node --test --test-name-pattern "kept layers give" \
    dist/test/trainer-memory.test.js > /tmp/fusion.log 2>&1
  log "kept layers without ggml-cuda's fusion rc=$? $(grep -E '^# (pass|fail)' /tmp/fusion.log | tr '\n' ' ')"
}

# Our fused nodes' tests alone (attention, SwiGLU, merges, the adapters' gradients, the LM head,
# the norms: finite differences, ggml ops' gradients, one sequence at a time, nothing off the
# device), before their timing is worth reading; failures and the backend's messages go to
# errors.log. On this project's 2-core CPU they took 70 s before the norms' test (with the CPU's
# slow loops for the head's steps), so up to 150 s here.
# $1 "notf32": with NVIDIA_TF32_OVERRIDE=0, which keeps cuBLAS from TF32 where ggml-cuda's handles
# allow it (its f32 products): the H200's run of 2026-11-27 parted the attention node's gradients
# from finite differences by 2.1% on an f32 model, where the node's own products are f32.
do_fused_tests() {
  local s envs= tag=; s=$(budget 150 20)
  [ "${1:-}" = notf32 ] && { envs="NVIDIA_TF32_OVERRIDE=0"; tag=" without TF32"; }
  [ "$s" = 0 ] && { log "fused node tests$tag skipped: out of time"; return; }
  # the names and files test/cuda-emulation.test.ts runs on the CPU's emulation of a GPU
  local pattern files
  pattern=$(node --input-type=module -e "import('./dist/test/helpers/fused-tests.js').then((m) => console.log(m.FUSED_TEST_PATTERN))")
  files=$(node --input-type=module -e "import('./dist/test/helpers/fused-tests.js').then((m) => console.log(m.FUSED_TEST_FILES.map((f) => 'dist/test/' + f).join(' ')))")
  # shellcheck disable=SC2086
  env $envs RRR_TEST_DEVICE=$DEV timeout "$s" node --test --test-concurrency=1 --test-name-pattern "$pattern" $files > /tmp/fusedtests.log 2>&1
  local rc=$?
  log "fused node tests$tag rc=$rc $(grep -E '^# (pass|fail)' /tmp/fusedtests.log | tr '\n' ' ')"
  # every finite-difference gap, passed or not: with and without TF32 side by side
  grep -o 'FD-GAPS.*' /tmp/fusedtests.log | sed "s/^/${tag:- with TF32}: /" >> "$OUT/fd-gaps.log"
  [ $rc = 0 ] || { echo "fused node tests$tag:"; grep -E "error:|RRR-NODES|not ok" /tmp/fusedtests.log | head -40; } >> "$OUT/errors.log"
}

# GPU_CHECK_STEPS picks and orders the steps after the build (default: the full check).
do_run() {
  log "info: $($CLI info --json 2>&1 | tr -d '\n')"
  make_model
  for step in ${GPU_CHECK_STEPS:-bench tests extra}; do
    case $step in
      bench) do_bench ;;
      tests) do_tests ;;
      extra) do_extra_benches ;;
      train) do_train_benches ;;
      train:*) do_train_benches "${step#train:}" ;;
      precision) do_precision ;;
      fusion) do_fusion_check ;;
      fusedtests) do_fused_tests ;;
      fusedtests:notf32) do_fused_tests notf32 ;;
      *) log "unknown step $step" ;;
    esac
  done
}

case "${1:-}" in
  build) do_build ;;
  run) do_run; do_peft ;;
  all)
    # The GPU is idle while nvcc works: PEFT's anchor runs then, alone on the GPU.
    do_peft &
    peft=$!
    ( [ -f $D/cpu-addon/rrr_native.node ] && RRR_NATIVE_ADDON=$PWD/$D/cpu-addon/rrr_native.node make_model \
      && log "bench model written during the build" ) &
    gen=$!
    do_build || { wait; exit 1; }
    # A prebuilt addon left no build to wait for: the model is written now, niced, while PEFT runs.
    wait $gen
    [ -f $M ] || ( renice -n 19 $BASHPID > /dev/null; make_model && log "bench model written after the build" )
    wait $peft
    do_run
    ;;
  *) echo "usage: gpu-check.sh all|build|run" >&2; exit 2 ;;
esac
# The figures themselves, last: the device tool's reply carries the end of the output.
[ "${1:-}" = build ] || node scripts/device/summarize.mjs "$OUT" | tee -a "$OUT/summary.txt"
log "done"
