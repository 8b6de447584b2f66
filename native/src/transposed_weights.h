// The frozen projection and LM-head weights, transposed once for the backward pass's dx = Wᵀ dy.
// Without it every training step copies each W into a transposed W (a strided, uncoalesced
// copy of the whole model; CONT was 154 ms of a 792 ms step on an H100, bench --train-profile).
// It costs one more copy of those weights in device memory (f16 for quantised bases, as the
// per-step path makes them), so the Trainer keeps one only where it fits (trainer options).
#pragma once
#include <cstddef>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "weights.h"

namespace rrr {

class TransposedWeights {
public:
    // Bytes a cache of these weights takes.
    static size_t bytes_needed(const ModelWeights & w);

    // Allocates on the primary backend and fills the cache with one graph.
    TransposedWeights(const ModelWeights & w, const Backends & b);
    ~TransposedWeights();
    TransposedWeights(const TransposedWeights &) = delete;
    TransposedWeights & operator=(const TransposedWeights &) = delete;

    // Wᵀ as a contiguous [n_out, n_in] tensor, or nullptr when `w` is not one of the weights.
    ggml_tensor * find(const ggml_tensor * w) const;
    size_t bytes() const;

private:
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
    std::unordered_map<const ggml_tensor *, ggml_tensor *> map_;
};

// The type a transposed frozen weight has: its own for f32/f16/bf16, f16 for quantised types
// (dequantised through get_rows first).
ggml_type transposed_type(const ggml_tensor * w);

// Every weight the backward pass multiplies by Wᵀ: the seven projections of each layer and the
// LM head (tok_embd when tied).
std::vector<ggml_tensor *> frozen_weights(const ModelWeights & w);

} // namespace rrr
