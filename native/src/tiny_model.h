// Writes a small randomly initialised GGUF model with a real tokenizer (copied from a vocab
// GGUF) so tests, the default `train` run and benchmarks need no download.
#pragma once
#include <cstdint>
#include <string>

namespace rrr {

struct TinyModelSpec {
    std::string arch = "qwen2";      // llama | qwen2 | qwen3
    std::string vocab_path;          // GGUF whose tokenizer.* keys are copied
    std::string out_path;
    std::string type = "f32";        // type of the 2-D projection weights
    // Type of the embedding and output tables; "" keeps them 16-bit (bf16 beside bf16 weights,
    // else f16) because they dominate a tiny model's size. "f32" makes a model f32 end to end.
    std::string embd_type;
    int64_t n_embd = 64;
    int64_t n_layer = 2;
    int64_t n_head = 4;
    int64_t n_head_kv = 2;
    int64_t head_dim = 0;            // 0: n_embd / n_head
    int64_t n_ff = 128;
    int64_t n_ctx = 2048;
    float rope_base = 10000.0f;
    float rms_eps = 1e-6f;
    int tied = -1;                   // -1: arch default (qwen2 tied, others untied)
    uint64_t seed = 42;
    // Mean of the final norm's gain: it multiplies every logit, so larger values make the
    // model's sampling distribution sharper (lower entropy at a given temperature).
    float output_gain = 1.0f;
    // "random" or "copy" (see copy_init.h); copy_offset is the copied distance.
    std::string init = "random";
    int64_t copy_offset = 13;
};

// Writes to a temporary file next to out_path and renames it, so a failure leaves nothing behind.
// Returns the number of bytes written.
uint64_t write_tiny_model(const TinyModelSpec & spec);

} // namespace rrr
