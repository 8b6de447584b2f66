// The batched sampling engine: prompts are prefilled once into shared cache cells, each is
// forked into its group of samples, and all live sequences advance together one token per
// step until each stops on its own (end-of-generation token, stop token, stop string, or
// max_tokens). Owns the KV cache; borrows the model (weights, vocabulary, backends).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "decode.h"
#include "errors.h"
#include "kv_cache.h"
#include "lora.h"
#include "sampler.h"
#include "vocab.h"
#include "weights.h"

namespace rrr {

struct GeneratorOptions {
    int max_seqs = 16;        // sequences decoded together
    int64_t n_ctx = 2048;     // longest prompt + completion of one sequence
    // KV cells of the unified layout; 0: max_seqs × n_ctx, enough for any admissible batch.
    // Every stream is rounded up to whole 256-cell tiles (generate.cpp says why).
    int64_t n_cells = 0;
    // KV layout (kv_cache.h). -1: one stream per sequence unless n_cells sizes a unified cache;
    // 0: unified; 1: streams (the cache is then max_seqs × n_ctx cells).
    int kv_streams = -1;
    ggml_type kv_type = GGML_TYPE_F16;
    int flash_attn = -1;      // -1: on for GPU backends, off on CPU (its plain path is faster there)
    int64_t n_ubatch = 512;   // tokens per prefill graph
    // Greedy and plain-temperature decode steps sample in the graph (sampling_head.h) and copy
    // back ids instead of logits rows. -1: on for GPU backends; on CPU the host sampler spreads
    // the row scans over all threads, where some ggml reductions use one.
    int device_sampling = -1;
};

struct GenGroup {
    std::vector<int32_t> prompt;
    int n = 1;
    // Empty, or one non-empty continuation per sample: sample j then reads prompt + suffixes[j].
    // The prompt is still prefilled once (the reflection prompt of an RRR group, say, before
    // each sample's own reflection and retry instruction).
    std::vector<std::vector<int32_t>> suffixes;
    uint64_t request = 0;       // identity for the random streams: (seed, request, first_sample + j)
    uint64_t first_sample = 0;
};

struct GenParams {
    SamplingParams sampling;
    int32_t max_tokens = 256;
    std::vector<std::string> stop;
    std::vector<int32_t> stop_tokens;
    bool ignore_eos = false;  // benchmarks: always run max_tokens
};

struct GenOutput {
    std::vector<int32_t> tokens;  // every sampled token, including the one that ended generation
    std::vector<float> logprobs;
    std::string text;             // detokenized, cut before the first stop string
    std::string finish;           // "eos" | "stop" | "length"
};

struct GenStats {
    int64_t prefill_tokens = 0;  // prompt tokens evaluated (each shared prompt once)
    int64_t prefill_steps = 0;   // graphs those tokens went through
    int64_t decode_tokens = 0;   // tokens evaluated by decode steps
    int64_t generated = 0;       // tokens sampled
    int64_t steps = 0;
    double prefill_ms = 0, decode_ms = 0, sample_ms = 0;
    Placement placement;  // where the prefill, copy and decode graphs ran (backend.h)
};

// Thrown by Generator::run when its caller asks it to stop; the cache is left for the next run
// to clear, as after any error.
struct StopRequested : Error {
    StopRequested() : Error("generation stopped on request") {}
};

class Generator {
public:
    Generator(const ModelWeights & w, const Vocab & vocab, Backends & b, const GeneratorOptions & opt);

    // The kept decode graph was built with the old view, so it is rebuilt on the next step.
    void set_lora(const LoraView & lora) {
        lora_ = lora;
        decoder_.invalidate();
    }
    const GeneratorOptions & options() const { return opt_; }
    bool flash_attn() const { return flash_attn_; }
    bool device_sampling() const { return device_sampling_; }
    bool kv_streams() const { return kv_streams_; }  // as chosen; with one sequence both layouts are one stream
    const KvCache & cache() const { return *cache_; }

    // Cells a group may occupy at most in a unified cache: its prompt once plus every sample's
    // suffix and completion.
    static int64_t cells_needed(const GenGroup & g, int32_t max_tokens) {
        int64_t n = (int64_t) g.prompt.size() + (int64_t) g.n * max_tokens;
        for (const auto & s : g.suffixes) n += (int64_t) s.size();
        return n;
    }
    // The longest prompt one of its samples reads.
    static int64_t longest_prompt(const GenGroup & g) {
        size_t n = 0;
        for (const auto & s : g.suffixes) n = std::max(n, s.size());
        return (int64_t) (g.prompt.size() + n);
    }

    // Runs all groups in one batch; Σ n must fit max_seqs and, in a unified cache, Σ
    // cells_needed its cells (the caller splits larger workloads into waves). Result: per
    // group, its n completions. `stop`, asked after the prefill and after every decode step,
    // ends the run there by throwing StopRequested: a caller that is told to stop (Ctrl-C) need
    // not wait out a batch that can take minutes.
    std::vector<std::vector<GenOutput>> run(const std::vector<GenGroup> & groups, const GenParams & params,
                                            const std::function<void(int64_t generated)> & progress, GenStats & stats,
                                            const std::function<bool()> & stop = {});

private:
    void check(const std::vector<GenGroup> & groups, const GenParams & params) const;

    const ModelWeights & w_;
    const Vocab & vocab_;
    Backends & b_;
    GeneratorOptions opt_;
    bool flash_attn_;
    bool device_sampling_;
    bool kv_streams_;
    LoraView lora_;  // disabled by default: the base model
    std::unique_ptr<KvCache> cache_;
    Decoder decoder_;
};

} // namespace rrr
