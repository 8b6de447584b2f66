#include "decode.h"
#include "errors.h"
#include "transformer.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace rrr {

namespace {

struct GraphCtx {
    ggml_context * ctx = nullptr;
    explicit GraphCtx(size_t n_nodes) {
        ggml_init_params ip{ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false), nullptr, true};
        ctx = ggml_init(ip);
        if (!ctx) throw Error("out of host memory building the decode graph");
    }
    ~GraphCtx() { ggml_free(ctx); }
};

// Cells [lo, hi) cover everything the batch's sequences see. The window is padded so graph
// shapes change rarely and GPU attention kernels get whole tiles (CUDA's flash attention works
// in strides of 256 cells); padding cells are masked out.
void attention_window(const KvCache & cache, const std::vector<StepToken> & batch, int64_t pad, int64_t & lo, int64_t & hi) {
    std::vector<char> seen((size_t) cache.n_seqs(), 0);
    lo = cache.n_cells();
    hi = 0;
    for (const StepToken & t : batch) {
        if (seen[(size_t) t.seq]) continue;
        seen[(size_t) t.seq] = 1;
        int64_t a, z;
        cache.seq_window(t.seq, a, z);
        if (a < z) {
            lo = std::min(lo, a);
            hi = std::max(hi, z);
        }
    }
    if (hi <= lo) throw Error("internal error: decode batch sees no cache cells");
    int64_t n = ((hi - lo + pad - 1) / pad) * pad;
    n = std::min(n, cache.n_cells());
    if (lo + n > cache.n_cells()) lo = cache.n_cells() - n;
    hi = lo + n;
}

} // namespace

void decode_step(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache,
                 const std::vector<StepToken> & batch, const StepOptions & opt, std::vector<float> & logits) {
    const ModelConfig & c = w.config();
    const int64_t T = (int64_t) batch.size();
    if (T == 0) throw Error("internal error: empty decode batch");
    int64_t n_out = 0;
    for (const StepToken & t : batch) n_out += t.logits ? 1 : 0;

    int64_t lo, hi;
    attention_window(cache, batch, b.is_gpu() ? 256 : 32, lo, hi);
    const int64_t n_kv = hi - lo;

    const size_t n_nodes = 16384;
    GraphCtx g(n_nodes);
    ggml_context * ctx = g.ctx;
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, n_nodes, false);

    auto input = [&](ggml_type type, int64_t ne0, int64_t ne1 = 1) {
        ggml_tensor * t = ne1 == 1 ? ggml_new_tensor_1d(ctx, type, ne0) : ggml_new_tensor_2d(ctx, type, ne0, ne1);
        ggml_set_input(t);
        return t;
    };
    ggml_tensor * inp_tokens = input(GGML_TYPE_I32, T);
    ggml_tensor * inp_pos = input(GGML_TYPE_I32, T);
    ggml_tensor * inp_k_idx = input(GGML_TYPE_I64, T);
    ggml_tensor * inp_v_idx = input(GGML_TYPE_I64, cache.v_index_len(T));
    ggml_tensor * inp_mask = input(opt.flash_attn ? GGML_TYPE_F16 : GGML_TYPE_F32, n_kv, T);
    ggml_tensor * inp_out = n_out < T ? input(GGML_TYPE_I32, n_out) : nullptr;

    const float kq_scale = 1.0f / std::sqrt((float) c.head_dim);
    TransformerInputs in{inp_tokens, inp_pos, inp_out};
    auto attend = [&](ggml_context * c0, int64_t il, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) -> ggml_tensor * {
        // The stores are expanded into the graph first so they run before the reads below.
        ggml_build_forward_expand(gf, cache.store_k(c0, il, k, inp_k_idx));
        ggml_build_forward_expand(gf, cache.store_v(c0, il, v, inp_v_idx));
        ggml_tensor * Q = ggml_permute(c0, q, 0, 2, 1, 3); // [head_dim, T, n_head]
        ggml_tensor * K = cache.k_view(c0, il, lo, n_kv);
        ggml_tensor * V = cache.v_view(c0, il, lo, n_kv);
        if (opt.flash_attn) {
            if (K->type == GGML_TYPE_F32) K = ggml_cast(c0, K, GGML_TYPE_F16);
            if (V->type == GGML_TYPE_F32) V = ggml_cast(c0, V, GGML_TYPE_F16);
            ggml_tensor * o = ggml_flash_attn_ext(c0, Q, K, V, inp_mask, kq_scale, 0.0f, 0.0f);
            ggml_flash_attn_ext_set_prec(o, GGML_PREC_F32);
            return ggml_reshape_2d(c0, o, c.head_dim * c.n_head, T); // result is [head_dim, n_head, T]
        }
        ggml_tensor * kq = ggml_mul_mat(c0, K, Q); // [n_kv, T, n_head]
        ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
        kq = ggml_soft_max_ext(c0, kq, inp_mask, kq_scale, 0.0f);
        ggml_tensor * kqv = ggml_mul_mat(c0, V, kq); // [head_dim, T, n_head]
        return ggml_cont_2d(c0, ggml_permute(c0, kqv, 0, 2, 1, 3), c.head_dim * c.n_head, T);
    };
    ggml_tensor * out = build_transformer(ctx, w, lora, in, attend);
    ggml_set_output(out);
    ggml_build_forward_expand(gf, out);

    ggml_backend_sched_t sched = b.sched();
    ggml_backend_sched_reset(sched);
    if (!ggml_backend_sched_alloc_graph(sched, gf)) {
        throw Error("out of memory for a decode step of " + std::to_string(T) + " tokens over " + std::to_string(n_kv) +
                    " cache cells on " + b.name() + " (lower maxSeqs or nCtx)");
    }

    std::vector<int32_t> tok(T), pos(T), rows;
    std::vector<int64_t> cells(T), v_idx;
    for (int64_t i = 0; i < T; ++i) {
        tok[i] = batch[i].token;
        pos[i] = batch[i].pos;
        cells[i] = batch[i].cell;
        if (batch[i].logits) rows.push_back((int32_t) i);
    }
    cache.fill_v_index(cells, v_idx);
    ggml_backend_tensor_set(inp_tokens, tok.data(), 0, ggml_nbytes(inp_tokens));
    ggml_backend_tensor_set(inp_pos, pos.data(), 0, ggml_nbytes(inp_pos));
    ggml_backend_tensor_set(inp_k_idx, cells.data(), 0, ggml_nbytes(inp_k_idx));
    ggml_backend_tensor_set(inp_v_idx, v_idx.data(), 0, ggml_nbytes(inp_v_idx));
    if (inp_out) ggml_backend_tensor_set(inp_out, rows.data(), 0, ggml_nbytes(inp_out));
    {
        const float neg_inf = -std::numeric_limits<float>::infinity();
        std::vector<float> mask((size_t) (n_kv * T), neg_inf);
        for (int64_t i = 0; i < T; ++i) {
            float * row = &mask[(size_t) (i * n_kv)];
            for (int64_t j = 0; j < n_kv; ++j) {
                if (cache.visible(lo + j, batch[i].seq, batch[i].pos)) row[j] = 0.0f;
            }
        }
        if (opt.flash_attn) {
            std::vector<ggml_fp16_t> m16(mask.size());
            ggml_fp32_to_fp16_row(mask.data(), m16.data(), (int64_t) mask.size());
            ggml_backend_tensor_set(inp_mask, m16.data(), 0, ggml_nbytes(inp_mask));
        } else {
            ggml_backend_tensor_set(inp_mask, mask.data(), 0, ggml_nbytes(inp_mask));
        }
    }
    if (ggml_backend_sched_graph_compute(sched, gf) != GGML_STATUS_SUCCESS) {
        throw Error("decode step failed on " + b.name());
    }
    // Only the rows sampling needs cross back to the host.
    logits.resize((size_t) (n_out * c.n_vocab));
    ggml_backend_tensor_get(out, logits.data(), 0, logits.size() * sizeof(float));
    ggml_backend_sched_reset(sched);
}

} // namespace rrr
