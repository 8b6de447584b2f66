// The backward pass of per-sequence causal attention as one graph node (GGML_OP_CUSTOM), where
// ggml's ops take about twenty: the probabilities recomputed, their gradient, and dQ, dK, dV.
//
// Why a node of our own: on an H200 ggml-cuda ran the op-by-op version in 78 ms of a 555 ms
// profiled step (Qwen2.5-1.5B shape, 16 x 512 tokens), a third of it permuting copies (CONT at
// 0.39 TB/s) and the rest out_prods, softmax and its gradient over [L, L] tensors that are
// written and read back. One node can read Q, K, V and dO where they are and keep the [L, L]
// work in a small space of its own, a few sequences at a time.
//
// The node runs on the CPU backend (attn_backward.cpp) and, in a CUDA build, on a
// backend of our own that shares ggml-cuda's buffers (native/cuda/): both read the same node.
#pragma once
#include <cstddef>
#include <cstdint>

#include "attn_backward_steps.h"
#include "ggml.h"

namespace rrr {

// What the node computes, decoded from it (its sources' shapes and its userdata).
struct AttnBackwardShape {
    int64_t hd = 0, n_head = 0, n_head_kv = 0; // head size, query heads, K/V heads
    int64_t L = 0, B = 0;                      // positions per sequence, sequences (T = L * B)
    float scale = 1.0f;                        // the softmax's input is scale * K·Q
    bool tf32 = false;                         // a GPU may round the products' inputs to TF32
    bool half = false;                         // the work space's steps multiply f16 copies (AttnBackwardArgs::half)
    int64_t scratch_seqs = 0;                  // sequences the node's work space holds (GPU)

    int64_t T() const { return L * B; }
    // Floats of work space per sequence (attn_scratch_bytes_per_seq: a multiple of 256 bytes).
    int64_t scratch_floats_per_seq() const { return attn_scratch_bytes_per_seq(hd, n_head, n_head_kv, L, half) / (int64_t) sizeof(float); }
};

// The node: q [hd, n_head, T] (rotated), k [hd, n_head_kv, T] (rotated), v [hd, n_head_kv, T] and
// dO [hd * n_head, T] (the loss's gradient at the attention output), all f32, T = L * B tokens in
// B sequences of L positions, each attending causally to its own. Query head h reads K/V head
// h / (n_head / n_head_kv). Returns one f32 tensor that holds dQ [hd, n_head, T] at offset 0,
// dK [hd, n_head_kv, T] after it, dV after that (attn_backward_part), then a work space of
// `scratch_bytes` rounded down to whole sequences, at least one (0: none). The GPU's kernels need
// it; the CPU's need none, and given one take the GPU's steps in slow loops instead
// (attn_backward_steps.h), to check them where there is no GPU. With `half` the work space's
// steps multiply f16 copies of Q, K, V, dO, the probabilities and their gradient, with f32 sums
// (AttnBackwardArgs::half); without a work space it changes nothing.
ggml_tensor * attn_backward(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * dO, int64_t L, float scale,
                            bool tf32, bool half, size_t scratch_bytes);

enum class AttnGrad { Q, K, V };
// dQ, dK or dV as a view of the node's result, [hd, heads, T].
ggml_tensor * attn_backward_part(ggml_context * ctx, ggml_tensor * node, AttnGrad which);

// Whether `t` is such a node, and its shape (valid only when it is).
bool is_attn_backward(const ggml_tensor * t);
AttnBackwardShape attn_backward_shape(const ggml_tensor * t);
// Its operands and work space where the node's tensors hold them, for its steps (attn_backward_steps.h).
AttnBackwardArgs attn_backward_args(ggml_tensor * t);

} // namespace rrr
