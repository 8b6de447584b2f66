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

int64_t pad_window(int64_t n, int64_t pad, int64_t limit) { return std::min(limit, ((std::max<int64_t>(n, 1) + pad - 1) / pad) * pad); }

ggml_tensor * new_input(ggml_context * ctx, ggml_type type, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) {
    ggml_tensor * t = ggml_new_tensor_4d(ctx, type, ne0, ne1, ne2, ne3);
    ggml_set_input(t);
    return t;
}

} // namespace

// Picks the attention layout of a batch. Window: the cells every sequence of the batch sees,
// one range inside one stream, padded so that consecutive steps keep one shape (and their
// graph) and GPU kernels get whole tiles (CUDA's flash attention works in strides of 256
// cells); padding cells are masked out. Streams: each stream of the range is a slot holding
// its tokens' queries (one in decode, a prompt's in prefill, padded to the fullest slot), every
// stream read up to the highest cell any of them uses, padded alike.
void Decoder::plan(const KvCache & cache, const std::vector<StepToken> & batch, Shape & s) {
    const int64_t sc = cache.stream_cells();
    int first = cache.stream_of(batch[0].cell), last = first;
    bool one_stream = true;
    for (const StepToken & t : batch) {
        const int st = cache.stream_of(t.cell);
        one_stream = one_stream && st == first;
        first = std::min(first, st);
        last = std::max(last, st);
    }
    if (one_stream) {
        std::vector<char> seen((size_t) cache.n_seqs(), 0);
        int64_t lo = cache.n_cells(), hi = 0;
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
        const int64_t base = (int64_t) first * sc;
        if (lo < base || hi > base + sc) throw Error("internal error: a sequence sees cells outside its stream");
        lo -= base;
        hi -= base;
        lo -= lo % kWindowPad;  // aligned starts let a growing window keep its start
        s.n_kv = pad_window(hi - lo, kWindowPad, sc);
        s.lo = std::min(lo, sc - s.n_kv);
        s.s0 = first;
        s.n_slot = 0;
        s.gather = false;
        return;
    }
    // Slot k reads stream first + k and holds per_slot query rows: the stream's tokens in batch
    // order, then padding. slot_rows_host_[k * per_slot + j] is the batch row of its j-th
    // token (-1: padding); row_slots_host_[i] is the place of batch row i.
    const int64_t n_slot = last - first + 1;
    std::vector<int64_t> & count = slot_count_;
    count.assign((size_t) n_slot, 0);
    for (const StepToken & t : batch) ++count[(size_t) (cache.stream_of(t.cell) - first)];
    const int64_t per_slot = *std::max_element(count.begin(), count.end());
    slot_rows_host_.assign((size_t) (n_slot * per_slot), -1);
    row_slots_host_.resize(batch.size());
    std::fill(count.begin(), count.end(), 0);
    int64_t used = 0;
    s.gather = (int64_t) batch.size() != n_slot * per_slot;
    for (size_t i = 0; i < batch.size(); ++i) {
        const int st = cache.stream_of(batch[i].cell);
        const int64_t k = st - first;
        const int64_t place = k * per_slot + count[(size_t) k]++;
        slot_rows_host_[(size_t) place] = (int32_t) i;
        row_slots_host_[i] = (int32_t) place;
        s.gather = s.gather || place != (int64_t) i;
        used = std::max(used, cache.stream_used(st));
    }
    s.s0 = first;
    s.n_slot = n_slot;
    s.per_slot = per_slot;
    s.lo = 0;
    s.n_kv = pad_window(used, kWindowPad, sc);
}

// Window mode: row i of the mask opens the cells batch[i]'s sequence sees at or before its
// position. Walking cells and their (few) sequences touches each cell once; asking every
// (row, cell) pair would be T × n_kv lookups, a millisecond per step at 64 sequences over 16k
// cells. Streams mode: one row per slot over its own stream; a slot without a token (a
// finished sequence between live ones) opens one cell so that its discarded row stays finite.
template <typename T>
void Decoder::fill_mask(const KvCache & cache, const std::vector<StepToken> & batch, const Shape & s, T closed, T open,
                        std::vector<T> & mask) {
    const int64_t n_kv = s.n_kv, sc = cache.stream_cells();
    if (s.n_slot > 0) {
        const int64_t n_place = s.n_slot * s.per_slot;
        mask.assign((size_t) (n_kv * n_place), closed);
        for (int64_t q = 0; q < n_place; ++q) {
            const int32_t r = slot_rows_host_[(size_t) q];
            const int64_t k = q / s.per_slot, base = (s.s0 + k) * sc;
            T * row = &mask[(size_t) (q * n_kv)];
            if (r < 0) {
                row[0] = open;
                continue;
            }
            const StepToken & t = batch[(size_t) r];
            // Cells past the stream's highest occupied one are free: they stay closed.
            for (int64_t j = 0, used = std::min(n_kv, cache.stream_used((int) (s.s0 + k))); j < used; ++j) {
                const int32_t p = cache.pos(base + j);
                if (p >= 0 && p <= t.pos && cache.sees(base + j, t.seq)) row[j] = open;
            }
        }
        return;
    }
    const int64_t n_rows = (int64_t) batch.size(), lo = (int64_t) s.s0 * sc + s.lo;
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
    tokens_ = new_input(ctx, GGML_TYPE_I32, s.T);
    pos_ = new_input(ctx, GGML_TYPE_I32, s.T);
    k_idx_ = new_input(ctx, GGML_TYPE_I64, s.T);
    v_idx_ = new_input(ctx, GGML_TYPE_I64, cache.v_index_len(s.T));
    const int64_t n_slot = s.n_slot > 0 ? s.n_slot : 1, per_slot = s.n_slot > 0 ? s.per_slot : s.T;
    mask_ = new_input(ctx, s.flash_attn ? GGML_TYPE_F16 : GGML_TYPE_F32, s.n_kv, per_slot, 1, n_slot);
    out_rows_ = s.n_out < s.T ? new_input(ctx, GGML_TYPE_I32, s.n_out) : nullptr;
    slot_rows_ = s.gather ? new_input(ctx, GGML_TYPE_I32, s.n_slot * s.per_slot) : nullptr;
    row_slots_ = s.gather ? new_input(ctx, GGML_TYPE_I32, s.T) : nullptr;

    const float kq_scale = 1.0f / std::sqrt((float) c.head_dim);
    TransformerInputs in{tokens_, pos_, out_rows_};
    auto attend = [&](ggml_context * c0, int64_t il, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) -> ggml_tensor * {
        // The stores are expanded into the graph first so they run before the reads below.
        ggml_build_forward_expand(gf_, cache.store_k(c0, il, k, k_idx_));
        ggml_build_forward_expand(gf_, cache.store_v(c0, il, v, v_idx_));
        const int64_t n_embd_q = c.head_dim * c.n_head;
        // Streams mode puts each query in its stream's slot (the slice of the 4-D batch that
        // reads that stream's cells): [head_dim, n_head, per_slot, n_slot]. Padding places
        // gather any row; their outputs are never gathered back.
        if (s.gather) q = ggml_get_rows(c0, ggml_reshape_2d(c0, q, n_embd_q, s.T), slot_rows_);
        q = ggml_reshape_4d(c0, q, c.head_dim, c.n_head, per_slot, n_slot);
        ggml_tensor * Q = ggml_permute(c0, q, 0, 2, 1, 3); // [head_dim, per_slot, n_head, n_slot]
        ggml_tensor * K = cache.k_view(c0, il, s.s0, n_slot, s.lo, s.n_kv);
        ggml_tensor * V = cache.v_view(c0, il, s.s0, n_slot, s.lo, s.n_kv);
        ggml_tensor * o;
        if (s.flash_attn) {
            if (K->type == GGML_TYPE_F32) K = ggml_cast(c0, K, GGML_TYPE_F16);
            if (V->type == GGML_TYPE_F32) V = ggml_cast(c0, V, GGML_TYPE_F16);
            o = ggml_flash_attn_ext(c0, Q, K, V, mask_, kq_scale, 0.0f, 0.0f);  // [head_dim, n_head, per_slot, n_slot]
            ggml_flash_attn_ext_set_prec(o, GGML_PREC_F32);
            o = ggml_reshape_2d(c0, o, n_embd_q, per_slot * n_slot);
        } else {
            ggml_tensor * kq = ggml_mul_mat(c0, K, Q); // [n_kv, per_slot, n_head, n_slot]
            ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
            kq = ggml_soft_max_ext(c0, kq, mask_, kq_scale, 0.0f);
            ggml_tensor * kqv = ggml_mul_mat(c0, V, kq); // [head_dim, per_slot, n_head, n_slot]
            o = ggml_cont_2d(c0, ggml_permute(c0, kqv, 0, 2, 1, 3), n_embd_q, per_slot * n_slot);
        }
        return s.gather ? ggml_get_rows(c0, o, row_slots_) : o;  // [n_embd_q, T] in batch order
    };
    logits_ = build_transformer(ctx, w, lora, in, attend);
    uniforms_ = ids_ = logprobs_ = nullptr;
    if (s.head == HeadMode::logits) {
        ggml_set_output(logits_);
        ggml_build_forward_expand(gf_, logits_);
    } else {
        if (s.head == HeadMode::temperature) uniforms_ = new_input(ctx, GGML_TYPE_F32, 1, s.n_out);
        const SampleHead h = build_sample_head(ctx, logits_, s.head, s.temperature, uniforms_);
        ids_ = h.ids;
        logprobs_ = h.logprobs;
        ggml_set_output(ids_);
        ggml_set_output(logprobs_);
        ggml_build_forward_expand(gf_, ids_);
        ggml_build_forward_expand(gf_, logprobs_);
    }

    const int host_inputs = host_inputs_of(gf_);
    if (!ggml_backend_sched_alloc_graph(sched, gf_)) {
        throw Error("out of memory for a decode step of " + std::to_string(s.T) + " tokens over " + std::to_string(s.n_kv) +
                    " cache cells on " + b.name() + " (lower maxSeqs or nCtx)");
    }
    placement_.merge(placement_of(sched, gf_, host_inputs));
    shape_ = s;
    valid_ = true;
}

void Decoder::reserve(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, int64_t T, int64_t n_kv,
                      const StepOptions & opt) {
    Shape s;
    s.T = s.n_out = std::max<int64_t>(1, T);
    s.n_kv = pad_window(n_kv, kWindowPad, cache.stream_cells());
    if (cache.n_streams() > 1 && s.T > 1) {  // the largest streams step gathers its slots
        s.n_slot = std::min<int64_t>(cache.n_streams(), s.T);
        s.gather = true;
    }
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

void Decoder::copy_prefix(Backends & b, KvCache & cache, int64_t n, const std::vector<int> & src, const std::vector<int> & dst) {
    if (src.empty()) return;
    if (src.size() != dst.size()) throw Error("internal error: stream copy with unmatched sources and destinations");
    ggml_backend_sched_t sched = b.sched();
    ggml_backend_sched_reset(sched);
    valid_ = false;
    ggml_reset(ctx_);
    gf_ = ggml_new_graph_custom(ctx_, kGraphNodes, false);
    const int64_t m = (int64_t) src.size();
    ggml_tensor * k_src = new_input(ctx_, GGML_TYPE_I32, m), * k_dst = new_input(ctx_, GGML_TYPE_I64, m);
    ggml_tensor * v_src = nullptr, * v_dst = nullptr;
    if (cache.v_trans()) {
        v_src = new_input(ctx_, GGML_TYPE_I32, cache.fork_v_index_len(m));
        v_dst = new_input(ctx_, GGML_TYPE_I64, cache.fork_v_index_len(m));
    }
    cache.copy_prefix(ctx_, gf_, n, k_src, k_dst, v_src, v_dst);
    const int host_inputs = host_inputs_of(gf_);
    if (!ggml_backend_sched_alloc_graph(sched, gf_)) {
        throw Error("out of memory copying a " + std::to_string(n) + "-token prompt into " + std::to_string(m) + " KV streams on " + b.name());
    }
    placement_.merge(placement_of(sched, gf_, host_inputs));
    k_src_.assign(src.begin(), src.end());
    k_dst_.assign(dst.begin(), dst.end());
    ggml_backend_tensor_set(k_src, k_src_.data(), 0, ggml_nbytes(k_src));
    ggml_backend_tensor_set(k_dst, k_dst_.data(), 0, ggml_nbytes(k_dst));
    if (v_src) {
        cache.fill_fork_v_index(src, dst, v_src_, v_dst_);
        ggml_backend_tensor_set(v_src, v_src_.data(), 0, ggml_nbytes(v_src));
        ggml_backend_tensor_set(v_dst, v_dst_.data(), 0, ggml_nbytes(v_dst));
    }
    const ggml_status st = ggml_backend_sched_graph_compute(sched, gf_);
    ggml_backend_sched_reset(sched);
    if (st != GGML_STATUS_SUCCESS) throw Error("copying a prompt into KV streams failed on " + b.name());
}

void Decoder::step(const ModelWeights & w, const LoraView & lora, Backends & b, KvCache & cache, const std::vector<StepToken> & batch,
                   const StepOptions & opt, const std::vector<float> & uniforms, StepResult & out) {
    const int64_t n_vocab = w.config().n_vocab;
    Shape s;
    s.T = (int64_t) batch.size();
    if (s.T == 0) throw Error("internal error: empty decode batch");
    for (const StepToken & t : batch) s.n_out += t.logits ? 1 : 0;
    s.set_options(opt);
    plan(cache, batch, s);
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
    if (s.gather) {
        // A padding place gathers row 0: any finite query does, its output is never read.
        std::vector<int32_t> rows(slot_rows_host_);
        for (int32_t & r : rows) r = std::max(r, 0);
        ggml_backend_tensor_set(slot_rows_, rows.data(), 0, ggml_nbytes(slot_rows_));
        ggml_backend_tensor_set(row_slots_, row_slots_host_.data(), 0, ggml_nbytes(row_slots_));
    }
    ggml_backend_tensor_set(tokens_, tok_.data(), 0, ggml_nbytes(tokens_));
    ggml_backend_tensor_set(pos_, posv_.data(), 0, ggml_nbytes(pos_));
    ggml_backend_tensor_set(k_idx_, cells_.data(), 0, ggml_nbytes(k_idx_));
    ggml_backend_tensor_set(v_idx_, v_index_.data(), 0, ggml_nbytes(v_idx_));
    if (out_rows_) ggml_backend_tensor_set(out_rows_, rows_.data(), 0, ggml_nbytes(out_rows_));
    if (uniforms_) ggml_backend_tensor_set(uniforms_, uniforms.data(), 0, ggml_nbytes(uniforms_));

    if (s.flash_attn) {
        fill_mask<ggml_fp16_t>(cache, batch, s, 0xFC00, 0x0000, mask16_);  // f16 -inf, 0
        ggml_backend_tensor_set(mask_, mask16_.data(), 0, ggml_nbytes(mask_));
    } else {
        fill_mask<float>(cache, batch, s, -std::numeric_limits<float>::infinity(), 0.0f, mask_host_);
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

bool flash_attn_supported(ggml_backend_t backend, const ModelConfig & c, ggml_type kv_type) {
    ggml_init_params ip{ggml_tensor_overhead() * 16, nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) return false;
    bool ok = true;
    for (int64_t n_q : {int64_t{1}, int64_t{64}}) {
        ggml_tensor * q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, c.head_dim, n_q, c.n_head, 1);
        ggml_tensor * k = ggml_new_tensor_4d(ctx, kv_type, c.head_dim, 256, c.n_head_kv, 1);
        ggml_tensor * v = ggml_new_tensor_4d(ctx, kv_type, c.head_dim, 256, c.n_head_kv, 1);
        ggml_tensor * mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, 256, n_q, 1, 1);
        ggml_tensor * o = ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0f / std::sqrt((float) c.head_dim), 0.0f, 0.0f);
        ggml_flash_attn_ext_set_prec(o, GGML_PREC_F32);
        ok = ok && ggml_backend_supports_op(backend, o);
    }
    ggml_free(ctx);
    return ok;
}

} // namespace rrr
