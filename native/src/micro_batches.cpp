#include "micro_batches.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace rrr {

bool trained(const TrainSeq & s, size_t t) { return s.mask.empty() ? s.weights[t] != 0.0f : s.mask[t] != 0; }

// The backward pass runs on the loss times a power of two that brings the largest per-token
// coefficient, max(|weight|, β) / N, up to between 1/2 and 1 (for advantages of about 1, about
// the sum over tokens instead of the mean). 16-bit products take their inputs rounded to f16,
// whose smallest normal number is 6.1e-5, and the mean over thousands of tokens puts per-token
// gradients below it: with the Qwen2.5-1.5B shape (4 layers, f16) and the per-token weight of a
// mean over 8,192 tokens, the adapter gradient's cosine to the f32 model's fell from 0.999999 to
// 0.99988, and to 0.9928 at 65,536 tokens. A power of two scales f32 arithmetic exactly, so f32
// weights give the same bits; the sums are divided by it again in f32 (AdamW::grad_norm) before
// anything reads them.
float loss_scale(double largest_coef) {
    if (!(largest_coef > 0) || !std::isfinite(largest_coef)) return 1.0f;
    const int e = (int) std::floor(-std::log2(largest_coef));
    return std::ldexp(1.0f, std::min(100, std::max(-100, e))); // within f32's normal range
}

PackedBatch pack_micro_batches(const std::vector<TrainSeq> & batch, const StepSettings & st) {
    PackedBatch p;
    p.has_old = !batch[0].old_lp.empty();
    std::vector<int64_t> rows_of(batch.size(), 0);
    double largest = st.beta;
    for (size_t i = 0; i < batch.size(); ++i) {
        for (size_t t = 1; t < batch[i].tokens.size(); ++t) {
            if (!trained(batch[i], t)) continue;
            rows_of[i] += 1;
            largest = std::max(largest, (double) std::fabs(batch[i].weights[t]));
        }
        p.n += rows_of[i];
    }
    if (p.n == 0) return p;
    const float inv_n = 1.0f / (float) p.n, scale = loss_scale(largest / (double) p.n);

    // Greedy packing in batch order: a micro-batch holds B sequences padded to its longest L, B*L <= budget.
    std::vector<std::vector<int32_t>> groups;
    int64_t longest = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
        if (rows_of[i] == 0) continue;
        const int64_t len = (int64_t) batch[i].tokens.size();
        const int64_t L = std::max(longest, len);
        if (groups.empty() || (st.micro_batch_tokens > 0 && (int64_t) (groups.back().size() + 1) * L > st.micro_batch_tokens)) {
            groups.emplace_back();
            longest = 0;
        }
        groups.back().push_back((int32_t) i);
        longest = std::max(longest, len);
    }
    for (const auto & grp : groups) {
        MicroBatch mb;
        mb.loss_scale = scale;
        mb.B = (int64_t) grp.size();
        for (int32_t i : grp) mb.L = std::max(mb.L, (int64_t) batch[i].tokens.size());
        mb.tokens.assign((size_t) (mb.B * mb.L), 0);
        mb.positions.resize(mb.tokens.size());
        for (int64_t b = 0; b < mb.B; ++b) {
            const TrainSeq & s = batch[grp[b]];
            mb.seq_index.push_back(grp[b]);
            mb.real_tokens += (int64_t) s.tokens.size();
            for (int64_t q = 0; q < mb.L; ++q) {
                mb.positions[b * mb.L + q] = (int32_t) q;
                if (q < (int64_t) s.tokens.size()) mb.tokens[b * mb.L + q] = s.tokens[q];
            }
            for (size_t t = 1; t < s.tokens.size(); ++t) {
                if (!trained(s, t)) continue;
                mb.rows.push_back((int32_t) (b * mb.L + (int64_t) t - 1));
                mb.targets.push_back(s.tokens[t]);
                mb.w.push_back(s.weights[t]);
                mb.neg_w.push_back((-s.weights[t] * inv_n) * scale);
                if (st.beta > 0) mb.kl_m.push_back((st.beta * inv_n) * scale);
                if (p.has_old) mb.old_lp.push_back(s.old_lp[t]);
            }
        }
        p.tokens += mb.real_tokens;
        p.mbs.push_back(std::move(mb));
    }
    return p;
}

} // namespace rrr
