// cuBLAS's GEMMs for builds without CUDA (see cuda_runtime.h here), as plain loops
// (native/cuda-emu/cublas.cpp) that refuse what cuBLAS refuses: leading dimensions shorter than
// the stored rows, operands of two types (or a C of a third), TF32 sums over 16-bit operands.
#pragma once
#include "cuda_runtime.h"

typedef struct rrr_emu_cublas * cublasHandle_t;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };

cublasStatus_t cublasCreate(cublasHandle_t * handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t * stream);
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void * alpha, const void * A,
                            cudaDataType_t a_type, int lda, const void * B, cudaDataType_t b_type, int ldb, const void * beta, void * C, cudaDataType_t c_type,
                            int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void * alpha,
                                          const void * A, cudaDataType_t a_type, int lda, long long stride_a, const void * B, cudaDataType_t b_type, int ldb,
                                          long long stride_b, const void * beta, void * C, cudaDataType_t c_type, int ldc, long long stride_c, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo);
