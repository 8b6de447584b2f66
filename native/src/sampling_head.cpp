#include "sampling_head.h"
#include "errors.h"

namespace rrr {

HeadMode head_mode_for(const SamplingParams & p, int64_t n_vocab) {
    if (p.repeat_penalty != 1.0f && p.repeat_last_n > 0) return HeadMode::logits;
    if (p.temperature == 0.0f || p.top_k == 1) return HeadMode::greedy;
    const bool whole_vocab = p.top_k == 0 || p.top_k >= n_vocab;
    if (whole_vocab && p.top_p >= 1.0f && p.min_p == 0.0f) return HeadMode::temperature;
    return HeadMode::logits;
}

namespace {

// The first index of each row whose `hit` is 1 (hit is 0/1): weighting by V, V-1, ..., 1 makes
// that index the unique maximum whatever ggml's argmax does with ties.
ggml_tensor * first_hit(ggml_context * ctx, ggml_tensor * hit) {
    const int64_t V = hit->ne[0];
    ggml_tensor * desc = ggml_scale_bias(ctx, ggml_arange(ctx, 0.0f, (float) V, 1.0f), -1.0f, (float) V);
    return ggml_argmax(ctx, ggml_mul(ctx, hit, desc));
}

// One element per row: x[ids[r], r], as [1, n].
ggml_tensor * pick(ggml_context * ctx, ggml_tensor * x, ggml_tensor * ids) {
    const int64_t V = x->ne[0], n = x->ne[1];
    ggml_tensor * rows = ggml_get_rows(ctx, ggml_reshape_3d(ctx, x, 1, V, n), ggml_reshape_2d(ctx, ids, 1, n));
    return ggml_reshape_2d(ctx, rows, 1, n);
}

} // namespace

SampleHead build_sample_head(ggml_context * ctx, ggml_tensor * logits, HeadMode mode, float temperature, ggml_tensor * uniforms) {
    if (mode == HeadMode::logits) throw Error("internal error: no sampling head for logits mode");
    if (logits->type != GGML_TYPE_F32 || !ggml_is_contiguous(logits)) throw Error("internal error: sampling head needs contiguous f32 logits");
    const int64_t n = logits->ne[1];

    // The row maximum (whichever maximal id argmax finds) and Σ exp(x - max): the log-sum-exp
    // every returned log-prob is relative to.
    ggml_tensor * m = pick(ctx, logits, ggml_argmax(ctx, logits));
    ggml_tensor * d = ggml_sub(ctx, logits, m);  // <= 0, exactly 0 at the maxima
    ggml_tensor * log_z = ggml_log(ctx, ggml_sum_rows(ctx, ggml_exp(ctx, d)));

    SampleHead h;
    if (mode == HeadMode::greedy) {
        // 1 where x == max: step(max - x) is 0 exactly there.
        ggml_tensor * at_max = ggml_scale_bias(ctx, ggml_step(ctx, ggml_scale(ctx, d, -1.0f)), -1.0f, 1.0f);
        h.ids = first_hit(ctx, at_max);
        h.logprobs = ggml_reshape_1d(ctx, ggml_neg(ctx, log_z), n);
        return h;
    }
    if (!uniforms) throw Error("internal error: temperature sampling head needs uniforms");
    // The host walks ids in order subtracting probabilities from u·total and takes the first id
    // that drives it below zero: the first id whose running sum exceeds u·total.
    ggml_tensor * p = ggml_soft_max_ext(ctx, logits, nullptr, 1.0f / temperature, 0.0f);
    ggml_tensor * c = ggml_cumsum(ctx, p);
    ggml_tensor * total = ggml_cont(ctx, ggml_view_2d(ctx, c, 1, n, c->nb[1], (size_t) (c->ne[0] - 1) * ggml_element_size(c)));
    ggml_tensor * thr = ggml_mul(ctx, uniforms, total);  // u < 1, so the last id always qualifies
    h.ids = first_hit(ctx, ggml_step(ctx, ggml_sub(ctx, c, thr)));
    ggml_tensor * lp = ggml_sub(ctx, ggml_sub(ctx, pick(ctx, logits, h.ids), m), log_z);
    h.logprobs = ggml_reshape_1d(ctx, lp, n);
    return h;
}

} // namespace rrr
