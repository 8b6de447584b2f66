// The LoRA merge node (native/src/lora_merge.h) on a CUDA device: one tiled kernel.
#pragma once
#include <cuda_runtime.h>

#include "lora_merge.h"

namespace rrr {

// Queues the work on `stream`. Returns nullptr, or what failed.
const char * lora_merge_cuda(const LoraMergeArgs & a, cudaStream_t stream);

} // namespace rrr
