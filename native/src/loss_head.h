// The LM head and the loss's gradient at it over a micro-batch's loss rows as one graph node
// (GGML_OP_CUSTOM), where ggml's ops take a dozen a chunk of rows.
//
// Why a node of our own: per chunk of rows ggml's ops write the logits (f16 from ggml-cuda's
// cuBLAS, converted to f32), a softmax of them, the probabilities converted to f16 for the
// product with the transposed head, then the target's log-prob and the loss's coefficient in
// small ops: at the Qwen2.5-1.5B shape (16 x 512 tokens, 1,104-row chunks) 37.5 of the 375 GB
// planned for a step. The node writes f32 logits once, reads them twice (the row's softmax
// statistics; then its gradient, written as 16 bits over them), and multiplies by the head as
// stored, with no transposed copy of it: about 27.5 GB.
//
// Per chunk the node takes two products (node_gemm.h) and one pass over each row; on the CPU
// without a work space each thread takes whole rows in plain loops, and with one (a GPU's
// node, or a test's) the GPU's steps run in loops on one thread, to check them.
#pragma once
#include <cstdint>
#include <vector>

#include "ggml.h"
#include "node_gemm.h"

namespace rrr {

// What the loss's coefficient at a row reads besides its log-prob (train_graph.h's LossSpec).
struct LossHeadSpec {
    bool backward = false; // the gradient at the rows' hidden states, not only their log-probs
    bool has_old = false;  // a clipped ratio against old log-probs
    bool kl = false;       // KL to the reference model's log-probs
    float clip_eps = 0.2f;
};

// The coefficient's inputs, per row, f32 [R] (null where the spec reads none).
struct LossHeadRows {
    ggml_tensor * targets = nullptr; // i32 [R]: the token each row's log-prob is of
    ggml_tensor * neg_w = nullptr;   // -(advantage x mask) per row: dL/d(log p) before ratio and KL
    ggml_tensor * old_lp = nullptr;
    ggml_tensor * kl_m = nullptr;    // β x mask per row
    ggml_tensor * ref_lp = nullptr;
};

// The node over h [E, R] (the final norm's output at the loss rows, f32) and the head W [E, V]
// (f32, f16 or bf16): each row's log-prob of its target and, with spec.backward, dL/dh [E, R],
// in one f32 tensor read through loss_head_lp and loss_head_dh. `chunk_rows` > 0 gives it a
// work space for that many rows' logits at a time (and their 16-bit gradient over them), which
// a GPU needs; 0 none.
ggml_tensor * loss_head(ggml_context * ctx, ggml_tensor * h, ggml_tensor * W, const LossHeadRows & rows, const LossHeadSpec & spec, int64_t chunk_rows);
// The log-probs [1, R] and dL/dh [E, R] as views of the node.
ggml_tensor * loss_head_lp(ggml_context * ctx, ggml_tensor * node);
ggml_tensor * loss_head_dh(ggml_context * ctx, ggml_tensor * node);

bool is_loss_head(const ggml_tensor * t);

// A chunk of rows as a GPU's steps take it: logits = Wᵀh into the work space, one pass per row
// (each row's log-prob; its target's part of dh, coef W[t]; G = -coef p over its logits), then
// dh += W G.
struct LossHeadChunk {
    NodeGemm logits;
    int64_t r0 = 0, n = 0; // the chunk's first row and its rows
    float * rows = nullptr; // the logits: row i at rows + i * V
    ggml_type g_type = GGML_TYPE_F32; // G's type, W's: written over each row's first bytes
    NodeGemm dh;            // m = 0 without the backward pass; beta 1
};

// Everything a row's pass reads and writes, on the node's data.
struct LossHeadArgs {
    int64_t E = 0, V = 0, R = 0;
    LossHeadSpec spec;
    const int32_t * targets = nullptr;
    const float * neg_w = nullptr, * old_lp = nullptr, * kl_m = nullptr, * ref_lp = nullptr;
    float * lp = nullptr; // [R]
    std::vector<LossHeadChunk> chunks; // empty without a work space
};
LossHeadArgs loss_head_args(ggml_tensor * node);

// FLOPs and the bytes its steps move (op_profile.h's census), from the node's shape alone.
double loss_head_flops(const ggml_tensor * node);
double loss_head_bytes(const ggml_tensor * node);

} // namespace rrr
