// A GGUF checkpoint loaded into one backend buffer: config, named tensors per layer, and the
// ggml context that owns their metadata. Validation happens here so every later stage can
// trust shapes and types.
#pragma once
#include "model_config.h"

#include <memory>
#include <string>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"

namespace rrr {

struct LayerWeights {
    ggml_tensor * attn_norm = nullptr;
    ggml_tensor * wq = nullptr;
    ggml_tensor * wk = nullptr;
    ggml_tensor * wv = nullptr;
    ggml_tensor * wo = nullptr;
    ggml_tensor * bq = nullptr;
    ggml_tensor * bk = nullptr;
    ggml_tensor * bv = nullptr;
    ggml_tensor * q_norm = nullptr;
    ggml_tensor * k_norm = nullptr;
    ggml_tensor * ffn_norm = nullptr;
    ggml_tensor * w_gate = nullptr;
    ggml_tensor * w_up = nullptr;
    ggml_tensor * w_down = nullptr;
};

class ModelWeights {
public:
    // Throws rrr::Error naming `path` for missing, truncated, unsupported or inconsistent files.
    ModelWeights(const std::string & path, ggml_backend_t backend);
    ~ModelWeights();
    ModelWeights(const ModelWeights &) = delete;
    ModelWeights & operator=(const ModelWeights &) = delete;

    const ModelConfig & config() const { return cfg_; }
    const std::string & path() const { return path_; }
    size_t bytes() const;
    std::string weight_type() const; // type of the attention projections, e.g. "q4_K"

    ggml_tensor * tok_embd = nullptr;
    ggml_tensor * output_norm = nullptr;
    ggml_tensor * output = nullptr;     // == tok_embd when embeddings are tied
    ggml_tensor * rope_freqs = nullptr;
    std::vector<LayerWeights> layers;

private:
    std::string path_;
    ModelConfig cfg_;
    ggml_context * meta_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
};

} // namespace rrr
