// The RMS norm backward node (native/src/norm_backward.h) on a CUDA device: one block a row.
#pragma once
#include <cuda_runtime.h>

#include "norm_backward.h"

namespace rrr {

// Queues the node's kernel on `stream`. Returns nullptr, or what failed.
const char * norm_backward_cuda(const NormBackwardArgs & a, cudaStream_t stream);

} // namespace rrr
