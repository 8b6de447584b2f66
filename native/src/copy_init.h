// Hand-set weights that turn a tiny random model into an in-context copier: at every position
// it predicts the token `offset` positions back. Random models have no such link between
// their context and their output; the synthetic learning task needs one, so that what a
// reflection says can decide what the retry answers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace rrr {

struct CopyInit {
    int64_t offset = 13;       // distance (in tokens) of the copied position
    float strength = 3.0f;     // weight of the copied token against the current one
    float sharpness = 24.0f;   // attention logit per RoPE pair at the peak
    float bias_channel = 2.0f; // constant first embedding component that drives q and k
    int rope_mode = 0;
    float rope_base = 10000.0f;
    int64_t n_embd = 0, n_head = 0, head_dim = 0;
};

// Throws rrr::Error when the shapes cannot carry the construction (kv heads != heads, ...).
void check_copy_init(const CopyInit & c, const std::string & arch, int64_t n_head_kv);

// Rewrites the freshly drawn values `v` of tensor `name` (shape `ne`, ggml order).
void apply_copy_init(const CopyInit & c, const std::string & name, const std::vector<int64_t> & ne, std::vector<float> & v);

} // namespace rrr
