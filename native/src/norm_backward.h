// An RMS norm's backward pass with what surrounds it in a layer's backward as one graph node
// (GGML_OP_CUSTOM): the projections' dx terms summed, times the norm's weight, through the
// norm's gradient, plus the residual stream's gradient.
//
// Why a node of our own: ggml's ops take that as ADDs of the terms, a MUL by the weight, an
// RMS_NORM_BACK and an ADD of the residual, each writing an [E, T] tensor that the next reads
// back: 32 bytes a number for one term, 12 more each further term. At the Qwen2.5-1.5B shape
// (16 x 512 tokens, every other node, bf16 merges, q, k, v and gate, up joined) the two norms a
// layer took 22.1 GB of the 356.5 planned a step, and the terms' ADDs 4.2 more; this reads each
// term, x and the residual's gradient once and writes once: 16 bytes a number for one term.
//
// The node runs on the CPU backend (norm_backward.cpp) and, in a CUDA build, on our backend
// beside ggml-cuda (custom_backend.h), with ggml's RMS_NORM_BACK formula
// (norm_backward_math.h).
#pragma once
#include <cstdint>
#include <vector>

#include "ggml.h"

namespace rrr {

constexpr int kNormBackMaxTerms = 7; // ggml's 10 sources, less x, the weight and the residual's

struct NormBackwardArgs {
    const float * dy[kNormBackMaxTerms] = {};
    int n_terms = 0;
    const float * x = nullptr, * w = nullptr;
    const float * resid = nullptr; // null: none
    float * out = nullptr;
    int64_t E = 0, T = 0;
    float eps = 0.0f;
};

// out [E, T] = resid + d/dx of the norm's output rms_norm(x) ⊙ w, given the gradient at it,
// Σ dyᵢ (each f32 [E, T]; non-contiguous ones are copied first). x f32 [E, T], w f32 [E];
// resid f32 [E, T] or null. At most kNormBackMaxTerms terms.
ggml_tensor * norm_backward(ggml_context * ctx, const std::vector<ggml_tensor *> & dys, ggml_tensor * x, ggml_tensor * w, ggml_tensor * resid, float eps);

bool is_norm_backward(const ggml_tensor * t);
NormBackwardArgs norm_backward_args(ggml_tensor * t);

} // namespace rrr
