// Host-side token sampling for one sequence: repetition penalty, temperature, top-k, top-p,
// min-p, then a draw from the sequence's own random stream. Each sequence's stream is derived
// from (seed, request, sample) alone, so a completion does not depend on what else shares its
// batch. The log-prob returned is the model's own (raw logits, before penalty and temperature),
// the quantity policy-gradient training needs.
#pragma once
#include <cstdint>
#include <deque>
#include <unordered_set>
#include <vector>

namespace rrr {

struct SamplingParams {
    float temperature = 1.0f;  // 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    float repeat_penalty = 1.0f;
    int32_t repeat_last_n = 64;
    uint64_t seed = 0;
};

// Throws rrr::Error naming the option for out-of-range values.
void validate(const SamplingParams & p);

struct Sampled {
    int32_t token;
    float logprob;
};

// What every draw from one logits row needs: its maximum and log-sum-exp.
struct RowStats {
    float max;
    float lse;
};
RowStats row_stats(const float * logits, int64_t n_vocab);

class SequenceSampler {
public:
    // `history` seeds the repetition window (the prompt's tail).
    SequenceSampler(const SamplingParams & p, uint64_t request, uint64_t sample, const std::vector<int32_t> & history);

    // Picks the next token from one row of logits (with its row_stats) and records it in the
    // history. Rows are shared: a prompt's last row serves all samples of its group.
    Sampled sample(const float * logits, int64_t n_vocab, const RowStats & rs);
    // The same for a row no other sequence reads: its statistics come out of the draw's own
    // passes where they can (at temperature 1 a plain draw's block sums are the normaliser).
    Sampled sample(const float * logits, int64_t n_vocab);

    // For a draw made elsewhere (the decode graph's sampling head): the uniform sample() would
    // have consumed, and the token that was picked with it.
    double draw() { return uniform(); }
    void accept(int32_t token) { remember(token); }

private:
    struct Cand {
        int32_t id;
        float v;
    };
    double uniform();
    void remember(int32_t token);
    int32_t pick(const float * logits, int64_t n_vocab, float row_max_value);
    // Temperature alone (no top-k/top-p/min-p, no penalty in effect): the common RRR draw.
    bool plain() const {
        return p_.temperature > 0.0f && p_.top_k == 0 && p_.top_p >= 1.0f && p_.min_p <= 0.0f &&
               (p_.repeat_penalty == 1.0f || recent_.empty());
    }
    int32_t pick_plain(const float * logits, int64_t n_vocab, float row_max_value);  // leaves the block sums in blocks_

    SamplingParams p_;
    uint64_t state_;
    std::deque<int32_t> recent_;
    std::vector<Cand> cand_;     // scratch reused across steps
    std::vector<double> hist_;
    std::vector<double> blocks_;
};

} // namespace rrr
