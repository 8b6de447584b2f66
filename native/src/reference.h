// libllama's own model + context, used as the yardstick: parity tests compare our logits with
// it, and bench runs the same workload through it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "forward.h"

#include "llama.h"
struct llama_adapter_lora;

namespace rrr {

struct ReferenceOptions {
    bool gpu = false;
    int n_ctx = 512;
    int n_threads = 0;
    bool f32_kv = true;       // exact comparisons need an f32 KV cache (llama.cpp defaults to f16)
    bool flash_attn = false;
    // llama.cpp repacks some quantized CPU weights for faster kernels that also round activations
    // differently; turning it off makes both engines run the same kernels.
    bool repack = true;
};

// Context settings shared by every libllama yardstick: thread count (0 = all cores), flash
// attention, cache type, offload. Callers set the sizes.
llama_context_params reference_context_params(int n_threads, bool flash_attn, bool f32_kv, bool gpu);

class ReferenceModel {
public:
    ReferenceModel(const std::string & path, const ReferenceOptions & opt);
    ~ReferenceModel();
    ReferenceModel(const ReferenceModel &) = delete;
    ReferenceModel & operator=(const ReferenceModel &) = delete;

    // Applies a LoRA GGUF through libllama's own loader (llama_adapter_lora_init) with `scale`;
    // an empty path removes it. Our adapter files are tested against this.
    void set_adapter(const std::string & path, float scale);

    // Each sequence is decoded on its own from an empty cache; all positions' logits are returned.
    ForwardResult logits(const std::vector<std::vector<int32_t>> & seqs);

private:
    std::string path_;
    ReferenceOptions opt_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    llama_adapter_lora * adapter_ = nullptr;
};

} // namespace rrr
