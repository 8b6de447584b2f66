// Sampling inside the decode graph. On a GPU the full logits of 64 sequences are 39 MB per
// step for Qwen's 151,936-token vocabulary: copying them to the host and scanning them there
// costs more than the step itself. The head below reduces each logits row on the device to the
// sampled id and its log-prob, so only 8 bytes per sequence cross back.
//
// Two modes are exact reductions of the host sampler (sampler.h), consuming the same random
// numbers, so the device and host paths pick the same tokens up to float rounding:
//   greedy       first id holding the row's maximum (the host's tie rule)
//   temperature  inverse CDF of softmax(logits / T) in id order at the host's uniform draw
// Anything that reorders or truncates the distribution (top-k/top-p/min-p, repetition penalty)
// stays on the host.
#pragma once
#include <cstdint>

#include "ggml.h"
#include "sampler.h"

namespace rrr {

enum class HeadMode { logits, greedy, temperature };

// The device mode that reproduces `p`, or logits when only the host sampler can.
HeadMode head_mode_for(const SamplingParams & p, int64_t n_vocab);

struct SampleHead {
    ggml_tensor * ids = nullptr;       // I32 [n]
    ggml_tensor * logprobs = nullptr;  // F32 [n], log softmax(logits)[id] at temperature 1
};

// logits: F32 [n_vocab, n], contiguous. uniforms: F32 [1, n] in [0, 1), one draw per row
// (temperature mode only; null for greedy).
SampleHead build_sample_head(ggml_context * ctx, ggml_tensor * logits, HeadMode mode, float temperature, ggml_tensor * uniforms);

} // namespace rrr
