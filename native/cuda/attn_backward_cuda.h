// The attention backward node (native/src/attn_backward.h) on a CUDA device: cuBLAS's strided
// batched products and three small kernels, over a few sequences at a time in the node's own work
// space. Plain C++ types here, so the backend glue need not be compiled by nvcc.
#pragma once
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace rrr {

struct AttnBackwardCudaArgs {
    const float * q = nullptr, * k = nullptr, * v = nullptr, * dO = nullptr; // [hd, heads, T]
    float * dq = nullptr, * dk = nullptr, * dv = nullptr;                      // the same layouts
    float * scratch = nullptr;          // scratch_seqs sequences' worth (AttnBackwardShape::scratch_floats_per_seq)
    int64_t hd = 0, n_head = 0, n_head_kv = 0, L = 0, B = 0, scratch_seqs = 0;
    float scale = 1.0f;
    bool tf32 = false;
};

// Queues the work on `stream` (the handle must be bound to it). Returns nullptr, or what failed.
const char * attn_backward_cuda(const AttnBackwardCudaArgs & a, cublasHandle_t handle, cudaStream_t stream);

} // namespace rrr
