// Hyper-parameters of a decoder-only transformer as read from GGUF metadata. One struct covers
// llama, qwen2 and qwen3: they differ only in the flags below.
#pragma once
#include <cstdint>
#include <string>

namespace rrr {

enum class Arch { Llama, Qwen2, Qwen3 };

struct ModelConfig {
    Arch arch = Arch::Llama;
    std::string arch_name;
    int64_t n_vocab = 0;
    int64_t n_embd = 0;
    int64_t n_layer = 0;
    int64_t n_head = 0;
    int64_t n_head_kv = 0;
    int64_t head_dim = 0;      // may differ from n_embd / n_head (qwen3)
    int64_t n_ff = 0;
    int64_t n_ctx_train = 0;
    int64_t n_rot = 0;
    float rms_eps = 1e-6f;
    float rope_base = 10000.0f;
    float rope_freq_scale = 1.0f;
    int rope_mode = 0;         // GGML_ROPE_TYPE_NORMAL or GGML_ROPE_TYPE_NEOX
    bool tied_embeddings = false;
    bool qkv_bias = false;     // qwen2
    bool qk_norm = false;      // qwen3
    bool rope_freq_factors = false; // llama 3.1+ "rope_freqs.weight"
};

const char * arch_name(Arch a);

} // namespace rrr
