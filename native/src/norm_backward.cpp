#include "norm_backward.h"
#include "gpu_emulation.h"
#include "cpu_numbers.h"
#include "custom_node.h"
#include "errors.h"
#include "norm_backward_math.h"

#include <string>

namespace rrr {

namespace {

// The userdata: ε's bits above, the term count in bits 0 to 3, the residual's flag in bit 4.
uint64_t pack(float eps, int n_terms, bool resid) { return ((uint64_t) float_bits(eps) << 32) | ((uint64_t) resid << 4) | (uint64_t) n_terms; }

// A thread's rows, whole: each needs its own two sums.
void norm_backward_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    const NormBackwardArgs a = norm_backward_args(dst);
    const ThreadSpan rows = thread_span(a.T, ith, nth, 1);
    std::vector<float> g((size_t) a.E);
    for (int64_t t = rows.lo; t < rows.hi; ++t) {
        const int64_t o = t * a.E;
        double sxx = 0.0, sxg = 0.0;
        for (int64_t e = 0; e < a.E; ++e) {
            float d = 0.0f;
            for (int k = 0; k < a.n_terms; ++k) d += a.dy[k][o + e];
            g[(size_t) e] = d * a.w[e];
            sxx += (double) a.x[o + e] * a.x[o + e];
            sxg += (double) a.x[o + e] * g[(size_t) e];
        }
        const RmsBackRow r = rms_back_row(sxx, sxg, a.E, a.eps);
        for (int64_t e = 0; e < a.E; ++e) {
            const float v = rms_back_value(r, g[(size_t) e], a.x[o + e]);
            a.out[o + e] = a.resid ? a.resid[o + e] + v : v;
        }
    }
}

void expect(bool ok, const char * what) {
    if (!ok) throw Error(std::string("norm_backward: ") + what);
}

} // namespace

ggml_tensor * norm_backward(ggml_context * ctx, const std::vector<ggml_tensor *> & dys, ggml_tensor * x, ggml_tensor * w, ggml_tensor * resid, float eps) {
    expect(!dys.empty() && (int) dys.size() <= kNormBackMaxTerms, "expected one to seven gradient terms");
    expect(x->type == GGML_TYPE_F32 && w->type == GGML_TYPE_F32 && ggml_nelements(w) == x->ne[0] && ggml_is_contiguous(w), "expected f32 x [E, T] and weight [E]");
    const int64_t E = x->ne[0], T = ggml_nelements(x) / E;
    const auto plain = [&](ggml_tensor * t) {
        expect(t->type == GGML_TYPE_F32 && ggml_nelements(t) == E * T && t->ne[0] == E, "expected f32 [E, T] gradients");
        return ggml_is_contiguous(t) ? t : ggml_cont(ctx, t);
    };
    ggml_tensor * args[GGML_MAX_SRC] = {};
    int n = 0;
    for (ggml_tensor * d : dys) args[n++] = plain(d);
    args[n++] = plain(x);
    args[n++] = w;
    if (resid) args[n++] = plain(resid);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, E, T, 1, 1, args, n, norm_backward_cpu, GGML_N_TASKS_MAX, as_userdata(pack(eps, (int) dys.size(), resid != nullptr)));
}

bool is_norm_backward(const ggml_tensor * t) { return is_custom_node(t, norm_backward_cpu); }

NormBackwardArgs norm_backward_args(ggml_tensor * t) {
    const uint64_t u = custom_node_bits(t);
    NormBackwardArgs a;
    a.n_terms = (int) (u & 0xf);
    int k = 0;
    for (; k < a.n_terms; ++k) a.dy[k] = (const float *) t->src[k]->data;
    a.x = (const float *) t->src[k++]->data;
    a.w = (const float *) t->src[k++]->data;
    if ((u >> 4) & 1) a.resid = (const float *) t->src[k]->data;
    a.out = (float *) t->data;
    a.E = t->ne[0];
    a.T = t->ne[1];
    a.eps = bits_float((uint32_t) (u >> 32));
    return a;
}

} // namespace rrr
