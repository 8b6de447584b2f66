#include "swiglu_backward.h"
#include "gpu_emulation.h"
#include "cpu_numbers.h"
#include "custom_node.h"
#include "errors.h"
#include "swiglu_backward_math.h"

#include <algorithm>

namespace rrr {

namespace {

// Each thread takes one run of the numbers (64 at a time, a cache line of each operand).
void swiglu_backward_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    const SwigluBackwardArgs a = swiglu_backward_args(dst);
    const ThreadSpan s = thread_span(a.n, ith, nth);
    // ggml's own roundings for the copies, as its products convert their f32 inputs
    const ggml_type t = a.bf16 ? GGML_TYPE_BF16 : GGML_TYPE_F16;
    const ggml_type in = a.in16 ? t : GGML_TYPE_F32;
    for (int64_t i = s.lo; i < s.hi; ++i) {
        const float g = load_as(a.g, in, i), u = load_as(a.u, in, i);
        float dg = 0.0f, du = 0.0f;
        swiglu_grad(g, u, load_as(a.d_act, a.d16 ? t : GGML_TYPE_F32, i), &dg, &du);
        if (a.d_gate) {
            a.d_gate[i] = dg;
            a.d_up[i] = du;
        }
        if (a.gate16) {
            store_as(a.gate16, t, i, dg);
            store_as(a.up16, t, i, du);
        }
        if (a.act) a.act[i] = swiglu_value(g, u);
        if (a.act16) store_as(a.act16, t, i, swiglu_value(g, u));
    }
}

// The userdata: the copies' type in the low byte (0 none, else the ggml_type), bit 8 whether
// the node writes silu(g)·u, bit 9 whether it leaves out the f32 gradients (16 bits alone).
constexpr uint64_t kActBit = 1u << 8, kNoF32Bit = 1u << 9;
ggml_type copies_of(const ggml_tensor * t) {
    const uint64_t c = custom_node_bits(t) & 0xffu;
    return c == 0 ? GGML_TYPE_F32 : (ggml_type) c;
}
bool has_act(const ggml_tensor * t) { return (custom_node_bits(t) & kActBit) != 0; }
bool has_f32(const ggml_tensor * t) { return (custom_node_bits(t) & kNoF32Bit) == 0; }

} // namespace

ggml_tensor * swiglu_backward(ggml_context * ctx, ggml_tensor * g, ggml_tensor * u, ggml_tensor * d_act, ggml_type copies, bool act, bool f32_grads) {
    if (copies != GGML_TYPE_F32 && copies != GGML_TYPE_F16 && copies != GGML_TYPE_BF16) throw Error("swiglu_backward: copies are f16 or bf16");
    if (!f32_grads && copies == GGML_TYPE_F32) throw Error("swiglu_backward: without f32 gradients it writes 16-bit copies");
    if (!ggml_are_same_shape(g, u) || !ggml_are_same_shape(g, d_act) || g->ne[2] != 1 || g->ne[3] != 1) {
        throw Error("swiglu_backward: expected three [n, T] tensors of one shape");
    }
    // g and u may come in 16 bits (product16.h), then of the copies' type
    if (g->type != u->type || (g->type != GGML_TYPE_F32 && g->type != copies) || (d_act->type != GGML_TYPE_F32 && d_act->type != g->type)) {
        throw Error("swiglu_backward: expected g and u in f32 or in the copies' type, and the gradient in f32 or in theirs");
    }
    ggml_tensor * args[3] = {g, u, d_act};
    for (ggml_tensor *& t : args) {
        if (!ggml_is_contiguous(t)) t = ggml_cont(ctx, t);
    }
    const bool with_copies = copies != GGML_TYPE_F32;
    void * bits = as_userdata((with_copies ? (uint64_t) copies : 0) | (act ? kActBit : 0) | (f32_grads ? 0 : kNoF32Bit));
    // the copies alone: planes of their own type
    if (!f32_grads) return ggml_custom_4d(ctx, copies, g->ne[0], g->ne[1], act ? 3 : 2, 1, args, 3, swiglu_backward_cpu, GGML_N_TASKS_MAX, bits);
    // two 16-bit planes take the room of one f32 plane
    const int64_t planes = 2 + (with_copies ? 1 : 0) + (act ? 1 : 0);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, g->ne[0], g->ne[1], planes, 1, args, 3, swiglu_backward_cpu, GGML_N_TASKS_MAX, bits);
}

ggml_tensor * swiglu_backward_part(ggml_context * ctx, ggml_tensor * node, SwigluGrad which) {
    if (!has_f32(node)) throw Error("swiglu_backward_part: the node wrote only 16-bit copies");
    return ggml_view_2d(ctx, node, node->ne[0], node->ne[1], node->nb[1], which == SwigluGrad::Gate ? 0 : node->nb[2]);
}

ggml_tensor * swiglu_backward_copy(ggml_context * ctx, ggml_tensor * node, SwigluGrad which) {
    const ggml_type type = copies_of(node);
    if (type == GGML_TYPE_F32) throw Error("swiglu_backward_copy: the node made no copies");
    if (!has_f32(node)) return ggml_view_2d(ctx, node, node->ne[0], node->ne[1], node->nb[1], which == SwigluGrad::Gate ? 0 : node->nb[2]);
    // A view of plane 2 given the copies' type: ggml's views keep their parent's type, so the
    // view is made as f32 numbers and then retyped; it stays within the plane and names its
    // parent, so the allocator and the scheduler treat it as any view.
    const int64_t n = node->ne[0], T = node->ne[1];
    const size_t ts = ggml_type_size(type);
    ggml_tensor * v = ggml_view_1d(ctx, node, n * T / 2, 2 * node->nb[2] + (which == SwigluGrad::Gate ? 0 : (size_t) (n * T) * ts));
    v->type = type;
    v->ne[0] = n;
    v->ne[1] = T;
    v->nb[0] = ts;
    v->nb[1] = ts * (size_t) n;
    v->nb[2] = v->nb[3] = v->nb[1] * (size_t) T;
    return v;
}

ggml_tensor * swiglu_backward_act(ggml_context * ctx, ggml_tensor * node) {
    if (!has_act(node)) throw Error("swiglu_backward_act: the node did not write silu(g)·u");
    return ggml_view_2d(ctx, node, node->ne[0], node->ne[1], node->nb[1], (size_t) (node->ne[2] - 1) * node->nb[2]);
}

bool is_swiglu_backward(const ggml_tensor * t) { return is_custom_node(t, swiglu_backward_cpu); }

SwigluBackwardArgs swiglu_backward_args(ggml_tensor * t) {
    SwigluBackwardArgs a;
    a.g = t->src[0]->data;
    a.u = t->src[1]->data;
    a.in16 = t->src[0]->type != GGML_TYPE_F32;
    a.d_act = t->src[2]->data;
    a.d16 = t->src[2]->type != GGML_TYPE_F32;
    a.n = t->ne[0] * t->ne[1];
    a.bf16 = copies_of(t) == GGML_TYPE_BF16;
    char * base = (char *) t->data;
    if (!has_f32(t)) {
        a.gate16 = base;
        a.up16 = base + t->nb[2];
        if (has_act(t)) a.act16 = base + 2 * t->nb[2];
        return a;
    }
    a.d_gate = (float *) base;
    a.d_up = a.d_gate + a.n;
    if (copies_of(t) != GGML_TYPE_F32) {
        a.gate16 = a.d_up + a.n;
        a.up16 = (char *) a.gate16 + (size_t) a.n * 2;
    }
    if (has_act(t)) a.act = (float *) (base + (size_t) (t->ne[2] - 1) * t->nb[2]);
    return a;
}

} // namespace rrr
