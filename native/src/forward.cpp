#include "forward.h"
#include "errors.h"

#include <cmath>
#include <limits>
#include <memory>

namespace rrr {

PackedBatch pack_sequences(const std::vector<std::vector<int32_t>> & seqs, const ModelConfig & cfg) {
    if (seqs.empty()) throw Error("forward: empty batch (expected at least one token sequence)");
    PackedBatch p;
    p.seq_start.push_back(0);
    for (size_t s = 0; s < seqs.size(); ++s) {
        const auto & seq = seqs[s];
        if (seq.empty()) throw Error("forward: sequence " + std::to_string(s) + " is empty");
        if ((int64_t) seq.size() > cfg.n_ctx_train) {
            throw Error("context overflow: sequence " + std::to_string(s) + " has " + std::to_string(seq.size()) +
                        " tokens, the model's context length is " + std::to_string(cfg.n_ctx_train));
        }
        for (size_t i = 0; i < seq.size(); ++i) {
            if (seq[i] < 0 || seq[i] >= cfg.n_vocab) {
                throw Error("forward: token id " + std::to_string(seq[i]) + " in sequence " + std::to_string(s) +
                            " is outside the vocabulary [0, " + std::to_string(cfg.n_vocab) + ")");
            }
            p.tokens.push_back(seq[i]);
            p.positions.push_back((int32_t) i);
            p.seq_of.push_back((int32_t) s);
        }
        p.seq_start.push_back((int64_t) p.tokens.size());
    }
    return p;
}

namespace {

struct GraphCtx {
    ggml_context * ctx = nullptr;
    explicit GraphCtx(size_t n_nodes) {
        ggml_init_params ip{ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false), nullptr, true};
        ctx = ggml_init(ip);
        if (!ctx) throw Error("out of host memory building the compute graph");
    }
    ~GraphCtx() { ggml_free(ctx); }
};

ggml_tensor * rms_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * weight, float eps) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, eps), weight);
}

ggml_tensor * maybe_add(ggml_context * ctx, ggml_tensor * x, ggml_tensor * bias) {
    return bias ? ggml_add(ctx, x, bias) : x;
}

} // namespace

ForwardResult run_forward(const ModelWeights & w, Backends & b, const PackedBatch & batch, bool last_only) {
    const ModelConfig & c = w.config();
    const int64_t T = (int64_t) batch.tokens.size();
    const int64_t n_out = last_only ? batch.n_seqs() : T;
    const size_t n_nodes = 16384;
    GraphCtx g(n_nodes);
    ggml_context * ctx = g.ctx;

    ggml_tensor * inp_tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_set_input(inp_tokens);
    ggml_tensor * inp_pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_set_input(inp_pos);
    ggml_tensor * inp_mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
    ggml_set_input(inp_mask);
    ggml_tensor * inp_out_rows = nullptr;
    if (last_only) {
        inp_out_rows = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_out);
        ggml_set_input(inp_out_rows);
    }

    const float kq_scale = 1.0f / std::sqrt((float) c.head_dim);
    ggml_tensor * x = ggml_get_rows(ctx, w.tok_embd, inp_tokens);
    for (int64_t il = 0; il < c.n_layer; ++il) {
        const LayerWeights & l = w.layers[il];
        ggml_tensor * h = rms_norm(ctx, x, l.attn_norm, c.rms_eps);

        ggml_tensor * q = ggml_reshape_3d(ctx, maybe_add(ctx, ggml_mul_mat(ctx, l.wq, h), l.bq), c.head_dim, c.n_head, T);
        ggml_tensor * k = ggml_reshape_3d(ctx, maybe_add(ctx, ggml_mul_mat(ctx, l.wk, h), l.bk), c.head_dim, c.n_head_kv, T);
        ggml_tensor * v = ggml_reshape_3d(ctx, maybe_add(ctx, ggml_mul_mat(ctx, l.wv, h), l.bv), c.head_dim, c.n_head_kv, T);
        if (c.qk_norm) {
            q = rms_norm(ctx, q, l.q_norm, c.rms_eps);
            k = rms_norm(ctx, k, l.k_norm, c.rms_eps);
        }
        // ext_factor 0 disables YaRN; beta values are then unused.
        q = ggml_rope_ext(ctx, q, inp_pos, w.rope_freqs, (int) c.n_rot, c.rope_mode, (int) c.n_ctx_train,
                          c.rope_base, c.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);
        k = ggml_rope_ext(ctx, k, inp_pos, w.rope_freqs, (int) c.n_rot, c.rope_mode, (int) c.n_ctx_train,
                          c.rope_base, c.rope_freq_scale, 0.0f, 1.0f, 32.0f, 1.0f);

        // [head_dim, T, heads]: mul_mat broadcasts the n_head_kv K/V heads over the query heads.
        ggml_tensor * Q = ggml_permute(ctx, q, 0, 2, 1, 3);
        ggml_tensor * K = ggml_permute(ctx, k, 0, 2, 1, 3);
        ggml_tensor * kq = ggml_mul_mat(ctx, K, Q);
        ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
        kq = ggml_soft_max_ext(ctx, kq, inp_mask, kq_scale, 0.0f);
        ggml_tensor * Vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3)); // [T, head_dim, n_head_kv]
        ggml_tensor * kqv = ggml_mul_mat(ctx, Vt, kq);                        // [head_dim, T, n_head]
        ggml_tensor * o = ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), c.head_dim * c.n_head, T);
        x = ggml_add(ctx, x, ggml_mul_mat(ctx, l.wo, o));

        h = rms_norm(ctx, x, l.ffn_norm, c.rms_eps);
        ggml_tensor * gate = ggml_mul_mat(ctx, l.w_gate, h);
        ggml_tensor * up = ggml_mul_mat(ctx, l.w_up, h);
        x = ggml_add(ctx, x, ggml_mul_mat(ctx, l.w_down, ggml_swiglu_split(ctx, gate, up)));
    }
    if (inp_out_rows) x = ggml_get_rows(ctx, x, inp_out_rows);
    x = rms_norm(ctx, x, w.output_norm, c.rms_eps);
    ggml_tensor * logits = ggml_mul_mat(ctx, w.output, x);
    ggml_set_output(logits);

    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);
    ggml_build_forward_expand(gf, logits);

    ggml_backend_sched_t sched = b.sched();
    ggml_backend_sched_reset(sched);
    if (!ggml_backend_sched_alloc_graph(sched, gf)) {
        throw Error("out of memory for a forward pass over " + std::to_string(T) + " tokens on " + b.name() +
                    " (try fewer or shorter sequences)");
    }
    ggml_backend_tensor_set(inp_tokens, batch.tokens.data(), 0, ggml_nbytes(inp_tokens));
    ggml_backend_tensor_set(inp_pos, batch.positions.data(), 0, ggml_nbytes(inp_pos));
    {
        const float neg_inf = -std::numeric_limits<float>::infinity();
        std::vector<float> mask((size_t) T * T, neg_inf);
        for (int64_t qi = 0; qi < T; ++qi) {
            const int64_t s = batch.seq_of[qi];
            for (int64_t ki = batch.seq_start[s]; ki <= qi; ++ki) mask[qi * T + ki] = 0.0f;
        }
        ggml_backend_tensor_set(inp_mask, mask.data(), 0, ggml_nbytes(inp_mask));
    }
    if (inp_out_rows) {
        std::vector<int32_t> rows;
        for (int64_t s = 0; s < batch.n_seqs(); ++s) rows.push_back((int32_t) batch.seq_start[s + 1] - 1);
        ggml_backend_tensor_set(inp_out_rows, rows.data(), 0, ggml_nbytes(inp_out_rows));
    }
    if (ggml_backend_sched_graph_compute(sched, gf) != GGML_STATUS_SUCCESS) {
        throw Error("forward pass failed on " + b.name());
    }

    ForwardResult r;
    r.n_vocab = c.n_vocab;
    r.logits.resize((size_t) n_out * c.n_vocab);
    ggml_backend_tensor_get(logits, r.logits.data(), 0, r.logits.size() * sizeof(float));
    r.row_start.push_back(0);
    for (int64_t s = 0; s < batch.n_seqs(); ++s) {
        r.row_start.push_back(last_only ? s + 1 : batch.seq_start[s + 1]);
    }
    ggml_backend_sched_reset(sched);
    return r;
}

} // namespace rrr
