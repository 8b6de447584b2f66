#include "kv_cache.h"
#include "errors.h"

#include <algorithm>

namespace rrr {

size_t KvCache::bytes_for(const ModelConfig & c, int64_t n_cells, ggml_type type) {
    const int64_t n_embd_kv = c.head_dim * c.n_head_kv;
    return 2 * (size_t) c.n_layer * ggml_row_size(type, n_embd_kv * n_cells);
}

KvCache::KvCache(const ModelConfig & c, ggml_backend_t backend, const KvCacheOptions & opt)
    : n_cells_(opt.n_cells), n_seqs_(opt.n_seqs), type_(opt.type), v_trans_(opt.v_trans),
      head_dim_(c.head_dim), n_head_kv_(c.n_head_kv), n_embd_v_(c.head_dim * c.n_head_kv),
      n_words_(((size_t) opt.n_seqs + 63) / 64) {
    if (n_cells_ <= 0) throw Error("KV cache: cell count must be positive (got " + std::to_string(n_cells_) + ")");
    if (n_seqs_ <= 0) throw Error("KV cache: sequence count must be positive (got " + std::to_string(n_seqs_) + ")");
    pos_.assign((size_t) n_cells_, -1);
    seqs_.assign((size_t) n_cells_ * n_words_, 0);
    n_free_ = n_cells_;

    const size_t n_tensors = 2 * (size_t) c.n_layer;
    ggml_init_params ip{ggml_tensor_overhead() * n_tensors, nullptr, true};
    meta_ = ggml_init(ip);
    if (!meta_) throw Error("out of host memory creating the KV cache");
    for (int64_t il = 0; il < c.n_layer; ++il) {
        k_.push_back(ggml_new_tensor_2d(meta_, type_, n_embd_v_, n_cells_));
        v_.push_back(v_trans_ ? ggml_new_tensor_2d(meta_, type_, n_cells_, n_embd_v_)
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
    n_free_ = n_cells_;
}

int64_t KvCache::find_run(int64_t n) const {
    int64_t run = 0;
    for (int64_t c = 0; c < n_cells_; ++c) {
        run = pos_[c] < 0 ? run + 1 : 0;
        if (run == n) return c - n + 1;
    }
    return -1;
}

std::vector<int64_t> KvCache::allocate(int64_t n) const {
    if (n > n_free_) {
        throw Error("KV cache full: " + std::to_string(n) + " cells wanted, " + std::to_string(n_free_) + " of " +
                    std::to_string(n_cells_) + " free");
    }
    std::vector<int64_t> out;
    out.reserve((size_t) n);
    const int64_t run = find_run(n);
    if (run >= 0) {
        for (int64_t i = 0; i < n; ++i) out.push_back(run + i);
        return out;
    }
    for (int64_t c = 0; c < n_cells_ && (int64_t) out.size() < n; ++c) {
        if (pos_[c] < 0) out.push_back(c);
    }
    return out;
}

void KvCache::occupy(int64_t cell, int32_t pos, int seq) {
    if (pos_[cell] >= 0) throw Error("internal error: KV cell " + std::to_string(cell) + " is already occupied");
    pos_[cell] = pos;
    --n_free_;
    add_seq(cell, seq);
}

void KvCache::add_seq(int64_t cell, int seq) {
    seqs_[(size_t) cell * n_words_ + (size_t) seq / 64] |= uint64_t(1) << (seq % 64);
}

void KvCache::seq_remove(int seq) {
    const size_t w = (size_t) seq / 64;
    const uint64_t bit = uint64_t(1) << (seq % 64);
    for (int64_t c = 0; c < n_cells_; ++c) {
        uint64_t * words = &seqs_[(size_t) c * n_words_];
        if (!(words[w] & bit)) continue;
        words[w] &= ~bit;
        if (std::all_of(words, words + n_words_, [](uint64_t x) { return x == 0; })) {
            pos_[c] = -1;
            ++n_free_;
        }
    }
}

void KvCache::seq_window(int seq, int64_t & lo, int64_t & hi) const {
    lo = n_cells_;
    hi = 0;
    for (int64_t c = 0; c < n_cells_; ++c) {
        if (pos_[c] >= 0 && has_seq(c, seq)) {
            lo = std::min(lo, c);
            hi = c + 1;
        }
    }
    if (hi == 0) lo = 0;
}

ggml_tensor * KvCache::k_view(ggml_context * ctx, int64_t il, int64_t lo, int64_t n) const {
    ggml_tensor * k = k_[il];
    return ggml_view_3d(ctx, k, head_dim_, n, n_head_kv_, k->nb[1], ggml_row_size(type_, head_dim_), lo * k->nb[1]);
}

ggml_tensor * KvCache::v_view(ggml_context * ctx, int64_t il, int64_t lo, int64_t n) const {
    ggml_tensor * v = v_[il];
    if (v_trans_) {
        return ggml_view_3d(ctx, v, n, head_dim_, n_head_kv_, v->nb[1], head_dim_ * v->nb[1], ggml_row_size(type_, lo));
    }
    return ggml_view_3d(ctx, v, head_dim_, n, n_head_kv_, v->nb[1], ggml_row_size(type_, head_dim_), lo * v->nb[1]);
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
        for (int64_t e = 0; e < n_embd_v_; ++e) out[t * n_embd_v_ + e] = e * n_cells_ + cells[t];
    }
}

} // namespace rrr
