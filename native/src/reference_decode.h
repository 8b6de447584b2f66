// Batched greedy generation through libllama itself (llama_decode over n_seq_max sequences, each
// prompt prefilled once for its group): the yardstick that parity
// tests compare our engine's tokens with and `bench` times our engine against.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct llama_model;
struct llama_context;

namespace rrr {

struct RefDecodeOptions {
    bool gpu = false;
    int n_threads = 0;
    bool f32_kv = false;      // llama.cpp's default cache is f16
    bool flash_attn = false;
    int n_ubatch = 512;
    // true: one cell pool, a group's prompt cells shared by its sequences. false: one stream per
    // sequence (llama-batched-bench's default), the prompt copied into each after its prefill.
    bool kv_unified = true;
};

struct RefGroup {
    std::vector<int32_t> prompt;
    int n = 1;
};

struct RefDecodeResult {
    std::vector<std::vector<std::vector<int32_t>>> tokens;  // [group][sample] -> tokens
    int64_t prefill_tokens = 0, decode_tokens = 0, generated = 0;
    double prefill_ms = 0, decode_ms = 0;
    int64_t n_ctx = 0;        // KV cells libllama allocated
    size_t kv_bytes = 0;
};

class ReferenceDecoder {
public:
    ReferenceDecoder(const std::string & path, const RefDecodeOptions & opt);
    ~ReferenceDecoder();
    ReferenceDecoder(const ReferenceDecoder &) = delete;
    ReferenceDecoder & operator=(const ReferenceDecoder &) = delete;

    // A fresh libllama context sized for this workload runs it; argmax sampling on the host,
    // ties to the lower id (as our engine does).
    RefDecodeResult greedy(const std::vector<RefGroup> & groups, int32_t max_tokens, bool ignore_eos);

private:
    std::string path_;
    RefDecodeOptions opt_;
    llama_model * model_ = nullptr;
};

} // namespace rrr
