// The SwiGLU backward node (native/src/swiglu_backward.h) on a CUDA device: one elementwise kernel.
#pragma once
#include <cuda_runtime.h>

#include "swiglu_backward.h"

namespace rrr {

// Queues the work on `stream`. Returns nullptr, or what failed.
const char * swiglu_backward_cuda(const SwigluBackwardArgs & a, cudaStream_t stream);

} // namespace rrr
