#!/usr/bin/env bash
# Prints a short hash of what the native addon is built from: our native sources, the CMake
# project and the llama.cpp pin. The same on this machine and the device (relative paths, file
# contents only), so gpu-check.sh can tell whether a CUDA addon built here (prebuild-cuda.sh)
# still matches the tree it was carried with. The order is the C locale's: sort follows the
# locale, and the device's (2026-11-27) put these files in another order than this machine's.
# With --list, the hashed lines themselves (one a file), for telling where two trees part.
set -euo pipefail
cd "$(dirname "$0")/../.."
files() {
  find native -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  sha256sum CMakeLists.txt third_party/llama.json
}
if [ "${1:-}" = --list ]; then files; else files | sha256sum | cut -c1-16; fi
