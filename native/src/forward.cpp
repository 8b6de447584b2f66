#include "forward.h"
#include "errors.h"
#include "transformer.h"

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

} // namespace

ForwardResult run_forward(const ModelWeights & w, const LoraView & lora, Backends & b, const PackedBatch & batch, bool last_only) {
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

    TransformerInputs in{inp_tokens, inp_pos, inp_out_rows};
    ggml_tensor * logits = build_transformer(ctx, w, lora, in, [&](ggml_context * c0, int64_t, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) {
        return dense_attention(c0, c, q, k, v, inp_mask);
    });
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
