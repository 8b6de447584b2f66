#include "swiglu_forward.h"
#include "custom_node.h"
#include "errors.h"
#include "swiglu_backward_math.h"

#include <algorithm>

namespace rrr {

namespace {

// Each thread takes one run of the numbers, 64 at a time.
void swiglu_forward_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    const SwigluForwardArgs a = swiglu_forward_args(dst);
    const int64_t blocks = (a.n + 63) / 64, per = (blocks + nth - 1) / nth;
    const int64_t lo = std::min(a.n, ith * per * 64), hi = std::min(a.n, (ith + 1) * per * 64);
    for (int64_t i = lo; i < hi; ++i) {
        const float v = swiglu_value(a.g[i], a.u[i]);
        if (a.bf16) ((ggml_bf16_t *) a.out)[i] = ggml_fp32_to_bf16(v);
        else ((ggml_fp16_t *) a.out)[i] = ggml_fp32_to_fp16(v);
    }
}

} // namespace

ggml_tensor * swiglu_forward(ggml_context * ctx, ggml_tensor * g, ggml_tensor * u, ggml_type type) {
    if (type != GGML_TYPE_F16 && type != GGML_TYPE_BF16) throw Error("swiglu_forward: writes f16 or bf16");
    if (!ggml_are_same_shape(g, u) || g->ne[2] != 1 || g->ne[3] != 1) throw Error("swiglu_forward: expected two [n, T] tensors of one shape");
    ggml_tensor * args[2] = {g, u};
    for (ggml_tensor *& t : args) {
        if (t->type != GGML_TYPE_F32) throw Error("swiglu_forward: expected f32 inputs");
        if (!ggml_is_contiguous(t)) t = ggml_cont(ctx, t);
    }
    return ggml_custom_4d(ctx, type, g->ne[0], g->ne[1], 1, 1, args, 2, swiglu_forward_cpu, GGML_N_TASKS_MAX, nullptr);
}

bool is_swiglu_forward(const ggml_tensor * t) { return is_custom_node(t, swiglu_forward_cpu); }

SwigluForwardArgs swiglu_forward_args(ggml_tensor * t) {
    SwigluForwardArgs a;
    a.g = (const float *) t->src[0]->data;
    a.u = (const float *) t->src[1]->data;
    a.out = t->data;
    a.bf16 = t->type == GGML_TYPE_BF16;
    a.n = t->ne[0] * t->ne[1];
    return a;
}

} // namespace rrr
