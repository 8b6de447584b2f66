// The owning side of LoRA: A and B tensors for every targeted projection of one model, in one
// backend buffer on the model's primary device, plus rank/alpha/targets. Graph builders only see
// the non-owning LoraView this hands out.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "lora.h"
#include "weights.h"

namespace rrr {

struct AdapterSpec {
    int64_t rank = 8;
    float alpha = 16.0f;
    std::array<bool, kLoraTargets> targets{};
    uint64_t seed = 1;
    // LoRA dropout in training passes (train_graph.h: GraphOptions::dropout); not part of the
    // adapter file, which holds what inference needs.
    float dropout = 0.0f;
};

// Parses "q", "k", ..., "down"; throws rrr::Error naming `what` for anything else.
LoraTarget parse_lora_target(const std::string & name, const std::string & what);

class Adapter {
public:
    // A gets PEFT's default init (uniform in ±1/sqrt(n_in)), B zeros: a new adapter leaves the
    // model's outputs unchanged.
    Adapter(const ModelWeights & w, const AdapterSpec & spec, ggml_backend_t backend);
    ~Adapter();
    Adapter(const Adapter &) = delete;
    Adapter & operator=(const Adapter &) = delete;

    const AdapterSpec & spec() const { return spec_; }
    float scale() const { return spec_.alpha / (float) spec_.rank; }
    LoraView view() const { return LoraView{&layers_, scale(), whole_}; }
    const std::vector<LoraLayer> & layers() const { return layers_; }
    const std::string & arch() const { return arch_; }

    // All A and B tensors in a fixed order (layer, target, a before b); named like llama.cpp's
    // LoRA GGUF: "blk.N.attn_q.weight.lora_a".
    const std::vector<ggml_tensor *> & params() const { return params_; }
    // One f32 tensor over all of params() and the zeroed gaps between them (flat_buffer.h).
    ggml_tensor * params_whole() const { return whole_; }
    ggml_tensor * find(const std::string & name) const;
    size_t n_elements() const;

    // The frozen projection a pair belongs to (for shape checks and merging).
    static ggml_tensor * base_weight(const ModelWeights & w, int64_t il, LoraTarget t);

private:
    AdapterSpec spec_;
    std::string arch_;
    std::vector<LoraLayer> layers_;
    std::vector<ggml_tensor *> params_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buf_ = nullptr;
    ggml_tensor * whole_ = nullptr;
};

} // namespace rrr
