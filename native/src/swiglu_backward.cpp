#include "swiglu_backward.h"
#include "custom_node.h"
#include "errors.h"
#include "swiglu_backward_math.h"

#include <algorithm>

namespace rrr {

namespace {

// Each thread takes one run of the numbers (64 at a time, a cache line of each operand).
void swiglu_backward_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    const SwigluBackwardArgs a = swiglu_backward_args(dst);
    const int64_t blocks = (a.n + 63) / 64, per = (blocks + nth - 1) / nth;
    const int64_t lo = std::min(a.n, ith * per * 64), hi = std::min(a.n, (ith + 1) * per * 64);
    for (int64_t i = lo; i < hi; ++i) swiglu_grad(a.g[i], a.u[i], a.d_act[i], a.d_gate + i, a.d_up + i);
}

} // namespace

ggml_tensor * swiglu_backward(ggml_context * ctx, ggml_tensor * g, ggml_tensor * u, ggml_tensor * d_act) {
    if (!ggml_are_same_shape(g, u) || !ggml_are_same_shape(g, d_act) || g->ne[2] != 1 || g->ne[3] != 1) {
        throw Error("swiglu_backward: expected three [n, T] tensors of one shape");
    }
    ggml_tensor * args[3] = {g, u, d_act};
    for (ggml_tensor *& t : args) {
        if (t->type != GGML_TYPE_F32) throw Error("swiglu_backward: expected f32 inputs");
        if (!ggml_is_contiguous(t)) t = ggml_cont(ctx, t);
    }
    return ggml_custom_4d(ctx, GGML_TYPE_F32, g->ne[0], g->ne[1], 2, 1, args, 3, swiglu_backward_cpu, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * swiglu_backward_part(ggml_context * ctx, ggml_tensor * node, SwigluGrad which) {
    return ggml_view_2d(ctx, node, node->ne[0], node->ne[1], node->nb[1], which == SwigluGrad::Gate ? 0 : node->nb[2]);
}

bool is_swiglu_backward(const ggml_tensor * t) { return is_custom_node(t, swiglu_backward_cpu); }

SwigluBackwardArgs swiglu_backward_args(ggml_tensor * t) {
    SwigluBackwardArgs a;
    a.g = (const float *) t->src[0]->data;
    a.u = (const float *) t->src[1]->data;
    a.d_act = (const float *) t->src[2]->data;
    a.d_gate = (float *) t->data;
    a.n = t->ne[0] * t->ne[1];
    a.d_up = a.d_gate + a.n;
    return a;
}

} // namespace rrr
