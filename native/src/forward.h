// Our own ggml graph for a decoder-only transformer over a packed batch of sequences: all
// tokens sit side by side in one [n_embd, n_tokens] activation, and a block-diagonal causal mask
// keeps sequences from seeing each other. This is the layout the KV cache and the training
// graph build on.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"
#include "lora.h"
#include "weights.h"

namespace rrr {

struct PackedBatch {
    std::vector<int32_t> tokens;     // all sequences concatenated
    std::vector<int32_t> positions;  // position of each token inside its sequence
    std::vector<int32_t> seq_of;     // sequence index of each token
    std::vector<int64_t> seq_start;  // first token of each sequence; seq_start.back() == tokens.size()
    int64_t n_seqs() const { return (int64_t) seq_start.size() - 1; }
};

// Validates ids against the vocabulary and lengths against the model context.
PackedBatch pack_sequences(const std::vector<std::vector<int32_t>> & seqs, const ModelConfig & cfg);

struct ForwardResult {
    int64_t n_vocab = 0;
    std::vector<float> logits;        // rows of n_vocab floats
    std::vector<int64_t> row_start;   // first row of each sequence; back() == total rows
};

// Logits for every position, or only each sequence's last position when `last_only`.
ForwardResult run_forward(const ModelWeights & w, const LoraView & lora, Backends & b, const PackedBatch & batch, bool last_only);

} // namespace rrr
