#include "transformer.h"

#include <cmath>

namespace rrr {

const char * lora_target_name(LoraTarget t) {
    static const char * names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    return names[(size_t) t];
}

const char * lora_target_tensor(LoraTarget t) {
    static const char * names[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    return names[(size_t) t];
}

namespace {

ggml_tensor * rms_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * weight, float eps) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, eps), weight);
}

ggml_tensor * maybe_add(ggml_context * ctx, ggml_tensor * x, ggml_tensor * bias) {
    return bias ? ggml_add(ctx, x, bias) : x;
}

} // namespace

ggml_tensor * project(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const LoraPair * lora, float scale) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    if (lora) {
        // Scaling the rank-r product A x rather than B (A x) touches r values per token instead
        // of n_out: on the H100 the n_out-wide SCALEs were 62 ms of a 792 ms training step.
        ggml_tensor * a = ggml_scale(ctx, ggml_mul_mat(ctx, lora->a, x), scale);
        y = ggml_add(ctx, y, ggml_mul_mat(ctx, lora->b, a));
    }
    return y;
}

ggml_tensor * build_transformer(ggml_context * ctx, const ModelWeights & w, const LoraView & lora,
                                const TransformerInputs & in, const AttentionFn & attention) {
    const ModelConfig & c = w.config();
    const int64_t T = in.tokens->ne[0];
    const float s = lora.scale;
    ggml_tensor * x = ggml_get_rows(ctx, w.tok_embd, in.tokens);
    for (int64_t il = 0; il < c.n_layer; ++il) {
        const LayerWeights & l = w.layers[il];
        ggml_tensor * h = rms_norm(ctx, x, l.attn_norm, c.rms_eps);

        ggml_tensor * q = maybe_add(ctx, project(ctx, l.wq, h, lora.pair(il, LoraTarget::Q), s), l.bq);
        ggml_tensor * k = maybe_add(ctx, project(ctx, l.wk, h, lora.pair(il, LoraTarget::K), s), l.bk);
        ggml_tensor * v = maybe_add(ctx, project(ctx, l.wv, h, lora.pair(il, LoraTarget::V), s), l.bv);
        q = ggml_reshape_3d(ctx, q, c.head_dim, c.n_head, T);
        k = ggml_reshape_3d(ctx, k, c.head_dim, c.n_head_kv, T);
        v = ggml_reshape_3d(ctx, v, c.head_dim, c.n_head_kv, T);
        if (c.qk_norm) {
            q = rms_norm(ctx, q, l.q_norm, c.rms_eps);
            k = rms_norm(ctx, k, l.k_norm, c.rms_eps);
        }
        // ext_factor 0 disables YaRN; beta values are then unused.
        q = ggml_rope_ext(ctx, q, in.positions, w.rope_freqs, (int) c.n_rot, c.rope_mode, (int) c.n_ctx_train,
                          c.rope_base, c.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
        k = ggml_rope_ext(ctx, k, in.positions, w.rope_freqs, (int) c.n_rot, c.rope_mode, (int) c.n_ctx_train,
                          c.rope_base, c.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);

        ggml_tensor * o = attention(ctx, il, q, k, v);
        if (in.out_rows && il == c.n_layer - 1) {
            // Rows nobody reads need no output projection or MLP in the last layer: a prefill
            // keeps one row of hundreds (as libllama does; on a 2-layer model, 40% of its work).
            o = ggml_get_rows(ctx, o, in.out_rows);
            x = ggml_get_rows(ctx, x, in.out_rows);
        }
        x = ggml_add(ctx, x, project(ctx, l.wo, o, lora.pair(il, LoraTarget::O), s));

        h = rms_norm(ctx, x, l.ffn_norm, c.rms_eps);
        ggml_tensor * gate = project(ctx, l.w_gate, h, lora.pair(il, LoraTarget::Gate), s);
        ggml_tensor * up = project(ctx, l.w_up, h, lora.pair(il, LoraTarget::Up), s);
        x = ggml_add(ctx, x, project(ctx, l.w_down, ggml_swiglu_split(ctx, gate, up), lora.pair(il, LoraTarget::Down), s));
    }
    x = rms_norm(ctx, x, w.output_norm, c.rms_eps);
    return ggml_mul_mat(ctx, w.output, x);
}

ggml_tensor * dense_attention(ggml_context * ctx, const ModelConfig & c, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                              ggml_tensor * mask) {
    const int64_t T = q->ne[2];
    // [head_dim, T, heads]: mul_mat broadcasts the n_head_kv K/V heads over the query heads.
    ggml_tensor * Q = ggml_permute(ctx, q, 0, 2, 1, 3);
    ggml_tensor * K = ggml_permute(ctx, k, 0, 2, 1, 3);
    ggml_tensor * kq = ggml_mul_mat(ctx, K, Q);
    ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
    kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / std::sqrt((float) c.head_dim), 0.0f);
    ggml_tensor * Vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3)); // [T, head_dim, n_head_kv]
    ggml_tensor * kqv = ggml_mul_mat(ctx, Vt, kq);                        // [head_dim, T, n_head]
    return ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), c.head_dim * c.n_head, T);
}

} // namespace rrr
