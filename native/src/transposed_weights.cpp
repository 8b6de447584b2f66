#include "transposed_weights.h"
#include "errors.h"

#include <algorithm>
#include <vector>

namespace rrr {

std::vector<ggml_tensor *> frozen_weights(const ModelWeights & w) {
    std::vector<ggml_tensor *> out;
    for (const LayerWeights & l : w.layers) {
        for (ggml_tensor * t : {l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down}) out.push_back(t);
    }
    out.push_back(w.output);
    return out;
}

ggml_type transposed_type(const ggml_tensor * w) {
    const bool plain = w->type == GGML_TYPE_F32 || w->type == GGML_TYPE_F16 || w->type == GGML_TYPE_BF16;
    return plain ? w->type : GGML_TYPE_F16;
}

size_t TransposedWeights::bytes_needed(const ModelWeights & w) {
    size_t n = 0;
    for (const ggml_tensor * t : frozen_weights(w)) n += ggml_row_size(transposed_type(t), t->ne[1]) * (size_t) t->ne[0];
    return n;
}

TransposedWeights::TransposedWeights(const ModelWeights & w, const Backends & b) {
    const std::vector<ggml_tensor *> src = frozen_weights(w);
    ggml_init_params ip{ggml_tensor_overhead() * (src.size() + 1), nullptr, true};
    ctx_ = ggml_init(ip);
    if (!ctx_) throw Error("out of host memory for the transposed weights");
    for (ggml_tensor * t : src) map_[t] = ggml_new_tensor_2d(ctx_, transposed_type(t), t->ne[1], t->ne[0]);
    buf_ = ggml_backend_alloc_ctx_tensors(ctx_, b.primary());
    if (!buf_) {
        ggml_free(ctx_);
        throw Error("out of device memory for the transposed weights (" + std::to_string(bytes_needed(w) >> 20) +
                    " MiB); train with transposedWeights: 'per-step'");
    }
    // The scheduler then places ops reading them where they live, like the model's own weights.
    ggml_backend_buffer_set_usage(buf_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

    // One graph copies every W through a transposed view straight into its cache tensor;
    // quantised types are dequantised by get_rows first, as the per-step path does.
    // Up to four nodes a weight (a view of iota, get_rows, the transpose, the copy) and two leaves
    // (the weight and its cache tensor): the scheduler's table must hold nodes and leaves.
    const size_t n_nodes = 6 * src.size() + 16;
    ggml_init_params gp{ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false), nullptr, true};
    ggml_context * g = ggml_init(gp);
    if (!g) {
        ggml_backend_buffer_free(buf_);
        ggml_free(ctx_);
        throw Error("out of host memory for the transposed weights");
    }
    ggml_cgraph * gf = ggml_new_graph_custom(g, n_nodes, false);
    int64_t max_rows = 0;
    for (const ggml_tensor * t : src) max_rows = std::max(max_rows, t->ne[1]);
    ggml_tensor * iota = ggml_new_tensor_1d(g, GGML_TYPE_I32, max_rows);
    ggml_set_input(iota);
    for (ggml_tensor * t : src) {
        ggml_tensor * from = transposed_type(t) == t->type ? t : ggml_get_rows(g, t, ggml_view_1d(g, iota, t->ne[1], 0));
        ggml_build_forward_expand(gf, ggml_cpy(g, ggml_transpose(g, from), map_[t]));
    }
    ggml_backend_sched_t sched = b.new_sched(n_nodes);
    bool ok = sched && ggml_backend_sched_alloc_graph(sched, gf);
    if (ok) {
        if (iota->buffer) {
            std::vector<int32_t> v((size_t) max_rows);
            for (size_t i = 0; i < v.size(); ++i) v[i] = (int32_t) i;
            ggml_backend_tensor_set(iota, v.data(), 0, v.size() * sizeof(int32_t));
        }
        ok = ggml_backend_sched_graph_compute(sched, gf) == GGML_STATUS_SUCCESS;
    }
    if (sched) ggml_backend_sched_free(sched);
    ggml_free(g);
    if (!ok) {
        ggml_backend_buffer_free(buf_);
        ggml_free(ctx_);
        throw Error("could not transpose the frozen weights");
    }
}

TransposedWeights::~TransposedWeights() {
    ggml_backend_buffer_free(buf_);
    ggml_free(ctx_);
}

ggml_tensor * TransposedWeights::find(const ggml_tensor * w) const {
    auto it = map_.find(w);
    return it == map_.end() ? nullptr : it->second;
}

size_t TransposedWeights::bytes() const { return ggml_backend_buffer_get_size(buf_); }

} // namespace rrr
