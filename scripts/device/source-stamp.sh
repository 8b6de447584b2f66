#!/usr/bin/env bash
# Prints a short hash of what the native addon is built from: our native sources, the CMake
# project and the llama.cpp pin. The same on this machine and the device (relative paths, file
# contents only), so gpu-check.sh can tell whether a CUDA addon built here (prebuild-cuda.sh)
# still matches the tree it was carried with.
set -euo pipefail
cd "$(dirname "$0")/../.."
{
  find native -type f -print0 | sort -z | xargs -0 sha256sum
  sha256sum CMakeLists.txt third_party/llama.json
} | sha256sum | cut -c1-16
