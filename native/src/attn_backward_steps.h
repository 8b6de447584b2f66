// The GPU's way through the attention backward node (attn_backward.h): per chunk of sequences,
// copies by head, five strided batched products and two column kernels, written once against
// the operations it needs, so the CUDA build binds them to cuBLAS and kernels
// (native/cuda/attn_backward.cu) and the CPU to plain loops (HostAttnBackwardOps), which lets
// a machine without a GPU run the same sequence of strides and layouts and check it.
#pragma once
#include <cstdint>

namespace rrr {

struct AttnBackwardArgs {
    const float * q = nullptr, * k = nullptr, * v = nullptr, * dO = nullptr; // [hd, heads, T]
    float * dq = nullptr, * dk = nullptr, * dv = nullptr;                      // the same layouts
    void * scratch = nullptr; // scratch_seqs sequences' worth (attn_scratch_bytes_per_seq)
    int64_t hd = 0, n_head = 0, n_head_kv = 0, L = 0, B = 0, scratch_seqs = 0;
    float scale = 1.0f;
    bool tf32 = false;
    // The products read f16 copies of Q, K, V and dO and f16 probabilities and their gradient,
    // summing in f32; scores, dP and the gradients stay f32 (attn_backward.h).
    bool half = false;
    // Query blocks (attn_layout.h; attn_query_blocks): the products skip the (key block, query
    // block) pairs the causal mask zeroes whole.
    int64_t q_blocks = 1;
};

// How many query blocks the steps take at L positions: 4 or 2 where they divide L into blocks
// of at least 4 positions, else 1. The [L, L] work is then (n + 1) / (2 n) of the whole.
int64_t attn_query_blocks(int64_t L);

// Bytes of work space the steps take per sequence of L positions: Q, dO, K and V by head
// (f32, or f16 with `half`, where dQ, dK and dV then get f32 rooms of their own), and per query
// head the [L, L] scores and probabilities and their gradients (f32; with `half` scores f32,
// probabilities and their gradient f16). Each part is a multiple of 256 bytes, so that every
// part of a chunk of sequences starts aligned for the products.
int64_t attn_scratch_bytes_per_seq(int64_t hd, int64_t n_head, int64_t n_head_kv, int64_t L, bool half);

enum class Trans { N, T };

// Each operation for f32 operands, and for f16 ones (IEEE binary16, as bits) where
// AttnBackwardArgs::half says: f16 numbers are widened where read, summed in f32, and rounded to
// nearest where written.
class AttnBackwardOps {
public:
    virtual ~AttnBackwardOps() = default;
    // Between token-major [hd, H, L, nb] (a position's heads adjacent, the graph's layout) and
    // head-major (attn_layout.h: groups of grp heads, query blocks of Lb positions); `to_heads`
    // says which way.
    virtual void swap(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) = 0;
    virtual void swap(const float * src, uint16_t * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) = 0;
    // C = alpha op(A) op(B), column-major, `batch` times at strides sa, sb, sc, into f32; false on failure.
    virtual bool gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float * A, int64_t lda, int64_t sa,
                      const float * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) = 0;
    virtual bool gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t * A, int64_t lda, int64_t sa,
                      const uint16_t * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) = 0;
    // Per column c of `cols` columns of L of the scores S (its query: query_of_column): softmax
    // over keys <= query, zeros after it up to its block's end (keys_of_query), into P (which
    // may be S itself).
    virtual void causal_softmax(const float * S, float * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) = 0;
    virtual void causal_softmax(const float * S, uint16_t * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) = 0;
    // dS = scale P (dP - Σ_j P dP) per column, likewise (dS may be dP itself).
    virtual void softmax_grad(const float * P, const float * dP, float * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) = 0;
    virtual void softmax_grad(const uint16_t * P, const float * dP, uint16_t * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) = 0;
};

// Runs the node through `ops`. Returns nullptr, or what failed.
const char * attn_backward_steps(const AttnBackwardArgs & a, AttnBackwardOps & ops);

// The operations as plain single-threaded loops on the host.
class HostAttnBackwardOps : public AttnBackwardOps {
public:
    void swap(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) override;
    void swap(const float * src, uint16_t * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) override;
    bool gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float * A, int64_t lda, int64_t sa, const float * B,
              int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) override;
    bool gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t * A, int64_t lda, int64_t sa,
              const uint16_t * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) override;
    void causal_softmax(const float * S, float * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) override;
    void causal_softmax(const float * S, uint16_t * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) override;
    void softmax_grad(const float * P, const float * dP, float * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) override;
    void softmax_grad(const uint16_t * P, const float * dP, uint16_t * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) override;
};

} // namespace rrr
