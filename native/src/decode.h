// One step of KV-cached inference: a batch of tokens, each already given a cache cell, goes
// through the layer stack; its K/V land in those cells and its queries attend to every cell
// their sequence sees. Prefill (many tokens of few sequences) and decode (one token for each of
// many sequences) are the same call with different batches.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"
#include "kv_cache.h"
#include "lora.h"
#include "weights.h"

namespace rrr {

struct StepToken {
    int32_t token = 0;
    int32_t pos = 0;
    int64_t cell = 0;
    int seq = 0;          // any sequence that owns this token: visibility is decided by it
    bool logits = false;  // return this token's logits
};

struct StepOptions {
    bool flash_attn = false;
};

// Cells must already be occupied in `cache` (KvCache::occupy) for every token of `batch`.
// Fills `logits` with one n_vocab row per token whose `logits` flag is set, in batch order.
void decode_step(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache,
                 const std::vector<StepToken> & batch, const StepOptions & opt, std::vector<float> & logits);

} // namespace rrr
