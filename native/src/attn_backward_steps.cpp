#include "attn_backward_steps.h"
#include "attn_layout.h"
#include "ggml.h"

#include <algorithm>
#include <cmath>

namespace rrr {

namespace {

int64_t round256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

// The work space's parts, each per sequence (256-byte multiples); a chunk of nb sequences holds
// nb of each, part after part.
struct Parts {
    int64_t q, o, k, v, s, p, ds, dq, dk, dv; // 0: the part is not used
};

Parts parts(int64_t hd, int64_t nh, int64_t nkv, int64_t L, bool half) {
    const int64_t e = half ? 2 : 4; // bytes of the copies by head and of P and dS
    Parts r{};
    r.q = r.o = round256(e * hd * L * nh);
    r.k = r.v = round256(e * hd * L * nkv);
    r.s = round256(4 * L * L * nh);
    r.ds = round256(e * L * L * nh);
    if (half) {
        // f16 probabilities beside the f32 scores; f32 gradients by head beside the f16 copies
        r.p = r.ds;
        r.dq = round256(4 * hd * L * nh);
        r.dk = r.dv = round256(4 * hd * L * nkv);
    }
    return r;
}

} // namespace

int64_t attn_query_blocks(int64_t L) {
    for (int64_t n : {4, 2}) {
        if (L % n == 0 && L / n >= 4) return n;
    }
    return 1;
}

int64_t attn_scratch_bytes_per_seq(int64_t hd, int64_t n_head, int64_t n_head_kv, int64_t L, bool half) {
    const Parts r = parts(hd, n_head, n_head_kv, L, half);
    return r.q + r.o + r.k + r.v + r.s + r.p + r.ds + r.dq + r.dk + r.dv;
}

namespace {

// A chunk's rooms in the work space, operands of type T (f32, or f16 as bits). With f32 the
// probabilities take the scores' room, dP and dS share one, and each gradient by head takes the
// room of an input the products no longer read once it is written (dV: V's, dQ: dO's, dK: K's);
// f16 operands are narrower than the f32 gradients, which get rooms of their own.
template <typename T> struct Rooms {
    T * Q, * O, * K, * V;
    float * S;   // the scores (softmax's input)
    T * P;       // the probabilities
    float * dP;  // their gradient from the product
    T * dS;      // the gradient at the raw scores
    float * dQ, * dK, * dV;
};

// Per chunk of nb sequences, with p = g + n_head_kv * b numbering the (K/V head, sequence)
// pairs: the query heads of a group are adjacent in the head-major copies, so the group's
// queries of one query block are one [hd, grp * Lb] matrix (attn_layout.h), and each product
// below is a strided batched call over p per block, with the group's sum over heads inside the
// product's inner dimension where dK and dV need it. Per block only the keys the block can see
// take part: for query block qb keys [0, (qb + 1) Lb); for key block kb the query blocks from kb.
template <typename T> const char * run_chunks(const AttnBackwardArgs & a, AttnBackwardOps & ops, const Rooms<T> & r) {
    const int64_t hd = a.hd, nh = a.n_head, nkv = a.n_head_kv, L = a.L, grp = nh / nkv, nbmax = a.scratch_seqs;
    const int64_t nblk = a.q_blocks, Lb = L / nblk, C = grp * Lb; // a block's columns in a pair
    const Trans N = Trans::N, Tr = Trans::T;
    for (int64_t b0 = 0; b0 < a.B; b0 += nbmax) {
        const int64_t nb = std::min(nbmax, a.B - b0), tok0 = b0 * L, G = nkv * nb, cols = L * nh * nb;
        const int64_t sq = hd * L * grp, skv = hd * L, ss = L * L * grp; // strides per pair p
        ops.swap(a.q + hd * nh * tok0, r.Q, hd, nh, L, nb, grp, Lb, true);
        ops.swap(a.dO + hd * nh * tok0, r.O, hd, nh, L, nb, grp, Lb, true);
        ops.swap(a.k + hd * nkv * tok0, r.K, hd, nkv, L, nb, 1, L, true);
        ops.swap(a.v + hd * nkv * tok0, r.V, hd, nkv, L, nb, 1, L, true);
        // S = scale Kᵀ Q: per query block, [keys it sees, grp * Lb] per pair
        for (int64_t qb = 0; qb < nblk; ++qb) {
            if (!ops.gemm(Tr, N, (qb + 1) * Lb, C, hd, a.scale, r.K, hd, skv, r.Q + hd * C * qb, hd, sq, r.S + L * C * qb, L, ss, G)) return "attention backward: cuBLAS failed (S)";
        }
        ops.causal_softmax(r.S, r.P, L, cols, grp, Lb);
        // dP = Vᵀ dO, likewise
        for (int64_t qb = 0; qb < nblk; ++qb) {
            if (!ops.gemm(Tr, N, (qb + 1) * Lb, C, hd, 1.0f, r.V, hd, skv, r.O + hd * C * qb, hd, sq, r.dP + L * C * qb, L, ss, G)) return "attention backward: cuBLAS failed (dP)";
        }
        ops.softmax_grad(r.P, r.dP, r.dS, L, cols, grp, Lb, a.scale);
        // dV = dO Pᵀ: per key block [hd, Lb], summed over the group's heads and the query blocks
        // that see it (V read for the last time above)
        for (int64_t kb = 0; kb < nblk; ++kb) {
            if (!ops.gemm(N, Tr, hd, Lb, (nblk - kb) * C, 1.0f, r.O + hd * C * kb, hd, sq, r.P + kb * Lb + L * C * kb, L, ss, r.dV + hd * Lb * kb, hd, skv, G)) {
                return "attention backward: cuBLAS failed (dV)";
            }
        }
        // dQ = K dS: per query block [hd, grp * Lb] (dO read for the last time above)
        for (int64_t qb = 0; qb < nblk; ++qb) {
            if (!ops.gemm(N, N, hd, C, (qb + 1) * Lb, 1.0f, r.K, hd, skv, r.dS + L * C * qb, L, ss, r.dQ + hd * C * qb, hd, sq, G)) return "attention backward: cuBLAS failed (dQ)";
        }
        // dK = Q dSᵀ, summed like dV (K read for the last time above)
        for (int64_t kb = 0; kb < nblk; ++kb) {
            if (!ops.gemm(N, Tr, hd, Lb, (nblk - kb) * C, 1.0f, r.Q + hd * C * kb, hd, sq, r.dS + kb * Lb + L * C * kb, L, ss, r.dK + hd * Lb * kb, hd, skv, G)) {
                return "attention backward: cuBLAS failed (dK)";
            }
        }
        ops.swap(r.dQ, a.dq + hd * nh * tok0, hd, nh, L, nb, grp, Lb, false);
        ops.swap(r.dK, a.dk + hd * nkv * tok0, hd, nkv, L, nb, 1, L, false);
        ops.swap(r.dV, a.dv + hd * nkv * tok0, hd, nkv, L, nb, 1, L, false);
    }
    return nullptr;
}

} // namespace

const char * attn_backward_steps(const AttnBackwardArgs & a, AttnBackwardOps & ops) {
    const int64_t hd = a.hd, nh = a.n_head, nkv = a.n_head_kv, L = a.L, grp = nh / nkv, nbmax = a.scratch_seqs;
    if (nbmax < 1 || !a.scratch) return "attention backward: no work space";
    // cuBLAS takes int sizes and leading dimensions.
    if (grp * L > (1ll << 31) - 1 || hd > (1ll << 31) - 1) return "attention backward: too many positions for cuBLAS's int sizes";
    const Parts r = parts(hd, nh, nkv, L, a.half);
    char * at = (char *) a.scratch;
    auto take = [&](int64_t per_seq) {
        char * p = per_seq ? at : nullptr;
        at += per_seq * nbmax;
        return p;
    };
    char * Qp = take(r.q), * Op = take(r.o), * Kp = take(r.k), * Vp = take(r.v), * Sp = take(r.s), * Pp = take(r.p), * dSp = take(r.ds);
    char * dQp = take(r.dq), * dKp = take(r.dk), * dVp = take(r.dv);
    if (!a.half) {
        using F = float;
        return run_chunks<F>(a, ops, {(F *) Qp, (F *) Op, (F *) Kp, (F *) Vp, (F *) Sp, (F *) Sp, (F *) dSp, (F *) dSp, (F *) Op, (F *) Kp, (F *) Vp});
    }
    using H = uint16_t;
    return run_chunks<H>(a, ops, {(H *) Qp, (H *) Op, (H *) Kp, (H *) Vp, (float *) Sp, (H *) Pp, (float *) Sp, (H *) dSp, (float *) dQp, (float *) dKp, (float *) dVp});
}

// The host's loops, each written once for f32 and f16 operands: f16 numbers (IEEE binary16
// bits) are widened where read and rounded to nearest where written, as the GPU's are.
namespace {

float widen(float v) { return v; }
float widen(uint16_t h) { return ggml_fp16_to_fp32((ggml_fp16_t) h); }
void put(float * p, float v) { *p = v; }
void put(uint16_t * p, float v) { *p = (uint16_t) ggml_fp32_to_fp16(v); }

template <typename To> void host_swap(const float * src, To * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) {
    for (int64_t b = 0; b < nb; ++b) {
        for (int64_t h = 0; h < H; ++h) {
            for (int64_t i = 0; i < L; ++i) {
                const int64_t tok = hd * (h + H * (i + L * b)), head = head_major_at(0, h, i, b, hd, H, L, grp, Lb);
                const float * from = src + (to_heads ? tok : head);
                To * to = dst + (to_heads ? head : tok);
                for (int64_t d = 0; d < hd; ++d) put(to + d, from[d]);
            }
        }
    }
}

template <typename T>
void host_gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const T * A, int64_t lda, int64_t sa, const T * B, int64_t ldb,
               int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) {
    for (int64_t p = 0; p < batch; ++p) {
        const T * Ap = A + p * sa, * Bp = B + p * sb;
        float * Cp = C + p * sc;
        for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < m; ++i) {
                double acc = 0.0;
                for (int64_t l = 0; l < k; ++l) {
                    const float x = widen(ta == Trans::N ? Ap[i + l * lda] : Ap[l + i * lda]);
                    const float y = widen(tb == Trans::N ? Bp[l + j * ldb] : Bp[j + l * ldb]);
                    acc += (double) x * y;
                }
                Cp[i + j * ldc] = (float) (alpha * acc);
            }
        }
    }
}

// P may be S itself (f32): each number is read before it is written.
template <typename TP> void host_softmax(const float * S, TP * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) {
    for (int64_t c = 0; c < cols; ++c) {
        const float * col = S + c * L;
        TP * out = P + c * L;
        const int64_t i = query_of_column(c, L, grp, Lb), keys = keys_of_query(i, Lb);
        float mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, col[j]);
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(col[j] - mx);
        for (int64_t j = 0; j < keys; ++j) put(out + j, j <= i ? (float) (std::exp(col[j] - mx) / sum) : 0.0f);
    }
}

// dS may be dP itself (f32), likewise.
template <typename TP> void host_softmax_grad(const TP * P, const float * dP, TP * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) {
    for (int64_t c = 0; c < cols; ++c) {
        const TP * p = P + c * L;
        const float * d = dP + c * L;
        TP * out = dS + c * L;
        const int64_t i = query_of_column(c, L, grp, Lb), keys = keys_of_query(i, Lb);
        double D = 0.0;
        for (int64_t j = 0; j <= i; ++j) D += (double) widen(p[j]) * d[j];
        for (int64_t j = 0; j < keys; ++j) put(out + j, j <= i ? scale * widen(p[j]) * (d[j] - (float) D) : 0.0f);
    }
}

} // namespace

void HostAttnBackwardOps::swap(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) {
    host_swap(src, dst, hd, H, L, nb, grp, Lb, to_heads);
}

void HostAttnBackwardOps::swap(const float * src, uint16_t * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) {
    host_swap(src, dst, hd, H, L, nb, grp, Lb, to_heads);
}

bool HostAttnBackwardOps::gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float * A, int64_t lda, int64_t sa,
                               const float * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) {
    host_gemm(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, C, ldc, sc, batch);
    return true;
}

bool HostAttnBackwardOps::gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t * A, int64_t lda, int64_t sa,
                               const uint16_t * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) {
    host_gemm(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, C, ldc, sc, batch);
    return true;
}

void HostAttnBackwardOps::causal_softmax(const float * S, float * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) { host_softmax(S, P, L, cols, grp, Lb); }

void HostAttnBackwardOps::causal_softmax(const float * S, uint16_t * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) { host_softmax(S, P, L, cols, grp, Lb); }

void HostAttnBackwardOps::softmax_grad(const float * P, const float * dP, float * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) {
    host_softmax_grad(P, dP, dS, L, cols, grp, Lb, scale);
}

void HostAttnBackwardOps::softmax_grad(const uint16_t * P, const float * dP, uint16_t * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) {
    host_softmax_grad(P, dP, dS, L, cols, grp, Lb, scale);
}

} // namespace rrr
