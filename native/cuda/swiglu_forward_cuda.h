// The forward SwiGLU node (native/src/swiglu_forward.h) on a CUDA device: one elementwise kernel.
#pragma once
#include <cuda_runtime.h>

#include "swiglu_forward.h"

namespace rrr {

// Queues the work on `stream`. Returns nullptr, or what failed.
const char * swiglu_forward_cuda(const SwigluForwardArgs & a, cudaStream_t stream);

} // namespace rrr
