#include "attn_backward_cuda.h"
#include "attn_layout.h"
#include "block_reduce.cuh"
#include "grid.cuh"

#include <cuda_fp16.h>

#include <cmath>

namespace rrr {

namespace {

constexpr int kRowThreads = 128;

// Between a token-major [hd, H, L, nb] tensor (the graph's layout: a position's heads adjacent)
// and the head-major one (attn_layout.h: a head's positions adjacent, by query blocks), where a
// group's heads of one block form one matrix for cuBLAS. `to_heads` says which way. Each thread
// walks the token-major index, so reads or writes there are contiguous.
__device__ inline void put(float * p, float v) { *p = v; }
__device__ inline void put(__half * p, float v) { *p = __float2half_rn(v); }

// Into f32, or into f16 rounded to nearest.
template <typename To>
__global__ void swap_heads_positions(const float * src, To * dst, int64_t hd, int64_t H, int64_t L, int64_t grp, int64_t Lb, int64_t n, bool to_heads) {
    for (int64_t idx = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; idx < n; idx += (int64_t) gridDim.x * blockDim.x) {
        const int64_t d = idx % hd, r = idx / hd;
        const int64_t h = r % H, i = (r / H) % L, b = r / (H * L);
        const int64_t head = head_major_at(d, h, i, b, hd, H, L, grp, Lb);
        if (to_heads) put(dst + head, src[idx]);
        else put(dst + idx, src[head]);
    }
}

__device__ inline float get(const float * p) { return *p; }
__device__ inline float get(const __half * p) { return __half2float(*p); }

// One block per column of S (a query's scores, scale already applied; query_of_column says
// which): the causal softmax into P (S itself, or its f16 room), zeros past the query's own
// position up to its block's end (keys_of_query), where the products stop.
template <typename TP> __global__ void causal_softmax_kernel(const float * S, TP * P, int64_t L, int64_t grp, int64_t Lb) {
    const int64_t c = blockIdx.x, i = query_of_column(c, L, grp, Lb), keys = keys_of_query(i, Lb);
    const float * col = S + c * L;
    TP * out = P + c * L;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, col[j]);
    mx = block_reduce<true>(mx);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(col[j] - mx);
    const float inv = 1.0f / block_reduce<false>(sum);
    for (int64_t j = threadIdx.x; j < keys; j += blockDim.x) put(out + j, j <= i ? expf(col[j] - mx) * inv : 0.0f);
}

// dS = scale P (dP - Σ_j P dP) per column, the gradient at the raw K·Q, into dS (dP itself, or
// an f16 room), over the same keys.
template <typename TP> __global__ void softmax_grad_kernel(const TP * P, const float * dP, TP * dS, int64_t L, int64_t grp, int64_t Lb, float scale) {
    const int64_t c = blockIdx.x, i = query_of_column(c, L, grp, Lb), keys = keys_of_query(i, Lb);
    const TP * p = P + c * L;
    const float * d = dP + c * L;
    TP * out = dS + c * L;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) acc += get(p + j) * d[j];
    const float D = block_reduce<false>(acc);
    for (int64_t j = threadIdx.x; j < keys; j += blockDim.x) put(out + j, j <= i ? scale * get(p + j) * (d[j] - D) : 0.0f);
}

class CudaOps : public AttnBackwardOps {
public:
    CudaOps(cublasHandle_t handle, cudaStream_t stream, bool tf32)
        : handle_(handle), stream_(stream), compute_(tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) {}

    void swap(const float * src, float * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) override {
        swap_as(src, dst, hd, H, L, nb, grp, Lb, to_heads);
    }

    void swap(const float * src, uint16_t * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) override {
        swap_as(src, (__half *) dst, hd, H, L, nb, grp, Lb, to_heads);
    }

    bool gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float * A, int64_t lda, int64_t sa, const float * B,
              int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) override {
        return batched(ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, sa, B, ldb, sb, C, ldc, sc, batch, compute_);
    }

    bool gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t * A, int64_t lda, int64_t sa, const uint16_t * B,
              int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch) override {
        return batched(ta, tb, m, n, k, alpha, A, CUDA_R_16F, lda, sa, B, ldb, sb, C, ldc, sc, batch, CUBLAS_COMPUTE_32F);
    }

    void causal_softmax(const float * S, float * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) override {
        causal_softmax_kernel<float><<<(unsigned) cols, kRowThreads, 0, stream_>>>(S, P, L, grp, Lb);
    }

    void causal_softmax(const float * S, uint16_t * P, int64_t L, int64_t cols, int64_t grp, int64_t Lb) override {
        causal_softmax_kernel<__half><<<(unsigned) cols, kRowThreads, 0, stream_>>>(S, (__half *) P, L, grp, Lb);
    }

    void softmax_grad(const float * P, const float * dP, float * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) override {
        softmax_grad_kernel<float><<<(unsigned) cols, kRowThreads, 0, stream_>>>(P, dP, dS, L, grp, Lb, scale);
    }

    void softmax_grad(const uint16_t * P, const float * dP, uint16_t * dS, int64_t L, int64_t cols, int64_t grp, int64_t Lb, float scale) override {
        softmax_grad_kernel<__half><<<(unsigned) cols, kRowThreads, 0, stream_>>>((const __half *) P, dP, (__half *) dS, L, grp, Lb, scale);
    }

private:
    template <typename To> void swap_as(const float * src, To * dst, int64_t hd, int64_t H, int64_t L, int64_t nb, int64_t grp, int64_t Lb, bool to_heads) {
        const int64_t n = hd * H * L * nb;
        swap_heads_positions<To><<<grid_blocks(n), kGridThreads, 0, stream_>>>(src, dst, hd, H, L, grp, Lb, n, to_heads);
    }

    // A and B of one type (f32 or f16), C f32.
    bool batched(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const void * A, cudaDataType_t ab, int64_t lda, int64_t sa,
                 const void * B, int64_t ldb, int64_t sb, float * C, int64_t ldc, int64_t sc, int64_t batch, cublasComputeType_t compute) {
        const float beta = 0.0f;
        auto op = [](Trans t) { return t == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T; };
        return cublasGemmStridedBatchedEx(handle_, op(ta), op(tb), (int) m, (int) n, (int) k, &alpha, A, ab, (int) lda, (long long) sa, B, ab,
                                          (int) ldb, (long long) sb, &beta, C, CUDA_R_32F, (int) ldc, (long long) sc, (int) batch, compute,
                                          CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
    }

    cublasHandle_t handle_;
    cudaStream_t stream_;
    cublasComputeType_t compute_;
};

} // namespace

const char * attn_backward_cuda(const AttnBackwardArgs & a, cublasHandle_t handle, cudaStream_t stream) {
    CudaOps ops(handle, stream, a.tf32);
    if (const char * err = attn_backward_steps(a, ops)) return err;
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

} // namespace rrr
