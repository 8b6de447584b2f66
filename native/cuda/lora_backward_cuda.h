// The adapters' backward nodes (native/src/lora_backward.h) on a CUDA device: their products as
// cuBLAS calls (node_gemm_cuda.h).
#pragma once
#include <cublas_v2.h>

#include "ggml.h"

namespace rrr {

// Queues the node's products on `handle`'s stream. Returns nullptr, or what failed.
const char * lora_backward_cuda(const ggml_tensor * node, cublasHandle_t handle);

} // namespace rrr
