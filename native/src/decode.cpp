#include "decode.h"
#include "errors.h"
#include "transformer.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace rrr {

namespace {

constexpr size_t kGraphNodes = 16384;
// llama.cpp pads its window the same way; fewer distinct shapes mean fewer graph rebuilds.
constexpr int64_t kWindowPad = 256;

// Cells [lo, hi) cover everything the batch's sequences see. The window is padded so that
// consecutive steps keep one shape (and their graph) and GPU attention kernels get whole tiles
// (CUDA's flash attention works in strides of 256 cells); padding cells are masked out.
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
    lo -= lo % pad;  // aligned starts let a growing window keep its start
    int64_t n = ((hi - lo + pad - 1) / pad) * pad;
    n = std::min(n, cache.n_cells());
    if (lo + n > cache.n_cells()) lo = cache.n_cells() - n;
    hi = lo + n;
}

} // namespace

// Row i of the mask opens the cells batch[i]'s sequence sees at or before its position. Walking
// cells and their (few) sequences touches each cell once; asking every (row, cell) pair would
// be T × n_kv lookups, a millisecond per step at 64 sequences over 16k cells.
template <typename T>
void Decoder::fill_mask(const KvCache & cache, const std::vector<StepToken> & batch, int64_t lo, int64_t n_kv, T closed, T open,
                        std::vector<T> & mask) {
    const int64_t n_rows = (int64_t) batch.size();
    mask.assign((size_t) (n_kv * n_rows), closed);
    rows_of_seq_.resize((size_t) cache.n_seqs());
    for (auto & rows : rows_of_seq_) rows.clear();
    for (int64_t i = 0; i < n_rows; ++i) rows_of_seq_[(size_t) batch[(size_t) i].seq].push_back((int32_t) i);
    for (int64_t j = 0; j < n_kv; ++j) {
        const int32_t p = cache.pos(lo + j);
        if (p < 0) continue;
        cache.for_each_seq(lo + j, [&](int seq) {
            for (int32_t r : rows_of_seq_[(size_t) seq]) {
                if (p <= batch[(size_t) r].pos) mask[(size_t) (r * n_kv + j)] = open;
            }
        });
    }
}

Decoder::Decoder() {
    ggml_init_params ip{ggml_tensor_overhead() * kGraphNodes + ggml_graph_overhead_custom(kGraphNodes, false), nullptr, true};
    ctx_ = ggml_init(ip);
    if (!ctx_) throw Error("out of host memory for the decode graph");
}

Decoder::~Decoder() { ggml_free(ctx_); }

void Decoder::build(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, const Shape & s) {
    const ModelConfig & c = w.config();
    ggml_backend_sched_t sched = b.sched();
    ggml_backend_sched_reset(sched);  // before its old graph's tensors go away
    valid_ = false;
    ggml_reset(ctx_);
    ggml_context * ctx = ctx_;
    gf_ = ggml_new_graph_custom(ctx, kGraphNodes, false);
    auto input = [&](ggml_type type, int64_t ne0, int64_t ne1 = 1) {
        ggml_tensor * t = ne1 == 1 ? ggml_new_tensor_1d(ctx, type, ne0) : ggml_new_tensor_2d(ctx, type, ne0, ne1);
        ggml_set_input(t);
        return t;
    };
    tokens_ = input(GGML_TYPE_I32, s.T);
    pos_ = input(GGML_TYPE_I32, s.T);
    k_idx_ = input(GGML_TYPE_I64, s.T);
    v_idx_ = input(GGML_TYPE_I64, cache.v_index_len(s.T));
    mask_ = input(s.flash_attn ? GGML_TYPE_F16 : GGML_TYPE_F32, s.n_kv, s.T);
    out_rows_ = s.n_out < s.T ? input(GGML_TYPE_I32, s.n_out) : nullptr;

    const float kq_scale = 1.0f / std::sqrt((float) c.head_dim);
    TransformerInputs in{tokens_, pos_, out_rows_};
    auto attend = [&](ggml_context * c0, int64_t il, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) -> ggml_tensor * {
        // The stores are expanded into the graph first so they run before the reads below.
        ggml_build_forward_expand(gf_, cache.store_k(c0, il, k, k_idx_));
        ggml_build_forward_expand(gf_, cache.store_v(c0, il, v, v_idx_));
        ggml_tensor * Q = ggml_permute(c0, q, 0, 2, 1, 3); // [head_dim, T, n_head]
        ggml_tensor * K = cache.k_view(c0, il, s.lo, s.n_kv);
        ggml_tensor * V = cache.v_view(c0, il, s.lo, s.n_kv);
        if (s.flash_attn) {
            if (K->type == GGML_TYPE_F32) K = ggml_cast(c0, K, GGML_TYPE_F16);
            if (V->type == GGML_TYPE_F32) V = ggml_cast(c0, V, GGML_TYPE_F16);
            ggml_tensor * o = ggml_flash_attn_ext(c0, Q, K, V, mask_, kq_scale, 0.0f, 0.0f);
            ggml_flash_attn_ext_set_prec(o, GGML_PREC_F32);
            return ggml_reshape_2d(c0, o, c.head_dim * c.n_head, s.T); // result is [head_dim, n_head, T]
        }
        ggml_tensor * kq = ggml_mul_mat(c0, K, Q); // [n_kv, T, n_head]
        ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
        kq = ggml_soft_max_ext(c0, kq, mask_, kq_scale, 0.0f);
        ggml_tensor * kqv = ggml_mul_mat(c0, V, kq); // [head_dim, T, n_head]
        return ggml_cont_2d(c0, ggml_permute(c0, kqv, 0, 2, 1, 3), c.head_dim * c.n_head, s.T);
    };
    logits_ = build_transformer(ctx, w, lora, in, attend);
    uniforms_ = ids_ = logprobs_ = nullptr;
    if (s.head == HeadMode::logits) {
        ggml_set_output(logits_);
        ggml_build_forward_expand(gf_, logits_);
    } else {
        if (s.head == HeadMode::temperature) uniforms_ = input(GGML_TYPE_F32, 1, s.n_out);
        const SampleHead h = build_sample_head(ctx, logits_, s.head, s.temperature, uniforms_);
        ids_ = h.ids;
        logprobs_ = h.logprobs;
        ggml_set_output(ids_);
        ggml_set_output(logprobs_);
        ggml_build_forward_expand(gf_, ids_);
        ggml_build_forward_expand(gf_, logprobs_);
    }

    if (!ggml_backend_sched_alloc_graph(sched, gf_)) {
        throw Error("out of memory for a decode step of " + std::to_string(s.T) + " tokens over " + std::to_string(s.n_kv) +
                    " cache cells on " + b.name() + " (lower maxSeqs or nCtx)");
    }
    shape_ = s;
    valid_ = true;
    ++built_;
}

void Decoder::reserve(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, int64_t T, int64_t n_kv,
                      const StepOptions & opt) {
    Shape s;
    s.T = s.n_out = std::max<int64_t>(1, T);
    s.n_kv = std::min(cache.n_cells(), ((std::max<int64_t>(1, n_kv) + kWindowPad - 1) / kWindowPad) * kWindowPad);
    s.set_options(opt);
    build(w, lora, b, cache, s);
    ggml_backend_sched_reset(b.sched());
    if (!ggml_backend_sched_reserve(b.sched(), gf_)) {
        valid_ = false;
        throw Error("out of memory reserving compute buffers for " + std::to_string(s.T) + " sequences over " + std::to_string(s.n_kv) +
                    " cache cells on " + b.name() + " (lower maxSeqs or nCtx)");
    }
    valid_ = false;  // the reserved graph only sized the buffers
}

void Decoder::step(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, const std::vector<StepToken> & batch,
                   const StepOptions & opt, const std::vector<float> & uniforms, StepResult & out) {
    const int64_t n_vocab = w.config().n_vocab;
    Shape s;
    s.T = (int64_t) batch.size();
    if (s.T == 0) throw Error("internal error: empty decode batch");
    for (const StepToken & t : batch) s.n_out += t.logits ? 1 : 0;
    int64_t hi;
    attention_window(cache, batch, kWindowPad, s.lo, hi);
    s.n_kv = hi - s.lo;
    s.set_options(opt);
    if (s.head == HeadMode::temperature && (int64_t) uniforms.size() != s.n_out) {
        throw Error("internal error: " + std::to_string(uniforms.size()) + " uniforms for " + std::to_string(s.n_out) + " rows");
    }
    if (!valid_ || !(s == shape_)) build(w, lora, b, cache, s);

    tok_.resize(s.T);
    posv_.resize(s.T);
    cells_.resize(s.T);
    rows_.clear();
    for (int64_t i = 0; i < s.T; ++i) {
        tok_[i] = batch[i].token;
        posv_[i] = batch[i].pos;
        cells_[i] = batch[i].cell;
        if (batch[i].logits) rows_.push_back((int32_t) i);
    }
    cache.fill_v_index(cells_, v_index_);
    ggml_backend_tensor_set(tokens_, tok_.data(), 0, ggml_nbytes(tokens_));
    ggml_backend_tensor_set(pos_, posv_.data(), 0, ggml_nbytes(pos_));
    ggml_backend_tensor_set(k_idx_, cells_.data(), 0, ggml_nbytes(k_idx_));
    ggml_backend_tensor_set(v_idx_, v_index_.data(), 0, ggml_nbytes(v_idx_));
    if (out_rows_) ggml_backend_tensor_set(out_rows_, rows_.data(), 0, ggml_nbytes(out_rows_));
    if (uniforms_) ggml_backend_tensor_set(uniforms_, uniforms.data(), 0, ggml_nbytes(uniforms_));

    if (s.flash_attn) {
        fill_mask<ggml_fp16_t>(cache, batch, s.lo, s.n_kv, 0xFC00, 0x0000, mask16_);  // f16 -inf, 0
        ggml_backend_tensor_set(mask_, mask16_.data(), 0, ggml_nbytes(mask_));
    } else {
        fill_mask<float>(cache, batch, s.lo, s.n_kv, -std::numeric_limits<float>::infinity(), 0.0f, mask_host_);
        ggml_backend_tensor_set(mask_, mask_host_.data(), 0, ggml_nbytes(mask_));
    }

    if (ggml_backend_sched_graph_compute(b.sched(), gf_) != GGML_STATUS_SUCCESS) {
        valid_ = false;
        throw Error("decode step failed on " + b.name());
    }
    if (s.head != HeadMode::logits) {
        out.ids.resize((size_t) s.n_out);
        out.logprobs.resize((size_t) s.n_out);
        ggml_backend_tensor_get(ids_, out.ids.data(), 0, ggml_nbytes(ids_));
        ggml_backend_tensor_get(logprobs_, out.logprobs.data(), 0, ggml_nbytes(logprobs_));
        return;
    }
    // Only the rows sampling needs cross back to the host.
    out.logits.resize((size_t) (s.n_out * n_vocab));
    ggml_backend_tensor_get(logits_, out.logits.data(), 0, out.logits.size() * sizeof(float));
}

} // namespace rrr
