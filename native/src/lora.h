// LoRA adapter tensors for one model: per layer, an (A, B) pair for each targeted projection.
// W x becomes W x + scale * B (A x), with A [n_in, r] and B [r, n_out] in ggml's layout.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"

namespace rrr {

enum class LoraTarget { Q = 0, K, V, O, Gate, Up, Down, Count };
constexpr size_t kLoraTargets = (size_t) LoraTarget::Count;

const char * lora_target_name(LoraTarget t);           // "q", "k", ..., "down"
const char * lora_target_tensor(LoraTarget t);         // "attn_q", ..., "ffn_down" (GGUF tensor stem)

struct LoraPair {
    ggml_tensor * a = nullptr;
    ggml_tensor * b = nullptr;
    bool active() const { return a != nullptr; }
};

struct LoraLayer {
    std::array<LoraPair, kLoraTargets> pairs{};
    const LoraPair & operator[](LoraTarget t) const { return pairs[(size_t) t]; }
    LoraPair & operator[](LoraTarget t) { return pairs[(size_t) t]; }
};

// Non-owning view the graph builders take; the owner (adapter object) keeps the memory.
struct LoraView {
    const std::vector<LoraLayer> * layers = nullptr;
    float scale = 0.0f; // alpha / rank; 0 disables the adapter (the base model)
    // One tensor over all the adapter's A and B (flat_buffer.h), for views across neighbours; may be null.
    ggml_tensor * whole = nullptr;
    bool enabled() const { return layers != nullptr && scale != 0.0f; }
    const LoraPair * pair(int64_t il, LoraTarget t) const {
        if (!enabled()) return nullptr;
        const LoraPair & p = (*layers)[il][t];
        return p.active() ? &p : nullptr;
    }
};

} // namespace rrr
