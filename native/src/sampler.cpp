#include "sampler.h"
#include "errors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace rrr {

namespace {

uint64_t splitmix64(uint64_t & x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Scalar and four-lane (compiler generic vectors: SSE, AVX or NEON as the target allows)
// versions of the few operations exp needs; exp_poly is written once over either.
inline int32_t to_int(float x) { return (int32_t) x; }
inline float from_bits(int32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof(f));
    return f;
}
#if defined(__GNUC__)
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));
inline i4 to_int(f4 x) { return __builtin_convertvector(x, i4); }
inline f4 from_bits(i4 b) {
    f4 f;
    std::memcpy(&f, &b, sizeof(f));
    return f;
}
inline f4 load4(const float * p) {
    f4 v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}
#endif

// exp with relative error ~1e-7 over the range logits need, branch-free: libm's expf is a
// scalar call, and the whole-vocabulary passes below run it 150k times per sampled token.
template <typename F>
inline F exp_poly(F x) {
    x = x < -87.0f ? x - x - 87.0f : x;
    x = x > 88.0f ? x - x + 88.0f : x;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer with plain arithmetic.
    const F n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
    const F r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
    F p = r * (1.0f / 720) + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * from_bits((to_int(n) + 127) << 23);
}
inline float fast_exp(float x) { return exp_poly(x); }

float row_max(const float * v, int64_t n) {
    float r = -INFINITY;
    int64_t i = 0;
#if defined(__GNUC__)
    f4 m = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (; i + 4 <= n; i += 4) {
        const f4 x = load4(v + i);
        m = x > m ? x : m;
    }
    for (int k = 0; k < 4; ++k) r = std::max(r, m[k]);
#endif
    for (; i < n; ++i) r = std::max(r, v[i]);
    return r;
}

// Σ exp((v[i] - shift) · scale); scale 1 is exact, so log-probs do not depend on it.
double sum_exp(const float * v, int64_t n, float shift, float scale = 1.0f) {
    double s = 0.0;
    int64_t i = 0;
#if defined(__GNUC__)
    f4 a = {0, 0, 0, 0}, b = {0, 0, 0, 0};
    for (; i + 8 <= n; i += 8) {
        a += exp_poly((load4(v + i) - shift) * scale);
        b += exp_poly((load4(v + i + 4) - shift) * scale);
    }
    for (int k = 0; k < 4; ++k) s += (double) a[k] + (double) b[k];
#endif
    for (; i < n; ++i) s += fast_exp((v[i] - shift) * scale);
    return s;
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

int32_t SequenceSampler::pick(const float * logits, int64_t n, float row_max_value) {
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
    if ((p_.temperature == 0.0f || p_.top_k == 1) && penalised.empty()) {
        // The row's maximum is known: the first id holding it is the argmax.
        for (int64_t i = 0; i < n; ++i) {
            if (logits[i] == row_max_value) return (int32_t) i;
        }
    }
    if (p_.temperature == 0.0f || p_.top_k == 1) {
        // Greedy reads the row in place: the unpenalised argmax, then the few penalised ids.
        int32_t best = -1;
        float bv = -INFINITY;
        std::sort(penalised.begin(), penalised.end());
        size_t next = 0;
        for (int64_t i = 0; i < n; ++i) {
            float v = logits[i];
            if (next < penalised.size() && penalised[next].first == i) v = penalised[next++].second;
            if (best < 0 || v > bv) {
                best = (int32_t) i;
                bv = v;
            }
        }
        return best;
    }
    if (plain()) return pick_plain(logits, n, row_max_value);
    cand_.resize((size_t) n);
    for (int64_t i = 0; i < n; ++i) cand_[i] = {(int32_t) i, logits[i]};
    for (auto & [id, v] : penalised) cand_[id].v = v;

    auto cmp = [](const Cand & a, const Cand & b) { return better(a.v, a.id, b.v, b.id); };
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
        cand_[i].v = fast_exp((cand_[i].v - mx) * inv_t);
        total += cand_[i].v;
    }
    auto pcmp = [](const Cand & a, const Cand & b) { return a.v > b.v || (a.v == b.v && a.id < b.id); };
    if (p_.top_p < 1.0f) {
        // Nucleus: the smallest high-probability set holding top_p of the mass. Instead of
        // sorting the vocabulary, a histogram over the float bits (monotone in the value) finds
        // the bucket where the mass crosses top_p: every candidate above it is in, and only
        // that bucket's own candidates get sorted to find where inside it the crossing is (a
        // flat distribution puts most of the vocabulary above the bucket, none of it sorted).
        const double want = p_.top_p * total;
        size_t keep = 0;  // candidates [0, keep) are in
        double acc = 0.0;
        size_t end = m;   // candidates [keep, end) are sorted, largest first, and taken in order
        if (!sorted) {
            std::vector<double> & hist = hist_;
            hist.assign(1 << 12, 0.0);
            auto key = [](float v) {
                uint32_t bits;
                std::memcpy(&bits, &v, sizeof(bits));
                return bits >> 19;  // sign 0, exponent and 4 mantissa bits: 12 bits
            };
            for (size_t i = 0; i < m; ++i) hist[key(cand_[i].v)] += cand_[i].v;
            uint32_t cut = (uint32_t) hist.size() - 1;
            for (double above = 0.0; cut > 0; --cut) {
                if (above + hist[cut] >= want) break;
                above += hist[cut];
            }
            for (size_t i = 0; i < m; ++i) {
                if (key(cand_[i].v) > cut) {
                    acc += cand_[i].v;
                    std::swap(cand_[keep++], cand_[i]);
                }
            }
            end = keep;
            for (size_t i = keep; i < m; ++i) {
                if (key(cand_[i].v) == cut) std::swap(cand_[end++], cand_[i]);
            }
            std::sort(cand_.begin() + (std::ptrdiff_t) keep, cand_.begin() + (std::ptrdiff_t) end, pcmp);
        }
        while (keep < end && acc < want) acc += cand_[keep++].v;
        m = std::max<size_t>(keep, 1);
        total = 0.0;
        for (size_t i = 0; i < m; ++i) total += cand_[i].v;
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

int32_t SequenceSampler::pick_plain(const float * logits, int64_t n, float row_max_value) {
    // The draw walks the softmax(x / T) mass in id order, as the general path does. Sums of
    // 256-id blocks (one vectorised pass) find the block the uniform falls in; only from there
    // on is the row walked id by id, instead of copying, exponentiating and walking all of it.
    constexpr int64_t kBlock = 256;
    const float inv_t = 1.0f / p_.temperature;
    const int64_t nb = (n + kBlock - 1) / kBlock;
    blocks_.resize((size_t) nb);
    double total = 0.0;
    for (int64_t b = 0; b < nb; ++b) {
        blocks_[(size_t) b] = sum_exp(logits + b * kBlock, std::min(kBlock, n - b * kBlock), row_max_value, inv_t);
        total += blocks_[(size_t) b];
    }
    double r = uniform() * total;
    int64_t b = 0;
    while (b + 1 < nb && r >= blocks_[(size_t) b]) r -= blocks_[(size_t) b++];
    int32_t last = -1;  // the last id with any mass, should rounding leave a sliver past the end
    for (int64_t i = b * kBlock; i < n; ++i) {
        const float e = fast_exp((logits[i] - row_max_value) * inv_t);
        if (e <= 0.0f) continue;
        last = (int32_t) i;
        r -= e;
        if (r < 0.0) return last;
    }
    return last >= 0 ? last : (int32_t) (n - 1);
}

RowStats row_stats(const float * logits, int64_t n) {
    const float mx = row_max(logits, n);
    return {mx, (float) ((double) mx + std::log(sum_exp(logits, n, mx)))};
}

Sampled SequenceSampler::sample(const float * logits, int64_t n_vocab) {
    if (!(plain() && p_.temperature == 1.0f)) return sample(logits, n_vocab, row_stats(logits, n_vocab));
    const float mx = row_max(logits, n_vocab);
    const int32_t tok = pick_plain(logits, n_vocab, mx);
    double total = 0.0;
    for (double b : blocks_) total += b;
    remember(tok);
    return {tok, (float) ((double) (logits[tok] - mx) - std::log(total))};
}

Sampled SequenceSampler::sample(const float * logits, int64_t n_vocab, const RowStats & rs) {
    const int32_t tok = pick(logits, n_vocab, rs.max);
    remember(tok);
    return {tok, logits[tok] - rs.lse};
}

} // namespace rrr
