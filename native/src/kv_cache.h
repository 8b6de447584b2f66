// The key/value cache of batched generation. One pool of cells per layer holds K and V rows;
// every cell remembers its position and the SET of sequences that see it. Cell bookkeeping
// lives on the host; the K/V tensors live in one buffer on the compute backend, sized once
// from n_cells (requested batch × context) and reported in bytes.
//
// Two layouts. Unified (one stream): a prompt prefilled once is shared by all samples of its
// group (cells seen by several sequences), and a decode step attends over one window of cells
// that holds every sequence of the batch, masked per row. Streams: the cells are cut into
// equal blocks, block s private to sequence s; a prompt is prefilled in its first sample's
// block and copied into the others, and a decode step attends block by block (a 4-D batch),
// so each query reads its own sequence's cells only. GPU flash attention cannot skip masked
// cells inside a window, so at 64 sequences the unified window makes each query read ~32x more
// cells than it sees; libllama's default (non-unified) cache is laid out the same way.
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
    // 1: unified. n_seqs: one block of n_cells / n_seqs cells per sequence (stream s belongs to
    // sequence s).
    int n_streams = 1;
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
    int n_streams() const { return n_streams_; }
    int64_t stream_cells() const { return stream_cells_; }
    int stream_of(int64_t cell) const { return (int) (cell / stream_cells_); }
    // One past the highest occupied cell of `stream`, counted from the stream's first cell.
    int64_t stream_used(int stream) const { return stream_hi_[(size_t) stream]; }
    ggml_type type() const { return type_; }
    bool v_trans() const { return v_trans_; }
    size_t bytes() const;
    static size_t bytes_for(const ModelConfig & cfg, int64_t n_cells, ggml_type type);

    // ---- cell bookkeeping (host) ----
    void clear();
    // `n` free cells of `stream` (unified: stream 0, the whole cache), one contiguous run when
    // there is one (contiguity keeps a prompt's attention window tight), else the first free
    // ones; throws when fewer than `n` are free.
    std::vector<int64_t> allocate(int64_t n, int stream = 0) const;
    // Cell seen by `seq` at position `pos`; with streams, only cells of stream `seq`.
    void occupy(int64_t cell, int32_t pos, int seq);
    void add_seq(int64_t cell, int seq);               // share an occupied cell with one more sequence
    bool sees(int64_t cell, int seq) const {
        return (seqs_[(size_t) cell * n_words_ + (size_t) seq / 64] >> (seq % 64)) & 1u;
    }
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
    // K of layer il over cells [lo, lo+n) of each of streams [s0, s0+n_streams) (lo counted
    // from a stream's first cell), laid out for attention as a 4-D batch over the streams:
    // [head_dim, n, n_kv_head, n_streams]. One stream is a window of cells.
    ggml_tensor * k_view(ggml_context * ctx, int64_t il, int s0, int64_t n_streams, int64_t lo, int64_t n) const;
    // V over the same cells: [n, head_dim, n_kv_head, n_streams] when transposed (ready to
    // contract over cells), else [head_dim, n, n_kv_head, n_streams] like K.
    ggml_tensor * v_view(ggml_context * ctx, int64_t il, int s0, int64_t n_streams, int64_t lo, int64_t n) const;
    // Copies the first n cells of stream src[i] into stream dst[i] for every i, all layers,
    // as graph nodes: src/dst hold the stream ids (I32, I64); a transposed V needs its own
    // row indices v_src/v_dst from fill_fork_v_index (nullptr otherwise: V then uses src/dst).
    void copy_prefix(ggml_context * ctx, ggml_cgraph * gf, int64_t n, ggml_tensor * src, ggml_tensor * dst, ggml_tensor * v_src,
                     ggml_tensor * v_dst) const;
    // One row per (stream, V element) of a transposed V.
    int64_t fork_v_index_len(int64_t n_pairs) const { return n_pairs * n_embd_v_; }
    void fill_fork_v_index(const std::vector<int> & src, const std::vector<int> & dst, std::vector<int32_t> & v_src,
                           std::vector<int64_t> & v_dst) const;
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
    // Cells [begin, end) a sequence may use: its own stream, or the whole cache when unified.
    int64_t range_begin(int seq) const { return n_streams_ > 1 ? (int64_t) seq * stream_cells_ : 0; }
    int64_t range_end(int seq) const { return n_streams_ > 1 ? range_begin(seq) + stream_cells_ : n_cells_; }
    ggml_tensor * row_major_view(ggml_context * ctx, ggml_tensor * t, int s0, int64_t n_streams, int64_t lo, int64_t n) const;
    void check_stream(int64_t cell, int seq) const;
    void recount_stream_used(int stream);

    int64_t n_cells_;
    int n_seqs_;
    int n_streams_;
    int64_t stream_cells_;
    ggml_type type_;
    bool v_trans_;
    int64_t head_dim_, n_head_kv_, n_embd_v_;
    size_t n_words_;
    std::vector<int32_t> pos_;    // -1: free
    std::vector<uint64_t> seqs_;  // n_cells × n_words bitsets
    std::vector<int64_t> stream_hi_;

    ggml_context * meta_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
    std::vector<ggml_tensor *> k_, v_;
};

} // namespace rrr
