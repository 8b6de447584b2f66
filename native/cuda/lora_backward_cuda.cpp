#include "lora_backward_cuda.h"
#include "lora_backward.h"

#include <climits>

namespace rrr {

const char * lora_backward_cuda(const ggml_tensor * node, cublasHandle_t handle) {
    for (const LoraGemm & g : lora_back_gemms(node)) {
        if (g.m > INT_MAX || g.n > INT_MAX || g.k > INT_MAX || g.lda > INT_MAX || g.ldb > INT_MAX || g.ldc > INT_MAX) return "lora_backward: a product too large for cuBLAS's int sizes";
        if (cublasSgemm(handle, g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, (int) g.m, (int) g.n, (int) g.k, &g.alpha, g.A,
                        (int) g.lda, g.B, (int) g.ldb, &g.beta, g.C, (int) g.ldc) != CUBLAS_STATUS_SUCCESS) {
            return "lora_backward: cublasSgemm failed";
        }
    }
    return nullptr;
}

} // namespace rrr
