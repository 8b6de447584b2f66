#!/usr/bin/env bash
# Run HERE after prepare.sh, to spare the device its ~4.5-minute ggml-cuda build (a third of a
# 15-minute session): puts the CUDA addon that scripts/cuda-link-check.sh builds on this machine
# (sm_90 only, against a cuBLAS 13 wheel, the driver named but not linked) into .device/,
# compressed, with the stamp of the sources it was built from (source-stamp.sh). gpu-check.sh
# uses it where the stamp still matches and it loads and finds the GPU, and builds otherwise.
# It takes the CPU addon's place in .device/ (the carry limit is 64 MiB): the CUDA addon writes
# the bench model itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=.device
[ -f "$D/node.tar.xz" ] || { echo "prebuild-cuda: run scripts/device/prepare.sh first" >&2; exit 2; }
W=/tmp/rrr-cuda-check
stamp=$(bash scripts/device/source-stamp.sh)
if [ ! -f $W/out/rrr_native.node ] || [ "$(cat $W/out/stamp 2> /dev/null)" != "$stamp" ]; then
  bash scripts/cuda-link-check.sh
  [ "$(cat $W/out/stamp)" = "$stamp" ] || { echo "prebuild-cuda: the sources changed during the build" >&2; exit 1; }
fi
readelf -d $W/out/rrr_native.node | grep -q 'NEEDED.*libcuda.so.1' || { echo "prebuild-cuda: the addon does not name libcuda.so.1" >&2; exit 1; }
xz -T0 -6 -c $W/out/rrr_native.node > "$D/cuda-addon.node.xz"
echo "$stamp" > "$D/cuda-addon.stamp"
bash scripts/device/source-stamp.sh --list > "$D/cuda-addon.files"
rm -rf "$D/cpu-addon"
du -ch "$D"/* dist | tail -1
