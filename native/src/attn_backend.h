// A ggml backend that runs only the attention backward node (attn_backward.h) on a CUDA device,
// beside ggml-cuda: it claims that node and nothing else, and reads and writes ggml-cuda's own
// buffers (it reports ggml-cuda's buffer type as its own), so the scheduler copies nothing
// between them; ggml-cuda cannot run a GGML_OP_CUSTOM node, which without this goes to the CPU.
// Built only with CUDA (native/cuda/attn_backend.cpp).
#pragma once
#include "ggml-backend.h"

namespace rrr {

// For the CUDA backend `gpu` (which must outlive it; ggml_backend_free frees it). Throws
// rrr::Error when `gpu` is not ggml-cuda's or the device's stream or cuBLAS cannot be made.
ggml_backend_t attn_backend_new(ggml_backend_t gpu);

} // namespace rrr
