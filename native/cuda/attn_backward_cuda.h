// The attention backward node (native/src/attn_backward.h) on a CUDA device: its steps
// (attn_backward_steps.h) bound to cuBLAS's strided batched products and kernels of ours.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "attn_backward_steps.h"

namespace rrr {

// Queues the work on `stream` (the handle must be bound to it). Returns nullptr, or what failed.
const char * attn_backward_cuda(const AttnBackwardArgs & a, cublasHandle_t handle, cudaStream_t stream);

} // namespace rrr
