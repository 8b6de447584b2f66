#include "attn_backward_cuda.h"

#include <algorithm>
#include <cmath>

namespace rrr {

namespace {

constexpr int kRowThreads = 128;

// Between a token-major [hd, H, L, nb] tensor (the graph's layout: a position's heads adjacent)
// and a head-major [hd, L, H, nb] one (a head's positions adjacent), where one head's rows form
// one matrix for cuBLAS and a group of heads one longer matrix. `to_heads` says which way.
__global__ void swap_heads_positions(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t n, bool to_heads) {
    for (int64_t idx = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; idx < n; idx += (int64_t) gridDim.x * blockDim.x) {
        const int64_t d = idx % hd, r = idx / hd;
        if (to_heads) {
            const int64_t i = r % L, h = (r / L) % H, b = r / (L * H);
            dst[idx] = src[d + hd * (h + H * (i + L * b))];
        } else {
            const int64_t h = r % H, i = (r / H) % L, b = r / (H * L);
            dst[idx] = src[d + hd * (i + L * (h + H * b))];
        }
    }
}

__device__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The block's max or sum, returned to every thread.
template <bool kMax> __device__ float block_reduce(float v) {
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
    v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads(); // an earlier call's readers are done with part and total
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? part[lane] : (kMax ? -INFINITY : 0.0f);
        v = kMax ? warp_max(v) : warp_sum(v);
        if (lane == 0) total = v;
    }
    __syncthreads();
    return total;
}

// One block per column of S ([L_k, L_q, heads, nb]: a query's scores, scale already applied):
// the causal softmax in place, zeros past the query's own position.
__global__ void causal_softmax(float * S, int64_t L) {
    const int64_t c = blockIdx.x, i = c % L;
    float * col = S + c * L;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, col[j]);
    mx = block_reduce<true>(mx);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(col[j] - mx);
    const float inv = 1.0f / block_reduce<false>(sum);
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) col[j] = j <= i ? expf(col[j] - mx) * inv : 0.0f;
}

// dS = scale P (dP - Σ_j P dP) per column, written over dP: the gradient at the raw K·Q.
__global__ void softmax_grad(const float * P, float * dP, int64_t L, float scale) {
    const int64_t c = blockIdx.x, i = c % L;
    const float * p = P + c * L;
    float * d = dP + c * L;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) acc += p[j] * d[j];
    const float D = block_reduce<false>(acc);
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) d[j] = j <= i ? scale * p[j] * (d[j] - D) : 0.0f;
}

void swap(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, bool to_heads, cudaStream_t stream) {
    const int64_t n = hd * H * L * nb;
    const int blocks = (int) std::min<int64_t>((n + 255) / 256, 65535);
    swap_heads_positions<<<blocks, 256, 0, stream>>>(src, dst, hd, H, L, n, to_heads);
}

struct Gemm {
    cublasHandle_t handle;
    cublasComputeType_t compute;
    int batch;
    // C = alpha op(A) op(B), column-major, `batch` times at the given strides.
    cublasStatus_t operator()(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float alpha, const float * A,
                              int64_t lda, int64_t sa, const float * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc) const {
        const float beta = 0.0f;
        return cublasGemmStridedBatchedEx(handle, ta, tb, (int) m, (int) n, (int) k, &alpha, A, CUDA_R_32F, (int) lda, (long long) sa, B,
                                          CUDA_R_32F, (int) ldb, (long long) sb, &beta, C, CUDA_R_32F, (int) ldc, (long long) sc, batch,
                                          compute, CUBLAS_GEMM_DEFAULT);
    }
};

} // namespace

// Per chunk of nb sequences, with p = g + n_head_kv * b numbering the (K/V head, sequence)
// pairs: the query heads of a group are adjacent in the head-major copies, so a group's queries
// are one [hd, grp * L] matrix and each product below is one strided batched call over p, with
// the group's sum over heads inside the product's inner dimension where dK and dV need it.
const char * attn_backward_cuda(const AttnBackwardCudaArgs & a, cublasHandle_t handle, cudaStream_t stream) {
    const int64_t hd = a.hd, nh = a.n_head, nkv = a.n_head_kv, L = a.L, grp = nh / nkv, nbmax = a.scratch_seqs;
    if (nbmax < 1 || !a.scratch) return "attention backward: no work space";
    if (L > (1ll << 30) / std::max<int64_t>(1, grp) || hd * grp * L > (1ll << 31)) return "attention backward: too many positions for cuBLAS's int sizes";
    float * Qh = a.scratch;
    float * Oh = Qh + hd * L * nh * nbmax;
    float * dQh = Oh + hd * L * nh * nbmax;
    float * Kh = dQh + hd * L * nh * nbmax;
    float * Vh = Kh + hd * L * nkv * nbmax;
    float * dKh = Vh + hd * L * nkv * nbmax;
    float * dVh = dKh + hd * L * nkv * nbmax;
    float * S = dVh + hd * L * nkv * nbmax;
    float * dS = S + L * L * nh * nbmax;
    const cublasComputeType_t compute = a.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const cublasOperation_t N = CUBLAS_OP_N, Tr = CUBLAS_OP_T;
    for (int64_t b0 = 0; b0 < a.B; b0 += nbmax) {
        const int64_t nb = std::min(nbmax, a.B - b0), tok0 = b0 * L;
        swap(a.q + hd * nh * tok0, Qh, hd, nh, L, nb, true, stream);
        swap(a.dO + hd * nh * tok0, Oh, hd, nh, L, nb, true, stream);
        swap(a.k + hd * nkv * tok0, Kh, hd, nkv, L, nb, true, stream);
        swap(a.v + hd * nkv * tok0, Vh, hd, nkv, L, nb, true, stream);
        const Gemm gemm{handle, compute, (int) (nkv * nb)};
        const int64_t sq = hd * L * grp, skv = hd * L, ss = L * L * grp; // strides per pair p
        // S = scale Kᵀ Q: [L_k, grp * L_q] per pair
        if (gemm(Tr, N, L, grp * L, hd, a.scale, Kh, hd, skv, Qh, hd, sq, S, L, ss) != CUBLAS_STATUS_SUCCESS) return "attention backward: cuBLAS failed (S)";
        causal_softmax<<<(unsigned) (L * nh * nb), kRowThreads, 0, stream>>>(S, L);
        // dP = Vᵀ dO
        if (gemm(Tr, N, L, grp * L, hd, 1.0f, Vh, hd, skv, Oh, hd, sq, dS, L, ss) != CUBLAS_STATUS_SUCCESS) return "attention backward: cuBLAS failed (dP)";
        softmax_grad<<<(unsigned) (L * nh * nb), kRowThreads, 0, stream>>>(S, dS, L, a.scale);
        // dV = dO Pᵀ and dK = Q dSᵀ: [hd, L_k], summed over the group's queries and heads
        if (gemm(N, Tr, hd, L, grp * L, 1.0f, Oh, hd, sq, S, L, ss, dVh, hd, skv) != CUBLAS_STATUS_SUCCESS) return "attention backward: cuBLAS failed (dV)";
        if (gemm(N, Tr, hd, L, grp * L, 1.0f, Qh, hd, sq, dS, L, ss, dKh, hd, skv) != CUBLAS_STATUS_SUCCESS) return "attention backward: cuBLAS failed (dK)";
        // dQ = K dS: [hd, grp * L_q]
        if (gemm(N, N, hd, grp * L, L, 1.0f, Kh, hd, skv, dS, L, ss, dQh, hd, sq) != CUBLAS_STATUS_SUCCESS) return "attention backward: cuBLAS failed (dQ)";
        swap(dQh, a.dq + hd * nh * tok0, hd, nh, L, nb, false, stream);
        swap(dKh, a.dk + hd * nkv * tok0, hd, nkv, L, nb, false, stream);
        swap(dVh, a.dv + hd * nkv * tok0, hd, nkv, L, nb, false, stream);
    }
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

} // namespace rrr
