// One node of ours on a GPU (or, in builds without CUDA, on the CPU's emulation of one:
// native/cuda-emu): the kernels and cuBLAS calls its kind takes, on `stream` and `handle`'s stream.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "ggml.h"

namespace rrr {

// Whether `t` is a node of ours.
bool is_node_of_ours(const ggml_tensor * t);

// Runs it, or says why it could not (nullptr: queued without error).
const char * run_node_cuda(ggml_tensor * t, cublasHandle_t handle, cudaStream_t stream);

} // namespace rrr
