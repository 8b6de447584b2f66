#include "lora_backward.h"
#include "lora_backward_cuda.h"
#include "node_gemm_cuda.h"

namespace rrr {

const char * lora_backward_cuda(const ggml_tensor * node, cublasHandle_t handle) {
    for (const NodeGemm & g : lora_back_gemms(node)) {
        if (const char * err = node_gemm_cuda(g, handle)) return err;
    }
    return nullptr;
}

} // namespace rrr
