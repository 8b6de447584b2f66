#include "attn_backward_steps.h"

#include <algorithm>
#include <cmath>

namespace rrr {

// Per chunk of nb sequences, with p = g + n_head_kv * b numbering the (K/V head, sequence)
// pairs: the query heads of a group are adjacent in the head-major copies, so a group's queries
// are one [hd, grp * L] matrix and each product below is one strided batched call over p, with
// the group's sum over heads inside the product's inner dimension where dK and dV need it.
const char * attn_backward_steps(const AttnBackwardArgs & a, AttnBackwardOps & ops) {
    const int64_t hd = a.hd, nh = a.n_head, nkv = a.n_head_kv, L = a.L, grp = nh / nkv, nbmax = a.scratch_seqs;
    if (nbmax < 1 || !a.scratch) return "attention backward: no work space";
    // cuBLAS takes int sizes and leading dimensions.
    if (grp * L > (1ll << 31) - 1 || hd > (1ll << 31) - 1) return "attention backward: too many positions for cuBLAS's int sizes";
    float * Qh = a.scratch;
    float * Oh = Qh + hd * L * nh * nbmax;
    float * Kh = Oh + hd * L * nh * nbmax;
    float * Vh = Kh + hd * L * nkv * nbmax;
    float * S = Vh + hd * L * nkv * nbmax;
    float * dS = S + L * L * nh * nbmax;
    // Each gradient over an input the products below no longer read.
    float * dVh = Vh, * dQh = Oh, * dKh = Kh;
    const Trans N = Trans::N, Tr = Trans::T;
    for (int64_t b0 = 0; b0 < a.B; b0 += nbmax) {
        const int64_t nb = std::min(nbmax, a.B - b0), tok0 = b0 * L, G = nkv * nb, cols = L * nh * nb;
        ops.swap(a.q + hd * nh * tok0, Qh, hd, nh, L, nb, true);
        ops.swap(a.dO + hd * nh * tok0, Oh, hd, nh, L, nb, true);
        ops.swap(a.k + hd * nkv * tok0, Kh, hd, nkv, L, nb, true);
        ops.swap(a.v + hd * nkv * tok0, Vh, hd, nkv, L, nb, true);
        const int64_t sq = hd * L * grp, skv = hd * L, ss = L * L * grp; // strides per pair p
        // S = scale Kᵀ Q: [L_k, grp * L_q] per pair
        if (!ops.gemm(Tr, N, L, grp * L, hd, a.scale, Kh, hd, skv, Qh, hd, sq, S, L, ss, G)) return "attention backward: cuBLAS failed (S)";
        ops.causal_softmax(S, L, cols);
        // dP = Vᵀ dO
        if (!ops.gemm(Tr, N, L, grp * L, hd, 1.0f, Vh, hd, skv, Oh, hd, sq, dS, L, ss, G)) return "attention backward: cuBLAS failed (dP)";
        ops.softmax_grad(S, dS, L, cols, a.scale);
        // dV = dO Pᵀ: [hd, L_k], summed over the group's queries and heads (V read for the last time above)
        if (!ops.gemm(N, Tr, hd, L, grp * L, 1.0f, Oh, hd, sq, S, L, ss, dVh, hd, skv, G)) return "attention backward: cuBLAS failed (dV)";
        // dQ = K dS: [hd, grp * L_q] (dO read for the last time above)
        if (!ops.gemm(N, N, hd, grp * L, L, 1.0f, Kh, hd, skv, dS, L, ss, dQh, hd, sq, G)) return "attention backward: cuBLAS failed (dQ)";
        // dK = Q dSᵀ, summed like dV (K read for the last time above)
        if (!ops.gemm(N, Tr, hd, L, grp * L, 1.0f, Qh, hd, sq, dS, L, ss, dKh, hd, skv, G)) return "attention backward: cuBLAS failed (dK)";
        ops.swap(dQh, a.dq + hd * nh * tok0, hd, nh, L, nb, false);
        ops.swap(dKh, a.dk + hd * nkv * tok0, hd, nkv, L, nb, false);
        ops.swap(dVh, a.dv + hd * nkv * tok0, hd, nkv, L, nb, false);
    }
    return nullptr;
}

void HostAttnBackwardOps::swap(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, bool to_heads) {
    for (int64_t b = 0; b < nb; ++b) {
        for (int64_t h = 0; h < H; ++h) {
            for (int64_t i = 0; i < L; ++i) {
                const int64_t tok = hd * (h + H * (i + L * b)), head = hd * (i + L * (h + H * b));
                std::copy_n(src + (to_heads ? tok : head), hd, dst + (to_heads ? head : tok));
            }
        }
    }
}

bool HostAttnBackwardOps::gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float * A, int64_t lda, int64_t sa,
                               const float * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) {
    for (int64_t p = 0; p < batch; ++p) {
        const float * Ap = A + p * sa, * Bp = B + p * sb;
        float * Cp = C + p * sc;
        for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < m; ++i) {
                double acc = 0.0;
                for (int64_t l = 0; l < k; ++l) {
                    const float x = ta == Trans::N ? Ap[i + l * lda] : Ap[l + i * lda];
                    const float y = tb == Trans::N ? Bp[l + j * ldb] : Bp[j + l * ldb];
                    acc += (double) x * y;
                }
                Cp[i + j * ldc] = (float) (alpha * acc);
            }
        }
    }
    return true;
}

void HostAttnBackwardOps::causal_softmax(float * S, int64_t L, int64_t cols) {
    for (int64_t c = 0; c < cols; ++c) {
        float * col = S + c * L;
        const int64_t i = c % L;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, col[j]);
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(col[j] - mx);
        for (int64_t j = 0; j < L; ++j) col[j] = j <= i ? (float) (std::exp(col[j] - mx) / sum) : 0.0f;
    }
}

void HostAttnBackwardOps::softmax_grad(const float * P, float * dP, int64_t L, int64_t cols, float scale) {
    for (int64_t c = 0; c < cols; ++c) {
        const float * p = P + c * L;
        float * d = dP + c * L;
        const int64_t i = c % L;
        double D = 0.0;
        for (int64_t j = 0; j <= i; ++j) D += (double) p[j] * d[j];
        for (int64_t j = 0; j < L; ++j) d[j] = j <= i ? scale * p[j] * (d[j] - (float) D) : 0.0f;
    }
}

} // namespace rrr
