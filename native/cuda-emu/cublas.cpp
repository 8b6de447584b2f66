// cuBLAS's GEMMs as plain loops for builds without CUDA (include/cublas_v2.h). Sums are double,
// so that a difference from the CPU's own loops is the kernels', not the sums'; a 16-bit C is
// rounded to nearest even.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <vector>

struct rrr_emu_cublas {
    cudaStream_t stream = nullptr;
};

namespace {

double load(const void * p, cudaDataType_t t, long long idx) {
    switch (t) {
        case CUDA_R_16F: return rrr_emu::f16_to_f32(((const uint16_t *) p)[idx]);
        case CUDA_R_16BF: return rrr_emu::bf16_to_f32(((const uint16_t *) p)[idx]);
        default: return ((const float *) p)[idx];
    }
}

void store(void * p, cudaDataType_t t, long long idx, float v) {
    switch (t) {
        case CUDA_R_16F: ((uint16_t *) p)[idx] = rrr_emu::f32_to_f16(v); break;
        case CUDA_R_16BF: ((uint16_t *) p)[idx] = rrr_emu::f32_to_bf16(v); break;
        default: ((float *) p)[idx] = v;
    }
}

// An f32 operand as TF32 tensor cores read it: 10 bits of mantissa, rounded to nearest.
double tf32(double v) {
    float f = (float) v;
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

bool known(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void * alpha, const void * A, cudaDataType_t at, int lda,
                    long long sa, const void * B, cudaDataType_t bt, int ldb, long long sb, const void * beta, void * C, cudaDataType_t ct, int ldc,
                    long long sc, int batch, cublasComputeType_t compute) {
    if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    // the stored operands' rows: op(A) is m x k, op(B) k x n, C m x n
    const int a_rows = ta == CUBLAS_OP_N ? m : k, b_rows = tb == CUBLAS_OP_N ? k : n;
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    // C in f32, or in the operands' own 16-bit type
    if (!known(at) || at != bt || (ct != CUDA_R_32F && ct != at)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (compute == CUBLAS_COMPUTE_32F_FAST_TF32 && at != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    const bool round_tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    const float al = *(const float *) alpha, be = *(const float *) beta;
    // op(A)'s rows and op(B)'s columns read once into contiguous runs over k, as the sums read them
    std::vector<double> a((size_t) m * (size_t) k), bb((size_t) n * (size_t) k);
    const auto value = [&](const void * p, cudaDataType_t t, long long idx) { return round_tf32 ? tf32(load(p, t, idx)) : load(p, t, idx); };
    for (int b = 0; b < batch; ++b) {
        for (int i = 0; i < m; ++i) {
            for (int p = 0; p < k; ++p) a[(size_t) i * k + p] = value(A, at, (long long) b * sa + (ta == CUBLAS_OP_N ? i + (long long) p * lda : p + (long long) i * lda));
        }
        for (int j = 0; j < n; ++j) {
            for (int p = 0; p < k; ++p) bb[(size_t) j * k + p] = value(B, bt, (long long) b * sb + (tb == CUBLAS_OP_N ? p + (long long) j * ldb : j + (long long) p * ldb));
        }
        const long long c0 = (long long) b * sc;
        for (int j = 0; j < n; ++j) {
            const double * y = bb.data() + (size_t) j * k;
            for (int i = 0; i < m; ++i) {
                const double * x = a.data() + (size_t) i * k;
                double s = 0.0;
                for (int p = 0; p < k; ++p) s += x[p] * y[p];
                const long long ci = c0 + i + (long long) j * ldc;
                // beta 0 does not read C: what was there, NaN included, is overwritten
                store(C, ct, ci, (float) (al * s + (be == 0.0f ? 0.0 : (double) be * load(C, ct, ci))));
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace

cublasStatus_t cublasCreate(cublasHandle_t * handle) {
    *handle = new rrr_emu_cublas;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t * stream) {
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void * alpha, const void * A,
                            cudaDataType_t a_type, int lda, const void * B, cudaDataType_t b_type, int ldb, const void * beta, void * C, cudaDataType_t c_type,
                            int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
    return gemm(ta, tb, m, n, k, alpha, A, a_type, lda, 0, B, b_type, ldb, 0, beta, C, c_type, ldc, 0, 1, compute);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void * alpha,
                                          const void * A, cudaDataType_t a_type, int lda, long long stride_a, const void * B, cudaDataType_t b_type, int ldb,
                                          long long stride_b, const void * beta, void * C, cudaDataType_t c_type, int ldc, long long stride_c, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
    return gemm(ta, tb, m, n, k, alpha, A, a_type, lda, stride_a, B, b_type, ldb, stride_b, beta, C, c_type, ldc, stride_c, batch, compute);
}
