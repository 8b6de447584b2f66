// The key/value cache of batched generation. One pool of cells per layer holds K and V rows;
// every cell remembers its position and the SET of sequences that see it, so a prompt
// prefilled once serves all the samples of its group (the cells are shared, never copied).
// Cell bookkeeping lives on the host; the K/V tensors live in one buffer on the compute
// backend, sized once from n_cells (requested batch × context) and reported in bytes.
#pragma once
#include <cstdint>
#if defined(_MSC_VER)
#include <intrin.h>
#endif
#include <vector>

#include "ggml.h"
#include "ggml-backend.h"
#include "model_config.h"

namespace rrr {

struct KvCacheOptions {
    int64_t n_cells = 0;
    int n_seqs = 1;               // sequence ids are 0 .. n_seqs-1
    ggml_type type = GGML_TYPE_F16;
    // V is stored transposed ([cell] fastest) for the plain attention path, whose V·softmax
    // product contracts over cells; flash attention wants it row-major like K.
    bool v_trans = true;
};

class KvCache {
public:
    KvCache(const ModelConfig & cfg, ggml_backend_t backend, const KvCacheOptions & opt);
    ~KvCache();
    KvCache(const KvCache &) = delete;
    KvCache & operator=(const KvCache &) = delete;

    int64_t n_cells() const { return n_cells_; }
    int n_seqs() const { return n_seqs_; }
    ggml_type type() const { return type_; }
    bool v_trans() const { return v_trans_; }
    size_t bytes() const;
    static size_t bytes_for(const ModelConfig & cfg, int64_t n_cells, ggml_type type);

    // ---- cell bookkeeping (host) ----
    void clear();
    int64_t n_free() const { return n_free_; }
    // First run of `n` contiguous free cells (contiguity keeps a prompt's attention window
    // tight), or -1 when none exists.
    int64_t find_run(int64_t n) const;
    // `n` free cells, one contiguous run when there is one, else the first free ones; throws
    // when fewer than `n` are free.
    std::vector<int64_t> allocate(int64_t n) const;
    void occupy(int64_t cell, int32_t pos, int seq);  // cell seen by `seq` at position `pos`
    void add_seq(int64_t cell, int seq);               // share an occupied cell with one more sequence
    // Drops `seq` from every cell; cells no sequence sees any more become free.
    void seq_remove(int seq);
    int32_t pos(int64_t cell) const { return pos_[cell]; }  // -1: free
    // Calls f(seq) for every sequence that sees `cell`.
    template <typename F>
    void for_each_seq(int64_t cell, F && f) const {
        const uint64_t * w = &seqs_[(size_t) cell * n_words_];
        for (size_t k = 0; k < n_words_; ++k) {
            for (uint64_t bits = w[k]; bits; bits &= bits - 1) f((int) (k * 64 + (size_t) lowest_bit(bits)));
        }
    }
    // Smallest window [lo, hi) of cells that `seq` can see; lo == hi when it sees none.
    void seq_window(int seq, int64_t & lo, int64_t & hi) const;

    // ---- graph pieces ----
    // K of layer il over cells [lo, lo+n), laid out for attention: [head_dim, n, n_kv_head].
    ggml_tensor * k_view(ggml_context * ctx, int64_t il, int64_t lo, int64_t n) const;
    // V over the same cells: [n, head_dim, n_kv_head] when transposed (ready to contract over
    // cells), else [head_dim, n, n_kv_head] like K.
    ggml_tensor * v_view(ggml_context * ctx, int64_t il, int64_t lo, int64_t n) const;
    // Writes this step's k/v [head_dim, n_kv_head, T] into the cells named by the index
    // tensors (I64: T entries for K; for transposed V one entry per element, see v_index).
    ggml_tensor * store_k(ggml_context * ctx, int64_t il, ggml_tensor * k, ggml_tensor * idx) const;
    ggml_tensor * store_v(ggml_context * ctx, int64_t il, ggml_tensor * v, ggml_tensor * idx) const;
    int64_t v_index_len(int64_t n_tokens) const { return v_trans_ ? n_tokens * n_embd_v_ : n_tokens; }
    void fill_v_index(const std::vector<int64_t> & cells, std::vector<int64_t> & out) const;

private:
    static int lowest_bit(uint64_t x) {
#if defined(_MSC_VER)
        unsigned long i;
        _BitScanForward64(&i, x);
        return (int) i;
#else
        return __builtin_ctzll(x);
#endif
    }
    bool has_seq(int64_t cell, int seq) const {
        return (seqs_[(size_t) cell * n_words_ + (size_t) seq / 64] >> (seq % 64)) & 1u;
    }

    int64_t n_cells_;
    int n_seqs_;
    ggml_type type_;
    bool v_trans_;
    int64_t head_dim_, n_head_kv_, n_embd_v_;
    size_t n_words_;
    std::vector<int32_t> pos_;    // -1: free
    std::vector<uint64_t> seqs_;  // n_cells × n_words bitsets
    int64_t n_free_ = 0;

    ggml_context * meta_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
    std::vector<ggml_tensor *> k_, v_;
};

} // namespace rrr
