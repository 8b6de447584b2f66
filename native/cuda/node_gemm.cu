#include "grid.cuh"
#include "node_gemm_cuda.h"
#include "round16.cuh"

#include <climits>

namespace rrr {

namespace {

// A stored f32 matrix (rows x cols, leading dimension ld) into a packed 16-bit copy (ld = rows).
template <typename C> __global__ void pack16(const float * src, int64_t rows, int64_t cols, int64_t ld, uint16_t * dst) {
    const int64_t n = rows * cols;
    for (int64_t idx = blockIdx.x * (int64_t) blockDim.x + threadIdx.x; idx < n; idx += (int64_t) gridDim.x * blockDim.x) {
        const int64_t i = idx % rows, j = idx / rows;
        dst[idx] = round16(src[i + j * ld], (C *) nullptr);
    }
}

cudaDataType_t cuda_type(ggml_type t) { return t == GGML_TYPE_F16 ? CUDA_R_16F : t == GGML_TYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The operand as the product reads it: a packed copy in its type where it is stored in another.
bool prepared(const NodeGemm & g, const GemmOperand & o, int64_t rows, int64_t cols, cudaStream_t stream, const void ** p, int64_t * ld) {
    *p = o.p;
    *ld = o.ld;
    if (g.in == GGML_TYPE_F32 || o.type == g.in) return true;
    if (o.type != GGML_TYPE_F32 || !o.work) return false;
    const int blocks = grid_blocks(rows * cols);
    if (g.in == GGML_TYPE_BF16) pack16<__nv_bfloat16><<<blocks, kGridThreads, 0, stream>>>((const float *) o.p, rows, cols, o.ld, (uint16_t *) o.work);
    else pack16<__half><<<blocks, kGridThreads, 0, stream>>>((const float *) o.p, rows, cols, o.ld, (uint16_t *) o.work);
    *p = o.work;
    *ld = rows;
    return cudaGetLastError() == cudaSuccess;
}

} // namespace

const char * node_gemm_cuda(const NodeGemm & g, cublasHandle_t handle) {
    cudaStream_t stream = nullptr;
    if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS) return "no cuBLAS stream";
    if (g.m > INT_MAX || g.n > INT_MAX || g.k > INT_MAX || g.A.ld > INT_MAX || g.B.ld > INT_MAX || g.ldc > INT_MAX) return "a product too large for cuBLAS's int sizes";
    const void * A = nullptr, * B = nullptr;
    int64_t lda = 0, ldb = 0;
    if (!prepared(g, g.A, stored_rows(g, true), stored_cols(g, true), stream, &A, &lda) || !prepared(g, g.B, stored_rows(g, false), stored_cols(g, false), stream, &B, &ldb)) {
        return "could not round an operand to 16 bits";
    }
    // f32 products as cuBLAS's plain f32 GEMM (ggml-cuda's OUT_PROD's), 16-bit ones with f32 sums,
    // written in f32 or (rounded) in their own type
    const cudaDataType_t t = cuda_type(g.in);
    if (cublasGemmEx(handle, g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, (int) g.m, (int) g.n, (int) g.k, &g.alpha, A, t, (int) lda, B, t,
                     (int) ldb, &g.beta, g.C, cuda_type(g.out), (int) g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
        return "cublasGemmEx failed";
    }
    return nullptr;
}

} // namespace rrr
