// Adapter files. The adapter itself is a LoRA GGUF in the layout llama.cpp's
// convert_lora_to_gguf.py writes and llama_adapter_lora_init() loads: general.type = "adapter",
// adapter.type = "lora", adapter.lora.alpha, and per projection "blk.N.<tensor>.weight.lora_a"
// [n_in, r] and ".lora_b" [r, n_out], stored as f32. The training state (for resume) is a GGUF of
// our own: the adapter tensors plus AdamW's moments and step count. Both are written to a
// temporary file and renamed, so a failure never leaves a partial file behind.
#pragma once
#include <string>
#include <vector>

#include "gguf.h"

#include "adamw.h"
#include "adapter.h"
#include "weights.h"

namespace rrr {

// Rank, alpha and targets of a LoRA GGUF, after checking it fits `w` (architecture, tensor
// names and shapes). Throws rrr::Error naming `path`.
AdapterSpec read_adapter_spec(const std::string & path, const ModelWeights & w);

void save_adapter(const Adapter & a, const std::string & path);
// `a` must have the file's rank, alpha and targets.
void load_adapter(Adapter & a, const std::string & path, const ModelWeights & w);

void save_train_state(const Adapter & a, const AdamW & opt, const std::string & path);
void load_train_state(Adapter & a, AdamW & opt, const std::string & path);

// Shared by the merge exporter: every "lora_a"/"lora_b" tensor of an adapter file, as f32.
struct LoraFileTensor {
    int64_t layer = 0;
    LoraTarget target = LoraTarget::Q;
    bool is_b = false;
};
// Parses "blk.N.attn_q.weight.lora_a"; returns false for the norm vectors llama.cpp's loader
// skips, and throws for other names and for LoRA tensors on projections rrr-native does not handle.
bool parse_lora_name(const std::string & name, LoraFileTensor & out, const std::string & path);

// A LoRA tensor of a file, as f32, from any type ggml can read back (f32, f16, bf16, q8_0, ...).
std::vector<float> lora_tensor_f32(const ggml_tensor * t, const std::string & path);

// adapter.lora.alpha, or `rank` where it is 0 or missing (llama.cpp's loader then scales by 1).
float lora_alpha(const gguf_context * g, int64_t rank, const std::string & path);

} // namespace rrr
