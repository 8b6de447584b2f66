#include "sampler.h"
#include "errors.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace rrr {

namespace {

uint64_t splitmix64(uint64_t & x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Larger logit first; on ties the lower id, matching argmax, so top-k = 1 is exactly greedy.
bool better(float a, int32_t ia, float b, int32_t ib) { return a > b || (a == b && ia < ib); }

} // namespace

void validate(const SamplingParams & p) {
    auto bad = [](const char * name, const std::string & got, const char * want) {
        throw Error(std::string(name) + ": " + got + " is out of range (expected " + want + ")");
    };
    if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) bad("temperature", std::to_string(p.temperature), ">= 0; 0 means greedy");
    if (p.top_k < 0) bad("topK", std::to_string(p.top_k), ">= 0; 0 disables");
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) bad("topP", std::to_string(p.top_p), "in (0, 1]; 1 disables");
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) bad("minP", std::to_string(p.min_p), "in [0, 1]; 0 disables");
    if (!(p.repeat_penalty > 0.0f) || !std::isfinite(p.repeat_penalty)) bad("repeatPenalty", std::to_string(p.repeat_penalty), "> 0; 1 disables");
    if (p.repeat_last_n < 0) bad("repeatLastN", std::to_string(p.repeat_last_n), ">= 0");
}

float token_logprob(const float * logits, int64_t n, int32_t token) {
    float mx = logits[0];
    for (int64_t i = 1; i < n; ++i) mx = std::max(mx, logits[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp((double) (logits[i] - mx));
    return (float) ((double) (logits[token] - mx) - std::log(sum));
}

SequenceSampler::SequenceSampler(const SamplingParams & p, uint64_t request, uint64_t sample, const std::vector<int32_t> & history)
    : p_(p) {
    uint64_t s = p.seed;
    state_ = splitmix64(s);
    state_ ^= splitmix64(s) * (request + 1);
    state_ ^= splitmix64(s) * (sample + 0x1234567ull);
    const size_t keep = std::min(history.size(), (size_t) p.repeat_last_n);
    recent_.assign(history.end() - (std::ptrdiff_t) keep, history.end());
}

double SequenceSampler::uniform() { return (double) (splitmix64(state_) >> 11) * 0x1.0p-53; }

void SequenceSampler::remember(int32_t token) {
    if (p_.repeat_last_n == 0) return;
    recent_.push_back(token);
    while (recent_.size() > (size_t) p_.repeat_last_n) recent_.pop_front();
}

int32_t SequenceSampler::pick(const float * logits, int64_t n) {
    // Penalised values are only needed for the few ids in the window; everything else reads
    // the row directly.
    std::vector<std::pair<int32_t, float>> penalised;
    if (p_.repeat_penalty != 1.0f && !recent_.empty()) {
        std::unordered_set<int32_t> ids(recent_.begin(), recent_.end());
        for (int32_t id : ids) {
            const float v = logits[id];
            penalised.push_back({id, v > 0 ? v / p_.repeat_penalty : v * p_.repeat_penalty});
        }
    }
    cand_.resize((size_t) n);
    for (int64_t i = 0; i < n; ++i) cand_[i] = {(int32_t) i, logits[i]};
    for (auto & [id, v] : penalised) cand_[id].v = v;

    auto cmp = [](const Cand & a, const Cand & b) { return better(a.v, a.id, b.v, b.id); };
    if (p_.temperature == 0.0f || p_.top_k == 1) {
        return std::min_element(cand_.begin(), cand_.end(), cmp)->id;
    }
    size_t m = cand_.size();
    bool sorted = false;
    if (p_.top_k > 0 && (size_t) p_.top_k < m) {
        m = (size_t) p_.top_k;
        std::partial_sort(cand_.begin(), cand_.begin() + m, cand_.end(), cmp);
        sorted = true;
    }
    // Probabilities at this temperature (unnormalised; `total` normalises).
    const float inv_t = 1.0f / p_.temperature;
    float mx = -INFINITY;
    for (size_t i = 0; i < m; ++i) mx = std::max(mx, cand_[i].v);
    double total = 0.0;
    for (size_t i = 0; i < m; ++i) {
        cand_[i].v = std::exp((cand_[i].v - mx) * inv_t);
        total += cand_[i].v;
    }
    auto pcmp = [](const Cand & a, const Cand & b) { return a.v > b.v || (a.v == b.v && a.id < b.id); };
    if (p_.top_p < 1.0f) {
        // Nucleus: the smallest high-probability prefix holding top_p of the mass. Sorting the
        // whole vocabulary is rarely needed: grow a partially sorted head until it suffices.
        size_t head = sorted ? m : std::min<size_t>(m, 64);
        for (;;) {
            if (!sorted) std::partial_sort(cand_.begin(), cand_.begin() + head, cand_.begin() + m, pcmp);
            double acc = 0.0;
            size_t keep = 0;
            while (keep < head && acc < p_.top_p * total) acc += cand_[keep++].v;
            if (acc >= p_.top_p * total || head == m) {
                m = std::max<size_t>(keep, 1);
                total = 0.0;
                for (size_t i = 0; i < m; ++i) total += cand_[i].v;
                break;
            }
            head = std::min(m, head * 8);
        }
    }
    if (p_.min_p > 0.0f) {
        float pmax = 0.0f;
        for (size_t i = 0; i < m; ++i) pmax = std::max(pmax, cand_[i].v);
        const float cut = p_.min_p * pmax;
        size_t j = 0;
        total = 0.0;
        for (size_t i = 0; i < m; ++i) {
            if (cand_[i].v >= cut) {
                cand_[j++] = cand_[i];
                total += cand_[i].v;
            }
        }
        m = j;
    }
    double r = uniform() * total;
    for (size_t i = 0; i < m; ++i) {
        r -= cand_[i].v;
        if (r < 0.0) return cand_[i].id;
    }
    return cand_[m - 1].id; // rounding left a sliver of mass
}

Sampled SequenceSampler::sample(const float * logits, int64_t n_vocab) {
    const int32_t tok = pick(logits, n_vocab);
    remember(tok);
    return {tok, token_logprob(logits, n_vocab, tok)};
}

} // namespace rrr
