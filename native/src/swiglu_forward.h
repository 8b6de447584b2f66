// The forward pass's SwiGLU, silu(g)·u, as one graph node (GGML_OP_CUSTOM) that writes it in the
// 16-bit type the down projection's product multiplies (f16 or bf16), for a merged step.
//
// Why a node of our own: ggml's SWIGLU writes f32 (its inputs' type), and the 16-bit product
// then converts that to its own type in a pass of its own: 4 bytes written and 6 moved again a
// number, where this writes 2. At the Qwen2.5-1.5B shape (16 x 512 tokens) that is 16.4 GB of a
// step. Only where nothing else reads the forward's SwiGLU in f32: merged (no adapter path) and
// with recomputation (the backward pass rebuilds what it needs).
//
// The node runs on the CPU backend (swiglu_forward.cpp) and, in a CUDA build, on our backend
// beside ggml-cuda (custom_backend.h), with the formula ggml-cuda's SWIGLU uses
// (swiglu_backward_math.h), rounded to nearest even.
#pragma once
#include <cstdint>

#include "ggml.h"

namespace rrr {

struct SwigluForwardArgs {
    const void * g = nullptr, * u = nullptr; // f32, or in the result's 16-bit type (in16)
    bool in16 = false;
    void * out = nullptr; // ggml_fp16_t or ggml_bf16_t numbers
    bool bf16 = false;
    int64_t n = 0;
};

// g and u [n_ff, T], f32 or both of `type` (product16.h's; non-contiguous ones are copied
// first); `type` GGML_TYPE_F16 or GGML_TYPE_BF16.
ggml_tensor * swiglu_forward(ggml_context * ctx, ggml_tensor * g, ggml_tensor * u, ggml_type type);

bool is_swiglu_forward(const ggml_tensor * t);
SwigluForwardArgs swiglu_forward_args(ggml_tensor * t);

} // namespace rrr
