// Graph pieces shared by every pass over the model (plain forward, KV-cached decode, training):
// the layer stack with optional LoRA on the projections. Only attention differs between those
// passes, so it is passed in.
#pragma once
#include <functional>

#include "lora.h"
#include "weights.h"

namespace rrr {

// W x, plus scale * B (A x) when a LoRA pair is given.
ggml_tensor * project(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const LoraPair * lora, float scale);

// Receives this layer's roped q [head_dim, n_head, T], k and v [head_dim, n_head_kv, T];
// returns the attention output [head_dim * n_head, T] (before the output projection).
using AttentionFn = std::function<ggml_tensor *(ggml_context * ctx, int64_t il, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v)>;

struct TransformerInputs {
    ggml_tensor * tokens = nullptr;    // I32 [T]
    ggml_tensor * positions = nullptr; // I32 [T]
    ggml_tensor * out_rows = nullptr;  // I32 [R] rows of T the output keeps (from the last layer's attention on), or null for all
};

// Returns logits [n_vocab, R] (or [n_vocab, T]).
ggml_tensor * build_transformer(ggml_context * ctx, const ModelWeights & w, const LoraView & lora,
                                const TransformerInputs & in, const AttentionFn & attention);

// Attention over the T tokens of this batch alone (no cache): mask is F32 [T, T], 0 or -inf.
ggml_tensor * dense_attention(ggml_context * ctx, const ModelConfig & c, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                              ggml_tensor * mask);

} // namespace rrr
