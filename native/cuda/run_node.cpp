#include "run_node.h"
#include "attn_backward.h"
#include "attn_backward_cuda.h"
#include "lora_backward.h"
#include "lora_backward_cuda.h"
#include "lora_merge.h"
#include "lora_merge_cuda.h"
#include "loss_head.h"
#include "loss_head_cuda.h"
#include "norm_backward.h"
#include "norm_backward_cuda.h"
#include "node_gemm_cuda.h"
#include "product16.h"
#include "swiglu_backward.h"
#include "swiglu_backward_cuda.h"
#include "swiglu_forward.h"
#include "swiglu_forward_cuda.h"

namespace rrr {

bool is_node_of_ours(const ggml_tensor * t) {
    return is_attn_backward(t) || is_swiglu_backward(t) || is_lora_merge(t) || is_lora_back(t) || is_swiglu_forward(t) || is_loss_head(t) || is_norm_backward(t) ||
           is_product16(t);
}

const char * run_node_cuda(ggml_tensor * t, cublasHandle_t handle, cudaStream_t stream) {
    if (is_attn_backward(t)) return attn_backward_cuda(attn_backward_args(t), handle, stream);
    if (is_swiglu_backward(t)) return swiglu_backward_cuda(swiglu_backward_args(t), stream);
    if (is_lora_back(t)) return lora_backward_cuda(t, handle);
    if (is_swiglu_forward(t)) return swiglu_forward_cuda(swiglu_forward_args(t), stream);
    if (is_loss_head(t)) return loss_head_cuda(t, handle);
    if (is_norm_backward(t)) return norm_backward_cuda(norm_backward_args(t), stream);
    if (is_lora_merge(t)) return lora_merge_cuda(lora_merge_args(t), stream);
    if (is_product16(t)) return node_gemm_cuda(product16_gemm(t), handle);
    return "not a node of ours";
}

} // namespace rrr
