#include "swiglu_forward.h"
#include "gpu_emulation.h"
#include "cpu_numbers.h"
#include "custom_node.h"
#include "errors.h"
#include "swiglu_backward_math.h"


namespace rrr {

namespace {

void swiglu_forward_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    const SwigluForwardArgs a = swiglu_forward_args(dst);
    const ThreadSpan s = thread_span(a.n, ith, nth);
    const ggml_type t = a.bf16 ? GGML_TYPE_BF16 : GGML_TYPE_F16;
    const ggml_type in = a.in16 ? t : GGML_TYPE_F32;
    for (int64_t i = s.lo; i < s.hi; ++i) store_as(a.out, t, i, swiglu_value(load_as(a.g, in, i), load_as(a.u, in, i)));
}

} // namespace

ggml_tensor * swiglu_forward(ggml_context * ctx, ggml_tensor * g, ggml_tensor * u, ggml_type type) {
    if (type != GGML_TYPE_F16 && type != GGML_TYPE_BF16) throw Error("swiglu_forward: writes f16 or bf16");
    if (!ggml_are_same_shape(g, u) || g->type != u->type || g->ne[2] != 1 || g->ne[3] != 1) throw Error("swiglu_forward: expected two [n, T] tensors of one shape and type");
    ggml_tensor * args[2] = {g, u};
    for (ggml_tensor *& t : args) {
        if (t->type != GGML_TYPE_F32 && t->type != type) throw Error("swiglu_forward: expected f32 inputs, or inputs of the result's type");
        if (!ggml_is_contiguous(t)) t = ggml_cont(ctx, t);
    }
    return ggml_custom_4d(ctx, type, g->ne[0], g->ne[1], 1, 1, args, 2, swiglu_forward_cpu, GGML_N_TASKS_MAX, nullptr);
}

bool is_swiglu_forward(const ggml_tensor * t) { return is_custom_node(t, swiglu_forward_cpu); }

SwigluForwardArgs swiglu_forward_args(ggml_tensor * t) {
    SwigluForwardArgs a;
    a.g = t->src[0]->data;
    a.u = t->src[1]->data;
    a.in16 = t->src[0]->type != GGML_TYPE_F32;
    a.out = t->data;
    a.bf16 = t->type == GGML_TYPE_BF16;
    a.n = t->ne[0] * t->ne[1];
    return a;
}

} // namespace rrr
