#include "attn_backward.h"
#include "gpu_emulation.h"
#include "attn_backward_steps.h"
#include "custom_node.h"
#include "errors.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace rrr {

namespace {

// The node's scalars in its userdata (custom_node.h): L in the low 30 bits, the f16 flag in bit
// 30, the TF32 flag in bit 31, the scale's bits above.
uint64_t pack(int64_t L, float scale, bool tf32, bool half) {
    return ((uint64_t) float_bits(scale) << 32) | ((uint64_t) tf32 << 31) | ((uint64_t) half << 30) | (uint64_t) L;
}

int64_t grads_floats(const AttnBackwardShape & s) { return s.hd * (s.n_head + 2 * s.n_head_kv) * s.T(); }

// The work space starts at the first 256-byte boundary after the gradients (its parts are
// 256-byte multiples, for the products' aligned loads): it takes this many floats more.
constexpr int64_t kScratchPad = 256 / sizeof(float);

float dot(const float * a, const float * b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

void axpy(float a, const float * x, float * y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// One task per (sequence, K/V head): the heads of a group add into the same rows of dK and dV,
// so a task owns them whole and no two threads write one number. Each query row is done in one
// sweep over its keys, with the row's probabilities and their gradient in two rows of floats.
void attn_backward_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    const AttnBackwardArgs a = attn_backward_args(dst);
    if (a.scratch_seqs > 0) {
        // A node with a work space takes the GPU's steps (attn_backward_steps.h) in plain loops on
        // one thread: slow, and only there so that a machine without a GPU can check them.
        HostAttnBackwardOps ops;
        if (ith == 0) {
            if (const char * err = attn_backward_steps(a, ops)) GGML_ABORT("%s", err);
        }
        return;
    }
    const float * q = a.q, * k = a.k, * v = a.v, * dO = a.dO;
    float * dq = a.dq, * dk = a.dk, * dv = a.dv;
    const int64_t hd = a.hd, nh = a.n_head, nkv = a.n_head_kv, L = a.L, grp = nh / nkv;
    std::vector<float> p((size_t) L), dp((size_t) L);
    for (int64_t task = ith; task < a.B * nkv; task += nth) {
        const int64_t b = task / nkv, g = task % nkv;
        auto kv_row = [&](int64_t pos) { return hd * (g + nkv * (b * L + pos)); };
        auto q_row = [&](int64_t h, int64_t pos) { return hd * (h + nh * (b * L + pos)); };
        for (int64_t j = 0; j < L; ++j) {
            std::fill_n(dk + kv_row(j), hd, 0.0f);
            std::fill_n(dv + kv_row(j), hd, 0.0f);
        }
        for (int64_t h = g * grp; h < (g + 1) * grp; ++h) {
            for (int64_t i = 0; i < L; ++i) {
                const float * qi = q + q_row(h, i);
                const float * oi = dO + q_row(h, i);
                float mx = -INFINITY;
                for (int64_t j = 0; j <= i; ++j) {
                    p[j] = a.scale * dot(qi, k + kv_row(j), hd);
                    mx = std::max(mx, p[j]);
                }
                double sum = 0.0;
                for (int64_t j = 0; j <= i; ++j) {
                    p[j] = std::exp(p[j] - mx);
                    sum += p[j];
                }
                double D = 0.0; // Σ_j P dP: the softmax gradient's shared term
                for (int64_t j = 0; j <= i; ++j) {
                    p[j] = (float) (p[j] / sum);
                    dp[j] = dot(oi, v + kv_row(j), hd);
                    D += (double) p[j] * dp[j];
                }
                float * dqi = dq + q_row(h, i);
                std::fill_n(dqi, hd, 0.0f);
                for (int64_t j = 0; j <= i; ++j) {
                    const float ds = a.scale * p[j] * (dp[j] - (float) D);
                    axpy(ds, k + kv_row(j), dqi, hd);
                    axpy(ds, qi, dk + kv_row(j), hd);
                    axpy(p[j], oi, dv + kv_row(j), hd);
                }
            }
        }
    }
}

} // namespace

ggml_tensor * attn_backward(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * dO, int64_t L, float scale,
                            bool tf32, bool half, size_t scratch_bytes) {
    const int64_t hd = q->ne[0], nh = q->ne[1], T = q->ne[2], nkv = k->ne[1];
    if (L <= 0 || L >= (1ll << 30) || T % L != 0 || nh % nkv != 0 || k->ne[0] != hd || v->ne[0] != hd || v->ne[1] != nkv ||
        k->ne[2] != T || v->ne[2] != T || ggml_nelements(dO) != hd * nh * T) {
        throw Error("attn_backward: inconsistent shapes");
    }
    auto f32 = [&](ggml_tensor * t, int64_t heads) {
        if (t->type != GGML_TYPE_F32) throw Error("attn_backward: expected f32 inputs");
        if (!ggml_is_contiguous(t)) t = ggml_cont(ctx, t);
        return ggml_reshape_3d(ctx, t, hd, heads, T);
    };
    AttnBackwardShape s;
    s.hd = hd;
    s.n_head = nh;
    s.n_head_kv = nkv;
    s.L = L;
    s.B = T / L;
    s.half = half;
    const int64_t per_seq = s.scratch_floats_per_seq() * (int64_t) sizeof(float);
    const int64_t seqs = std::min<int64_t>(s.B, (int64_t) scratch_bytes / per_seq);
    const int64_t n = grads_floats(s) + (scratch_bytes > 0 ? kScratchPad + std::max<int64_t>(1, seqs) * s.scratch_floats_per_seq() : 0);
    ggml_tensor * args[4] = {f32(q, nh), f32(k, nkv), f32(v, nkv), f32(dO, nh)};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, n, 1, 1, 1, args, 4, attn_backward_cpu, GGML_N_TASKS_MAX, as_userdata(pack(L, scale, tf32, half)));
}

ggml_tensor * attn_backward_part(ggml_context * ctx, ggml_tensor * node, AttnGrad which) {
    const AttnBackwardShape s = attn_backward_shape(node);
    const int64_t heads = which == AttnGrad::Q ? s.n_head : s.n_head_kv;
    int64_t offset = 0;
    if (which != AttnGrad::Q) offset += s.hd * s.n_head * s.T();
    if (which == AttnGrad::V) offset += s.hd * s.n_head_kv * s.T();
    return ggml_view_3d(ctx, node, s.hd, heads, s.T(), s.hd * sizeof(float), s.hd * heads * sizeof(float), (size_t) offset * sizeof(float));
}

bool is_attn_backward(const ggml_tensor * t) { return is_custom_node(t, attn_backward_cpu); }

AttnBackwardShape attn_backward_shape(const ggml_tensor * t) {
    const uint64_t u = custom_node_bits(t);
    AttnBackwardShape s;
    s.hd = t->src[0]->ne[0];
    s.n_head = t->src[0]->ne[1];
    s.n_head_kv = t->src[1]->ne[1];
    s.L = (int64_t) (u & 0x3fffffffull);
    s.B = t->src[0]->ne[2] / s.L;
    s.tf32 = (u >> 31) & 1;
    s.half = (u >> 30) & 1;
    s.scale = bits_float((uint32_t) (u >> 32));
    const int64_t rest = ggml_nelements(t) - grads_floats(s);
    s.scratch_seqs = rest > 0 ? (rest - kScratchPad) / s.scratch_floats_per_seq() : 0;
    return s;
}

AttnBackwardArgs attn_backward_args(ggml_tensor * t) {
    const AttnBackwardShape s = attn_backward_shape(t);
    AttnBackwardArgs a;
    a.q = (const float *) t->src[0]->data;
    a.k = (const float *) t->src[1]->data;
    a.v = (const float *) t->src[2]->data;
    a.dO = (const float *) t->src[3]->data;
    a.dq = (float *) t->data;
    a.dk = a.dq + s.hd * s.n_head * s.T();
    a.dv = a.dk + s.hd * s.n_head_kv * s.T();
    if (s.scratch_seqs > 0) {
        const uintptr_t end = (uintptr_t) (a.dv + s.hd * s.n_head_kv * s.T());
        a.scratch = (void *) ((end + 255) / 256 * 256);
    }
    a.hd = s.hd;
    a.n_head = s.n_head;
    a.n_head_kv = s.n_head_kv;
    a.L = s.L;
    a.B = s.B;
    a.scratch_seqs = s.scratch_seqs;
    a.scale = s.scale;
    a.tf32 = s.tf32;
    a.half = s.half;
    a.q_blocks = attn_query_blocks(s.L);
    return a;
}

} // namespace rrr
