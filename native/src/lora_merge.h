// A projection's merged weight W + s·B·A as one graph node (GGML_OP_CUSTOM), in W's type or
// bf16, and or instead its transpose (W + s·B·A)ᵀ for the backward pass.
//
// Why a node of our own: ggml's ops merge in three steps, s·Aᵀ, the product with B written as
// an f32 [n_in, n_out] delta, and an add into W's type: 12 bytes a weight, at the 0.75 TB/s an
// H200 ran the merged step's `fwd.lora` and `re.lora` roles (27 ms each a step at the
// Qwen2.5-1.5B shape), and a recomputed layer's backward then transposes the merged weight in a
// CONT (0.39 TB/s). One node reads W and writes the merged weight (4 bytes a weight), or both
// it and its transpose (6), summing the rank-r product where it writes.
//
// The node runs on the CPU backend (lora_merge.cpp) and, in a CUDA build, on our backend beside
// ggml-cuda (custom_backend.h). Only f32, f16 and bf16 weights: quantized ones are merged by
// ggml's ops (dequantised first).
#pragma once
#include <cstdint>

#include "ggml.h"

namespace rrr {

// Which merged weights the node writes: W + s·B·A as W is laid out, its transpose, or both.
enum class MergeOut { Weight = 1, Transposed = 2, Both = 3 };

// W [n_in, n_out] (f32, f16 or bf16), A [n_in, r] and B [r, n_out] (f32), as the node reads them.
struct LoraMergeArgs {
    const void * W = nullptr;
    const float * A = nullptr, * B = nullptr;
    void * out = nullptr;   // W + s·B·A, [n_in, n_out] in out_type; nullptr unless asked
    void * out_t = nullptr; // (W + s·B·A)ᵀ, [n_out, n_in] in out_type; nullptr unless asked
    ggml_type type = GGML_TYPE_F32;     // W's
    ggml_type out_type = GGML_TYPE_F32; // the merged weights': W's, or bf16
    int64_t n_in = 0, n_out = 0, r = 0;
    float scale = 1.0f;
};

// Whether the node can merge into this weight's type.
bool lora_merge_supports(ggml_type t);

// The node. Its result holds the merged weight first, then its transpose, whichever are asked
// (lora_merge_part gives each as a 2-D view), in `out_type`: W's own, or bf16 from any of the
// three (rounded once from the f32 sum).
ggml_tensor * lora_merge(ggml_context * ctx, ggml_tensor * W, ggml_tensor * A, ggml_tensor * B, float scale, MergeOut out, ggml_type out_type);
// The merged weight [n_in, n_out] (MergeOut::Weight) or its transpose [n_out, n_in] (Transposed).
ggml_tensor * lora_merge_part(ggml_context * ctx, ggml_tensor * node, MergeOut which);

bool is_lora_merge(const ggml_tensor * t);
LoraMergeArgs lora_merge_args(ggml_tensor * t);

} // namespace rrr
