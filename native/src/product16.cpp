#include "product16.h"
#include "custom_node.h"
#include "errors.h"
#include "gpu_emulation.h"

namespace rrr {

namespace {

void product16_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    node_gemm_part(product16_gemm(dst), ith, nth);
}

} // namespace

ggml_tensor * product16(ggml_context * ctx, ggml_tensor * W, ggml_tensor * x) {
    if (!is16(W->type) || x->type != W->type) throw Error("product16: expected W and x of one 16-bit type (f16 or bf16)");
    if (!ggml_is_contiguous(W) || ggml_n_dims(W) > 2 || ggml_n_dims(x) > 2 || x->ne[0] != W->ne[0]) {
        throw Error("product16: expected contiguous W [n_in, n_out] and x [n_in, T]");
    }
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * args[2] = {W, x};
    return ggml_custom_4d(ctx, W->type, W->ne[1], x->ne[1], 1, 1, args, 2, product16_cpu, GGML_N_TASKS_MAX, nullptr);
}

bool is_product16(const ggml_tensor * t) { return is_custom_node(t, product16_cpu); }

NodeGemm product16_gemm(const ggml_tensor * node) {
    const ggml_tensor * W = node->src[0], * x = node->src[1];
    const int64_t n_in = W->ne[0], n_out = W->ne[1], T = x->ne[1];
    // y [n_out, T] = Wᵀ x: op(A) is W read transposed (its columns are y's rows)
    return NodeGemm{true, false, n_out, T, n_in, 1.0f, {W->data, W->type, n_in}, {x->data, x->type, n_in}, 0.0f, node->data, n_out, W->type, W->type};
}

} // namespace rrr
