// One step of KV-cached inference: a batch of tokens, each already given a cache cell, goes
// through the layer stack; its K/V land in those cells and its queries attend to every cell
// their sequence sees. Prefill (many tokens of few sequences) and decode (one token for each of
// many sequences) are the same call with different batches. Attention reads either one window
// of cells masked per row (a unified cache, or tokens all in one stream) or, when the tokens
// are in several streams, each stream's cells as one slice of a 4-D batch (kv_cache.h).
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"
#include "kv_cache.h"
#include "lora.h"
#include "sampling_head.h"
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
    // Rows are reduced in the graph (sampling_head.h) unless this is HeadMode::logits.
    HeadMode head = HeadMode::logits;
    float temperature = 1.0f;
};

// What a step hands back: logits rows (HeadMode::logits), or one sampled id and its log-prob
// per output row.
struct StepResult {
    std::vector<float> logits;
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
};

// Whether `backend` has a flash-attention kernel for this model's heads (ggml-cuda has none for
// some head sizes, e.g. 16 or 32; the op would then run on the CPU), for a prefill and a decode
// step over 256-cell tiles with an f16 cache, as the decode graph builds them.
bool flash_attn_supported(ggml_backend_t backend, const ModelConfig & c, ggml_type kv_type = GGML_TYPE_F16);

// Runs decode steps, keeping the last step's graph: consecutive steps of the same shape (batch
// size, output rows, attention window) skip graph building and scheduling entirely and only
// upload new inputs, as libllama's graph reuse does. The caller holds the backends' scheduler
// for the whole time the graph is kept (invalidate() before anyone else uses it).
class Decoder {
public:
    Decoder();
    ~Decoder();
    Decoder(const Decoder &) = delete;
    Decoder & operator=(const Decoder &) = delete;

    void invalidate() { valid_ = false; }

    // Sizes the scheduler's compute buffers for the largest step to come (T tokens, all with
    // logits, over n_kv cells, one stream each when the cache has streams), so a growing window
    // does not reallocate them step after step.
    void reserve(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, int64_t T, int64_t n_kv, const StepOptions & opt);

    // Copies the first n cells of stream src[i] into stream dst[i] (a prompt prefilled once,
    // handed to the other samples of its group). Replaces the kept graph.
    void copy_prefix(Backends & b, KvCache & cache, int64_t n, const std::vector<int> & src, const std::vector<int> & dst);

    // Cells must already be occupied in `cache` (KvCache::occupy) for every token of `batch`.
    // One output row per token whose `logits` flag is set, in batch order: n_vocab logits each,
    // or with a sampling head one id and log-prob each, drawn with `uniforms[row]` (temperature
    // mode).
    void step(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, const std::vector<StepToken> & batch,
              const StepOptions & opt, const std::vector<float> & uniforms, StepResult & out);

    // Where the graphs built since the last reset ran (backend.h).
    const Placement & placement() const { return placement_; }
    void reset_placement() { placement_ = Placement{}; }

private:
    struct Shape {
        int64_t T = 0, n_out = 0;
        // Window mode (n_slot == 0): cells [lo, lo+n_kv) of stream s0. Streams mode: the first
        // n_kv cells of streams [s0, s0+n_slot), per_slot query rows each (the most tokens
        // one stream has in the batch: one in decode, a prompt's in prefill); gather: the
        // batch rows are not exactly the slots' rows in order, so queries are gathered into
        // slots and outputs back.
        int s0 = 0;
        int64_t n_slot = 0, per_slot = 1, lo = 0, n_kv = 0;
        bool gather = false;
        bool flash_attn = false;
        HeadMode head = HeadMode::logits;
        float temperature = 1.0f;  // 1 unless head is temperature, so other heads' graphs are reused
        void set_options(const StepOptions & opt) {
            flash_attn = opt.flash_attn;
            head = opt.head;
            temperature = opt.head == HeadMode::temperature ? opt.temperature : 1.0f;
        }
        bool operator==(const Shape & o) const {
            return T == o.T && n_out == o.n_out && s0 == o.s0 && n_slot == o.n_slot && per_slot == o.per_slot && lo == o.lo && n_kv == o.n_kv &&
                   gather == o.gather && flash_attn == o.flash_attn && head == o.head && temperature == o.temperature;
        }
    };
    void build(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, const Shape & s);
    // Sets the attention layout of `s` for `batch`; in streams mode also the slot maps below.
    void plan(const KvCache & cache, const std::vector<StepToken> & batch, Shape & s);
    template <typename T>
    void fill_mask(const KvCache & cache, const std::vector<StepToken> & batch, const Shape & s, T closed, T open, std::vector<T> & mask);

    ggml_context * ctx_ = nullptr;
    ggml_cgraph * gf_ = nullptr;
    bool valid_ = false;
    Shape shape_;
    Placement placement_;
    ggml_tensor *tokens_ = nullptr, *pos_ = nullptr, *k_idx_ = nullptr, *v_idx_ = nullptr, *mask_ = nullptr,
                *out_rows_ = nullptr, *logits_ = nullptr, *slot_rows_ = nullptr, *row_slots_ = nullptr,
                *uniforms_ = nullptr, *ids_ = nullptr, *logprobs_ = nullptr;
    // Host staging buffers, reused across steps.
    std::vector<int32_t> tok_, posv_, rows_, slot_rows_host_, row_slots_host_;
    std::vector<int64_t> cells_, v_index_;
    std::vector<float> mask_host_;
    std::vector<ggml_fp16_t> mask16_;
    std::vector<std::vector<int32_t>> rows_of_seq_;  // batch rows of each sequence
    std::vector<int64_t> slot_count_;                // tokens of each slot's stream in the batch
    std::vector<int32_t> k_src_, v_src_;
    std::vector<int64_t> k_dst_, v_dst_;
};

} // namespace rrr
