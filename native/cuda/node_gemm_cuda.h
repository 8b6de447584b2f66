// Our nodes' products (native/src/node_gemm.h) as cuBLAS calls: f32 as ggml-cuda's OUT_PROD and
// f32 MUL_MAT make them, or 16-bit with f32 sums.
#pragma once
#include <cublas_v2.h>

#include "node_gemm.h"

namespace rrr {

// Queues the product on `handle`'s stream (an operand stored in another type than the product's
// first rounded into its work room). Returns nullptr, or what failed.
const char * node_gemm_cuda(const NodeGemm & g, cublasHandle_t handle);

} // namespace rrr
