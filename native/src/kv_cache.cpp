#include "kv_cache.h"
#include "errors.h"

#include <algorithm>

namespace rrr {

size_t KvCache::bytes_for(const ModelConfig & c, int64_t n_cells, ggml_type type) {
    const int64_t n_embd_kv = c.head_dim * c.n_head_kv;
    return 2 * (size_t) c.n_layer * ggml_row_size(type, n_embd_kv * n_cells);
}

KvCache::KvCache(const ModelConfig & c, ggml_backend_t backend, const KvCacheOptions & opt)
    : n_cells_(opt.n_cells), n_seqs_(opt.n_seqs), n_streams_(opt.n_streams), stream_cells_(opt.n_cells), type_(opt.type),
      v_trans_(opt.v_trans), head_dim_(c.head_dim), n_head_kv_(c.n_head_kv), n_embd_v_(c.head_dim * c.n_head_kv),
      n_words_(((size_t) opt.n_seqs + 63) / 64) {
    if (n_cells_ <= 0) throw Error("KV cache: cell count must be positive (got " + std::to_string(n_cells_) + ")");
    if (n_seqs_ <= 0) throw Error("KV cache: sequence count must be positive (got " + std::to_string(n_seqs_) + ")");
    if (n_streams_ != 1 && n_streams_ != n_seqs_) {
        throw Error("KV cache: " + std::to_string(n_streams_) + " streams for " + std::to_string(n_seqs_) +
                    " sequences (expected 1, or one per sequence)");
    }
    if (n_cells_ % n_streams_ != 0) {
        throw Error("KV cache: " + std::to_string(n_cells_) + " cells do not split into " + std::to_string(n_streams_) + " equal streams");
    }
    stream_cells_ = n_cells_ / n_streams_;
    pos_.assign((size_t) n_cells_, -1);
    seqs_.assign((size_t) n_cells_ * n_words_, 0);
    stream_hi_.assign((size_t) n_streams_, 0);

    const size_t n_tensors = 2 * (size_t) c.n_layer;
    ggml_init_params ip{ggml_tensor_overhead() * n_tensors, nullptr, true};
    meta_ = ggml_init(ip);
    if (!meta_) throw Error("out of host memory creating the KV cache");
    for (int64_t il = 0; il < c.n_layer; ++il) {
        k_.push_back(ggml_new_tensor_2d(meta_, type_, n_embd_v_, n_cells_));
        // Transposed V keeps each stream's block whole: row (stream, element) holds that
        // element for every cell of the stream.
        v_.push_back(v_trans_ ? ggml_new_tensor_2d(meta_, type_, stream_cells_, n_embd_v_ * n_streams_)
                              : ggml_new_tensor_2d(meta_, type_, n_embd_v_, n_cells_));
    }
    buffer_ = ggml_backend_alloc_ctx_tensors(meta_, backend);
    if (!buffer_) {
        ggml_free(meta_);
        throw Error("out of memory for a KV cache of " + std::to_string(n_cells_) + " cells (" +
                    std::to_string(bytes_for(c, n_cells_, type_) >> 20) + " MiB) on " + ggml_backend_name(backend) +
                    "; lower maxSeqs or nCtx");
    }
    // Cells outside a sequence's view are masked, but masked garbage can still be NaN, and
    // 0 × NaN poisons the V·softmax product: start from zeros.
    ggml_backend_buffer_clear(buffer_, 0);
}

KvCache::~KvCache() {
    if (buffer_) ggml_backend_buffer_free(buffer_);
    if (meta_) ggml_free(meta_);
}

size_t KvCache::bytes() const { return ggml_backend_buffer_get_size(buffer_); }

void KvCache::clear() {
    std::fill(pos_.begin(), pos_.end(), -1);
    std::fill(seqs_.begin(), seqs_.end(), 0);
    std::fill(stream_hi_.begin(), stream_hi_.end(), 0);
}

std::vector<int64_t> KvCache::allocate(int64_t n, int stream) const {
    const int64_t begin = (int64_t) stream * stream_cells_, end = begin + stream_cells_;
    std::vector<int64_t> out;
    out.reserve((size_t) std::max<int64_t>(n, 0));
    int64_t run = 0, free_in_range = 0;
    for (int64_t c = begin; c < end; ++c) {
        const bool is_free = pos_[c] < 0;
        free_in_range += is_free ? 1 : 0;
        run = is_free ? run + 1 : 0;
        if (run == n) {
            for (int64_t i = 0; i < n; ++i) out.push_back(c - n + 1 + i);
            return out;
        }
    }
    if (n > free_in_range) {
        throw Error("KV cache full: " + std::to_string(n) + " cells wanted, " + std::to_string(free_in_range) + " of " +
                    std::to_string(end - begin) + " free" + (n_streams_ > 1 ? " in stream " + std::to_string(stream) : std::string()));
    }
    for (int64_t c = begin; c < end && (int64_t) out.size() < n; ++c) {
        if (pos_[c] < 0) out.push_back(c);
    }
    return out;
}

void KvCache::check_stream(int64_t cell, int seq) const {
    if (n_streams_ > 1 && stream_of(cell) != seq) {
        throw Error("internal error: KV cell " + std::to_string(cell) + " is in stream " + std::to_string(stream_of(cell)) +
                    ", not in sequence " + std::to_string(seq) + "'s");
    }
}

void KvCache::occupy(int64_t cell, int32_t pos, int seq) {
    if (pos_[cell] >= 0) throw Error("internal error: KV cell " + std::to_string(cell) + " is already occupied");
    check_stream(cell, seq);
    pos_[cell] = pos;
    int64_t & hi = stream_hi_[(size_t) stream_of(cell)];
    hi = std::max(hi, cell % stream_cells_ + 1);
    add_seq(cell, seq);
}

void KvCache::add_seq(int64_t cell, int seq) {
    check_stream(cell, seq);
    seqs_[(size_t) cell * n_words_ + (size_t) seq / 64] |= uint64_t(1) << (seq % 64);
}

void KvCache::recount_stream_used(int stream) {
    const int64_t begin = (int64_t) stream * stream_cells_;
    int64_t & hi = stream_hi_[(size_t) stream];
    while (hi > 0 && pos_[begin + hi - 1] < 0) --hi;
}

void KvCache::seq_remove(int seq) {
    const size_t w = (size_t) seq / 64;
    const uint64_t bit = uint64_t(1) << (seq % 64);
    for (int64_t c = range_begin(seq), end = range_end(seq); c < end; ++c) {
        uint64_t * words = &seqs_[(size_t) c * n_words_];
        if (!(words[w] & bit)) continue;
        words[w] &= ~bit;
        if (std::all_of(words, words + n_words_, [](uint64_t x) { return x == 0; })) {
            pos_[c] = -1;
        }
    }
    for (int s = 0; s < n_streams_; ++s) {
        if (n_streams_ == 1 || s == seq) recount_stream_used(s);
    }
}

void KvCache::seq_window(int seq, int64_t & lo, int64_t & hi) const {
    lo = n_cells_;
    hi = 0;
    for (int64_t c = range_begin(seq), end = range_end(seq); c < end; ++c) {
        if (pos_[c] >= 0 && sees(c, seq)) {
            lo = std::min(lo, c);
            hi = c + 1;
        }
    }
    if (hi == 0) lo = 0;
}

ggml_tensor * KvCache::row_major_view(ggml_context * ctx, ggml_tensor * t, int s0, int64_t n_streams, int64_t lo, int64_t n) const {
    const size_t stream_bytes = (size_t) stream_cells_ * t->nb[1];
    return ggml_view_4d(ctx, t, head_dim_, n, n_head_kv_, n_streams, t->nb[1], ggml_row_size(type_, head_dim_), stream_bytes,
                        (size_t) s0 * stream_bytes + (size_t) lo * t->nb[1]);
}

ggml_tensor * KvCache::k_view(ggml_context * ctx, int64_t il, int s0, int64_t n_streams, int64_t lo, int64_t n) const {
    return row_major_view(ctx, k_[il], s0, n_streams, lo, n);
}

ggml_tensor * KvCache::v_view(ggml_context * ctx, int64_t il, int s0, int64_t n_streams, int64_t lo, int64_t n) const {
    ggml_tensor * v = v_[il];
    if (!v_trans_) return row_major_view(ctx, v, s0, n_streams, lo, n);
    const size_t stream_bytes = (size_t) n_embd_v_ * v->nb[1];
    return ggml_view_4d(ctx, v, n, head_dim_, n_head_kv_, n_streams, v->nb[1], head_dim_ * v->nb[1], stream_bytes,
                        (size_t) s0 * stream_bytes + ggml_row_size(type_, lo));
}

void KvCache::copy_prefix(ggml_context * ctx, ggml_cgraph * gf, int64_t n, ggml_tensor * src, ggml_tensor * dst, ggml_tensor * v_src,
                          ggml_tensor * v_dst) const {
    // A stream's first n cells are one row of a [n × row, n_streams] view (cells of a stream
    // are adjacent), so the whole copy is one gather and one scatter per tensor.
    auto by_stream = [&](ggml_tensor * t) {
        const size_t row = t->nb[1];
        return ggml_view_2d(ctx, t, n * t->ne[0], n_streams_, (size_t) stream_cells_ * row, 0);
    };
    for (size_t il = 0; il < k_.size(); ++il) {
        ggml_tensor * k = by_stream(k_[il]);
        ggml_build_forward_expand(gf, ggml_set_rows(ctx, k, ggml_get_rows(ctx, k, src), dst));
        if (!v_trans_) {
            ggml_tensor * v = by_stream(v_[il]);
            ggml_build_forward_expand(gf, ggml_set_rows(ctx, v, ggml_get_rows(ctx, v, src), dst));
            continue;
        }
        // Transposed: row (stream, element) starts with the element of the stream's first cells.
        ggml_tensor * v = ggml_view_2d(ctx, v_[il], n, v_[il]->ne[1], v_[il]->nb[1], 0);
        ggml_build_forward_expand(gf, ggml_set_rows(ctx, v, ggml_get_rows(ctx, v, v_src), v_dst));
    }
}

void KvCache::fill_fork_v_index(const std::vector<int> & src, const std::vector<int> & dst, std::vector<int32_t> & v_src,
                                std::vector<int64_t> & v_dst) const {
    v_src.clear();
    v_dst.clear();
    for (size_t i = 0; i < src.size(); ++i) {
        for (int64_t e = 0; e < n_embd_v_; ++e) {
            v_src.push_back((int32_t) ((int64_t) src[i] * n_embd_v_ + e));
            v_dst.push_back((int64_t) dst[i] * n_embd_v_ + e);
        }
    }
}

ggml_tensor * KvCache::store_k(ggml_context * ctx, int64_t il, ggml_tensor * k, ggml_tensor * idx) const {
    ggml_tensor * rows = ggml_is_contiguous(k) ? ggml_reshape_2d(ctx, k, n_embd_v_, k->ne[2]) : ggml_cont_2d(ctx, k, n_embd_v_, k->ne[2]);
    return ggml_set_rows(ctx, k_[il], rows, idx);
}

ggml_tensor * KvCache::store_v(ggml_context * ctx, int64_t il, ggml_tensor * v, ggml_tensor * idx) const {
    const int64_t T = v->ne[2];
    ggml_tensor * rows = ggml_is_contiguous(v) ? ggml_reshape_2d(ctx, v, n_embd_v_, T) : ggml_cont_2d(ctx, v, n_embd_v_, T);
    if (!v_trans_) return ggml_set_rows(ctx, v_[il], rows, idx);
    // Transposed: every element is its own one-value row, placed by fill_v_index.
    ggml_tensor * dst = ggml_reshape_2d(ctx, v_[il], 1, ggml_nelements(v_[il]));
    return ggml_set_rows(ctx, dst, ggml_reshape_2d(ctx, rows, 1, n_embd_v_ * T), idx);
}

void KvCache::fill_v_index(const std::vector<int64_t> & cells, std::vector<int64_t> & out) const {
    if (!v_trans_) {
        out = cells;
        return;
    }
    out.resize(cells.size() * (size_t) n_embd_v_);
    for (size_t t = 0; t < cells.size(); ++t) {
        const int64_t stream = cells[t] / stream_cells_, local = cells[t] % stream_cells_;
        int64_t * o = &out[t * n_embd_v_];
        for (int64_t e = 0; e < n_embd_v_; ++e) o[e] = (stream * n_embd_v_ + e) * stream_cells_ + local;
    }
}

} // namespace rrr
