// A ggml backend that runs only our own nodes (GGML_OP_CUSTOM: attn_backward.h,
// swiglu_backward.h, lora_merge.h, lora_backward.h, loss_head.h,
// norm_backward.h) on a CUDA device, beside ggml-cuda: it claims those nodes and nothing
// else, and reads and writes ggml-cuda's own buffers (it reports ggml-cuda's buffer type as its
// own), so the scheduler copies nothing between them; ggml-cuda cannot run a GGML_OP_CUSTOM
// node, which without this goes to the CPU. Built only with CUDA (native/cuda/custom_backend.cpp).
#pragma once
#include "ggml-backend.h"

namespace rrr {

// For the CUDA backend `gpu` (which must outlive it; ggml_backend_free frees it). Throws
// rrr::Error when `gpu` is not ggml-cuda's or the device's stream or cuBLAS cannot be made.
ggml_backend_t custom_backend_new(ggml_backend_t gpu);

} // namespace rrr
