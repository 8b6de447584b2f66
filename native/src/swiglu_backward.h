// The SwiGLU's backward pass as one graph node (GGML_OP_CUSTOM): given the MLP's gate and up
// products g, u and the gradient at their SwiGLU, silu(g)·u, it writes the gradients at g and u.
//
// Why a node of our own: ggml's ops take three passes for it (a MUL, a SILU_BACK and a SWIGLU),
// each reading two [n_ff, T] f32 tensors and writing one, 36 bytes a number; one pass reads
// three and writes two, 20. At the Qwen2.5-1.5B shape (16 x 512 tokens) that is 33 of the
// step's 659 GB (`bench --train-census`), on the GPU's memory-bound side of the step.
//
// It may also write the SwiGLU itself, silu(g)·u, for the down projection's adapter gradients
// (lora_backward.h), which a kept or recomputed layer would otherwise rebuild in a pass of its
// own over g and u (12 bytes a number, where writing it here takes 4).
//
// And it may write both gradients rounded to f16 or bf16, for the frozen products that take
// them back through gate's and up's weights: those would convert the f32 gradients to their
// weights' type themselves (ggml-cuda in a pass of its own over each, 6 bytes a number), where
// the node writes 2 bytes more each. The same rounding (to nearest even) as theirs, so the same
// products.
//
// The node runs on the CPU backend (swiglu_backward.cpp) and, in a CUDA build, on our backend
// beside ggml-cuda (custom_backend.h); both read the same node and the same formula
// (swiglu_backward_math.h).
#pragma once
#include <cstdint>

#include "ggml.h"

namespace rrr {

// g, u and the SwiGLU's gradient d_act, [n, T] each, as the node reads them: g and u in f32 or
// (in16) in the copies' 16-bit type, d_act in f32 or (d16, with in16) in that type too.
struct SwigluBackwardArgs {
    const void * g = nullptr, * u = nullptr;
    bool in16 = false;
    const void * d_act = nullptr;
    bool d16 = false;
    float * d_gate = nullptr, * d_up = nullptr; // nullptr where only the copies are asked
    // The 16-bit copies (ggml_fp16_t or ggml_bf16_t numbers), or nullptr.
    void * gate16 = nullptr, * up16 = nullptr;
    float * act = nullptr;   // silu(g)·u, or nullptr
    void * act16 = nullptr;  // or rounded as the copies are
    bool bf16 = false; // the copies' type: bf16, else f16
    int64_t n = 0;     // numbers in each
};

// The node: one f32 tensor [n_ff, T, 2], the gradient at g in plane 0 and at u in plane 1
// (swiglu_backward_part); with `copies` GGML_TYPE_F16 or GGML_TYPE_BF16, [n_ff, T, 3], the two
// rounded copies side by side in plane 2 (swiglu_backward_copy); with `act`, silu(g)·u in one
// more plane after those (swiglu_backward_act). With `f32_grads` false, a tensor of the copies'
// type instead: the copies in planes 0 and 1, silu(g)·u (rounded alike) in plane 2. g and u may
// be of the copies' type (product16.h) instead of f32, and d_act too where they are.
// Non-contiguous inputs are copied first.
ggml_tensor * swiglu_backward(ggml_context * ctx, ggml_tensor * g, ggml_tensor * u, ggml_tensor * d_act, ggml_type copies = GGML_TYPE_F32, bool act = false,
                              bool f32_grads = true);

enum class SwigluGrad { Gate, Up };
// The gradient at g or u, a [n_ff, T] view of the node's result.
ggml_tensor * swiglu_backward_part(ggml_context * ctx, ggml_tensor * node, SwigluGrad which);
// Its 16-bit copy, a [n_ff, T] view in the copies' type (the node must have made them).
ggml_tensor * swiglu_backward_copy(ggml_context * ctx, ggml_tensor * node, SwigluGrad which);
// silu(g)·u, a [n_ff, T] view, f32 or in the copies' type (the node must have written it).
ggml_tensor * swiglu_backward_act(ggml_context * ctx, ggml_tensor * node);

// Whether `t` is such a node, and its operands where the node's tensors hold them (valid only when it is).
bool is_swiglu_backward(const ggml_tensor * t);
SwigluBackwardArgs swiglu_backward_args(ggml_tensor * t);

} // namespace rrr
