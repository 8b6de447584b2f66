#include "block_reduce.cuh"
#include "loss_head.h"
#include "loss_head_cuda.h"
#include "loss_head_math.h"
#include "node_gemm_cuda.h"
#include "round16.cuh"

#include <cmath>

namespace rrr {

namespace {

constexpr int kRowThreads = 512;

// A running softmax denominator: the sum of exp(x - m) over the numbers seen, m their max.
struct MaxSum {
    float m, s;
};

__device__ inline MaxSum joined(MaxSum a, MaxSum b) {
    if (a.m == -INFINITY) return b;
    if (b.m == -INFINITY) return a;
    const float m = fmaxf(a.m, b.m);
    return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ inline MaxSum shfl_xor(MaxSum v, int o) { return {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)}; }

struct JoinOp {
    __device__ MaxSum operator()(MaxSum a, MaxSum b) const { return joined(a, b); }
};

struct RowInputs {
    const int32_t * targets;
    const float * neg_w, * old_lp, * kl_m, * ref_lp;
    float * lp;
    float clip_eps;
    bool has_old, kl, backward;
};

__device__ inline void put(float * p, float v) { *p = v; }
template <typename C> __device__ inline void put(uint16_t * p, float v) { *p = round16(v, (C *) nullptr); }

// One block per row of a chunk's logits (rows + i * V): the row's log-prob, then (backward) its
// gradient at the logits, coef (onehot(t) - p): the target's part into dh (the chunk's [E, n])
// in f32, -coef p over the logits in G's type, W's (f32, or 16 bits where number j takes the
// bytes of f32 number j / 2, which the block has read by then: each sweep reads its numbers,
// waits for the whole block, then writes). loss_head.cpp's host_row says why apart.
__device__ inline float get(const float * p) { return *p; }
template <typename C> __device__ inline float get(const uint16_t * p) { return (float) *(const C *) p; }

template <typename G, typename C> __global__ void head_rows(float * rows, int64_t V, int64_t r0, const G * W, int64_t E, float * dh, RowInputs in) {
    const int64_t i = blockIdx.x, r = r0 + i;
    float * row = rows + i * V;
    MaxSum ms{-INFINITY, 0.0f};
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const float x = row[j];
        if (x > ms.m) {
            ms.s = ms.s * expf(ms.m - x) + 1.0f;
            ms.m = x;
        } else {
            ms.s += expf(x - ms.m);
        }
    }
    ms = block_combine(ms, JoinOp{}, MaxSum{-INFINITY, 0.0f});
    // max and log Σ kept apart (see loss_head.cpp's LogSumExp)
    const float ls = logf(ms.s);
    const int64_t t = in.targets[r];
    const float lp = (row[t] - ms.m) - ls;
    if (threadIdx.x == 0) in.lp[r] = lp;
    if (!in.backward) return;
    const float coef = loss_head_coef(lp, in.neg_w[r], in.has_old, in.has_old ? in.old_lp[r] : 0.0f, in.clip_eps, in.kl, in.kl ? in.kl_m[r] : 0.0f,
                                      in.kl ? in.ref_lp[r] : 0.0f);
    // the target's part, coef W[t], in f32 where the product adds the rest (beta 1)
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        if constexpr (sizeof(G) == 4) dh[i * E + e] = coef * get(W + t * E + e);
        else dh[i * E + e] = coef * get<C>(W + t * E + e);
    }
    G * out = (G *) row;
    for (int64_t j0 = 0; j0 < V; j0 += blockDim.x) {
        const int64_t j = j0 + threadIdx.x;
        const float x = j < V ? row[j] : 0.0f;
        __syncthreads();
        if (j < V) {
            const float g = -coef * expf((x - ms.m) - ls);
            if constexpr (sizeof(G) == 4) put(out + j, g);
            else put<C>(out + j, g);
        }
    }
}

} // namespace

const char * loss_head_cuda(ggml_tensor * node, cublasHandle_t handle) {
    cudaStream_t stream = nullptr;
    if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS) return "loss_head: no cuBLAS stream";
    const LossHeadArgs a = loss_head_args(node);
    if (a.chunks.empty()) return "loss_head: the node has no work space (a GPU's needs one)";
    const RowInputs in{a.targets, a.neg_w, a.old_lp, a.kl_m, a.ref_lp, a.lp, a.spec.clip_eps, a.spec.has_old, a.spec.kl, a.spec.backward};
    for (const LossHeadChunk & c : a.chunks) {
        if (const char * err = node_gemm_cuda(c.logits, handle)) return err;
        const unsigned blocks = (unsigned) c.n;
        const void * W = c.logits.A.p;
        if (c.g_type == GGML_TYPE_F16) head_rows<uint16_t, __half><<<blocks, kRowThreads, 0, stream>>>(c.rows, a.V, c.r0, (const uint16_t *) W, a.E, (float *) c.dh.C, in);
        else if (c.g_type == GGML_TYPE_BF16) head_rows<uint16_t, __nv_bfloat16><<<blocks, kRowThreads, 0, stream>>>(c.rows, a.V, c.r0, (const uint16_t *) W, a.E, (float *) c.dh.C, in);
        else head_rows<float, float><<<blocks, kRowThreads, 0, stream>>>(c.rows, a.V, c.r0, (const float *) W, a.E, (float *) c.dh.C, in);
        if (c.dh.m > 0) {
            if (const char * err = node_gemm_cuda(c.dh, handle)) return err;
        }
    }
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

} // namespace rrr
