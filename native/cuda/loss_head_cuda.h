// The LM head's node (native/src/loss_head.h) on a CUDA device: per chunk of rows two cuBLAS
// products (node_gemm_cuda.h) and one block per row between them.
#pragma once
#include <cublas_v2.h>

#include "ggml.h"

namespace rrr {

// Queues the node's steps on `handle`'s stream. Returns nullptr, or what failed.
const char * loss_head_cuda(ggml_tensor * node, cublasHandle_t handle);

} // namespace rrr
