#include "loss_head.h"
#include "gpu_emulation.h"
#include "cpu_numbers.h"
#include "custom_node.h"
#include "errors.h"
#include "loss_head_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace rrr {

namespace {

void loss_head_cpu(ggml_tensor * dst, int ith, int nth, void *);

// The node's scalars in its userdata (custom_node.h): the backward, ratio and KL flags in bits
// 0 to 2, the chunk's rows (0: no work space) in bits 3 to 31, clip_eps's bits above.
constexpr int64_t kMaxChunk = (1ll << 29) - 1;
uint64_t pack(const LossHeadSpec & s, int64_t chunk) {
    return ((uint64_t) float_bits(s.clip_eps) << 32) | ((uint64_t) chunk << 3) | ((uint64_t) s.kl << 2) | ((uint64_t) s.has_old << 1) | (uint64_t) s.backward;
}
LossHeadSpec spec_of(const ggml_tensor * t) {
    const uint64_t u = custom_node_bits(t);
    LossHeadSpec s;
    s.backward = u & 1;
    s.has_old = (u >> 1) & 1;
    s.kl = (u >> 2) & 1;
    s.clip_eps = bits_float((uint32_t) (u >> 32));
    return s;
}
int64_t chunk_of(const ggml_tensor * t) { return (int64_t) ((custom_node_bits(t) >> 3) & (uint64_t) kMaxChunk); }

int64_t aligned(int64_t floats) { return (floats + 63) / 64 * 64; } // 256 bytes

// Where the node's parts start, in floats: the log-probs, dL/dh, then the work space (h rounded
// to W's 16-bit type, then the chunk's logits).
struct Layout {
    int64_t dh = 0, h16 = 0, rows = 0, end = 0;
};
Layout layout(int64_t E, int64_t V, int64_t R, ggml_type wt, bool backward, int64_t chunk) {
    Layout l;
    l.dh = aligned(R);
    l.h16 = aligned(l.dh + (backward ? E * R : 0));
    l.rows = l.h16 + (chunk > 0 && is16(wt) ? aligned((E * chunk + 1) / 2) : 0);
    l.end = chunk > 0 ? l.rows + V * chunk : l.h16;
    return l;
}

float * f32_at(float * base, int64_t offset) { return base ? base + offset : nullptr; }
const void * at(const ggml_tensor * s, int64_t offset) {
    return s->data ? (const void *) ((const char *) s->data + offset * (int64_t) ggml_type_size(s->type)) : nullptr;
}

// The GPU's chunks over the node's data (`out` null: shapes only).
std::vector<LossHeadChunk> chunks_of(const ggml_tensor * t, float * out) {
    const ggml_tensor * h = t->src[0], * W = t->src[1];
    const int64_t E = W->ne[0], V = W->ne[1], R = h->ne[1], chunk = chunk_of(t);
    const bool backward = spec_of(t).backward;
    std::vector<LossHeadChunk> cs;
    if (chunk == 0) return cs;
    const Layout l = layout(E, V, R, W->type, backward, chunk);
    const ggml_type in = W->type;
    for (int64_t r0 = 0; r0 < R; r0 += chunk) {
        LossHeadChunk c;
        c.r0 = r0;
        c.n = std::min(chunk, R - r0);
        c.rows = f32_at(out, l.rows);
        c.g_type = in;
        // logits [V, n] = Wᵀ h, h rounded to a 16-bit W's type in the work space
        c.logits = NodeGemm{true, false, V, c.n, E, 1.0f, {at(W, 0), W->type, E}, {at(h, r0 * E), GGML_TYPE_F32, E, is16(in) ? f32_at(out, l.h16) : nullptr},
                            0.0f, c.rows, V, in};
        if (backward) {
            // dh [E, n] = coef W[t] (the rows' pass) + W G, G = -coef p [V, n] in W's type over the
            // logits' rows (16-bit: ld 2V)
            c.dh = NodeGemm{false, false, E, c.n, V, 1.0f, {at(W, 0), W->type, E}, {c.rows, in, is16(in) ? 2 * V : V}, 1.0f, f32_at(out, l.dh + r0 * E), E, in};
        }
        cs.push_back(c);
    }
    return cs;
}

LossHeadArgs args_of(ggml_tensor * t) {
    LossHeadArgs a;
    const ggml_tensor * h = t->src[0], * W = t->src[1];
    a.E = W->ne[0];
    a.V = W->ne[1];
    a.R = h->ne[1];
    a.spec = spec_of(t);
    int k = 2;
    a.targets = (const int32_t *) t->src[k++]->data;
    if (a.spec.backward) a.neg_w = (const float *) t->src[k++]->data;
    if (a.spec.has_old) a.old_lp = (const float *) t->src[k++]->data;
    if (a.spec.kl) {
        a.kl_m = (const float *) t->src[k++]->data;
        a.ref_lp = (const float *) t->src[k++]->data;
    }
    a.lp = (float *) t->data;
    a.chunks = chunks_of(t, (float *) t->data);
    return a;
}

float coef_at(const LossHeadArgs & a, int64_t r, float lp) {
    return loss_head_coef(lp, a.neg_w[r], a.spec.has_old, a.spec.has_old ? a.old_lp[r] : 0.0f, a.spec.clip_eps, a.spec.kl, a.spec.kl ? a.kl_m[r] : 0.0f, a.spec.kl ? a.ref_lp[r] : 0.0f);
}

// A row's softmax over its logits, read through `get`: their max and log Σ exp(x - max), summed
// in double. Kept apart, not added: large logits (a max in the thousands) would lose the sum's
// low bits to the max's rounding, and every probability with them.
struct LogSumExp {
    float max, log_sum;
    float log_p(float x) const { return (x - max) - log_sum; }
};
template <typename Get> LogSumExp log_sum_exp(int64_t V, Get get) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, get(j));
    double s = 0.0;
    for (int64_t j = 0; j < V; ++j) s += std::exp((double) (get(j) - mx));
    return {mx, (float) std::log(s)};
}

// A GPU's pass over row i of a chunk, one number after the other: the row's log-prob, then (with
// the backward pass) its gradient at the logits, coef (onehot(t) - p): the target's part as
// coef W[t] straight into dh in f32, the rest, -coef p, written over the logits in W's type,
// number j over the bytes of the f32 logits before it, all of which are read by then. Apart,
// the dominant term keeps f32: rounded with the rest, coef (1 - p_t) took f16's 2.4e-4 into
// every gradient (a tiny model's, against ggml's ops).
void host_row(const LossHeadArgs & a, const LossHeadChunk & c, int64_t i) {
    char * row = (char *) (c.rows + i * a.V);
    const auto get = [&](int64_t j) {
        float v = 0.0f;
        std::memcpy(&v, row + 4 * j, sizeof v);
        return v;
    };
    const int64_t r = c.r0 + i, t = a.targets[r];
    const LogSumExp lse = log_sum_exp(a.V, get);
    const float lp = lse.log_p(get(t));
    a.lp[r] = lp;
    if (c.dh.m == 0) return;
    const float coef = coef_at(a, r, lp);
    // the target's part, coef W[t], in f32 where the product adds the rest (beta 1)
    for (int64_t e = 0; e < a.E; ++e) ((float *) c.dh.C)[i * c.dh.ldc + e] = coef * load_as(c.dh.A.p, c.dh.A.type, t * a.E + e);
    const size_t size = ggml_type_size(c.g_type);
    for (int64_t j = 0; j < a.V; ++j) {
        const float g = -coef * std::exp(lse.log_p(get(j)));
        char bits[4];
        store_as(bits, c.g_type, 0, g);
        std::memcpy(row + (int64_t) size * j, bits, size);
    }
}

// A dot product in f32 with eight running sums, which a compiler can keep in vector registers.
float dot8(const float * a, const float * b, int64_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
    }
    float t = 0.0f;
    for (; i < n; ++i) t += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + t;
}

// The CPU's own way, no work space: each thread whole blocks of rows, the head's rows read once
// a block for the logits and once for dh. dh sums runs of kSumRun vocabulary rows in f32 and
// the runs in double: f32 sums over a whole 150k vocabulary drift.
constexpr int64_t kRowBlock = 8;
constexpr int64_t kSumRun = 512;
void direct_rows(const LossHeadArgs & a, const ggml_tensor * h, const ggml_tensor * W, float * dh, int ith, int nth) {
    const int64_t E = a.E, V = a.V;
    const ThreadSpan span = thread_span(a.R, ith, nth, kRowBlock);
    if (span.lo >= span.hi) return;
    std::vector<float> hr((size_t) (kRowBlock * E)), logits((size_t) (kRowBlock * V)), w((size_t) E);
    std::vector<double> acc((size_t) (kRowBlock * E));
    std::vector<float> run((size_t) (kRowBlock * E));
    const auto w_row = [&](int64_t v) {
        for (int64_t e = 0; e < E; ++e) w[(size_t) e] = load_as(W->data, W->type, v * E + e);
    };
    for (int64_t r0 = span.lo; r0 < span.hi; r0 += kRowBlock) {
        const int64_t nb = std::min(kRowBlock, span.hi - r0);
        for (int64_t i = 0; i < nb; ++i) {
            for (int64_t e = 0; e < E; ++e) hr[(size_t) (i * E + e)] = rounded_as(W->type, ((const float *) h->data)[(r0 + i) * E + e]);
        }
        for (int64_t v = 0; v < V; ++v) {
            w_row(v);
            for (int64_t i = 0; i < nb; ++i) {
                logits[(size_t) (i * V + v)] = dot8(w.data(), hr.data() + i * E, E);
            }
        }
        for (int64_t i = 0; i < nb; ++i) {
            float * row = logits.data() + i * V;
            const int64_t r = r0 + i, t = a.targets[r];
            const LogSumExp lse = log_sum_exp(V, [&](int64_t j) { return row[j]; });
            const float lp = lse.log_p(row[t]);
            a.lp[r] = lp;
            if (!a.spec.backward) continue;
            const float coef = coef_at(a, r, lp);
            for (int64_t j = 0; j < V; ++j) row[j] = rounded_as(W->type, -coef * std::exp(lse.log_p(row[j])));
            w_row(t);
            for (int64_t e = 0; e < E; ++e) acc[(size_t) (i * E + e)] = (double) coef * w[(size_t) e];
        }
        if (!a.spec.backward) continue;
        // double sums over the vocabulary (see node_gemm.cpp), onto the targets' parts
        for (int64_t v0 = 0; v0 < V; v0 += kSumRun) {
            std::fill(run.begin(), run.end(), 0.0f);
            for (int64_t v = v0; v < std::min(V, v0 + kSumRun); ++v) {
                w_row(v);
                for (int64_t i = 0; i < nb; ++i) {
                    const float g = logits[(size_t) (i * V + v)];
                    float * d = run.data() + i * E;
                    for (int64_t e = 0; e < E; ++e) d[e] += g * w[(size_t) e];
                }
            }
            for (int64_t i = 0; i < nb * E; ++i) acc[(size_t) i] += run[(size_t) i];
        }
        for (int64_t i = 0; i < nb * E; ++i) dh[r0 * E + i] = (float) acc[(size_t) i];
    }
}

void loss_head_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    const LossHeadArgs a = args_of(dst);
    if (a.chunks.empty()) {
        const Layout l = layout(a.E, a.V, a.R, dst->src[1]->type, a.spec.backward, 0);
        direct_rows(a, dst->src[0], dst->src[1], (float *) dst->data + l.dh, ith, nth);
        return;
    }
    // With a work space, the GPU's steps in plain loops on one thread: slow, and only there so
    // that a machine without a GPU can check them.
    if (ith != 0) return;
    for (const LossHeadChunk & c : a.chunks) {
        node_gemm_part(c.logits, 0, 1);
        for (int64_t i = 0; i < c.n; ++i) host_row(a, c, i);
        if (c.dh.m > 0) node_gemm_part(c.dh, 0, 1);
    }
}

void expect(bool ok, const char * what) {
    if (!ok) throw Error(std::string("loss_head: ") + what);
}

bool rows_of(const ggml_tensor * t, ggml_type type, int64_t R) { return t && t->type == type && ggml_nelements(t) == R && ggml_is_contiguous(t); }

} // namespace

ggml_tensor * loss_head(ggml_context * ctx, ggml_tensor * h, ggml_tensor * W, const LossHeadRows & rows, const LossHeadSpec & spec, int64_t chunk_rows) {
    expect(h->type == GGML_TYPE_F32 && ggml_is_contiguous(h) && ggml_n_dims(h) <= 2, "expected contiguous f32 h [E, R]");
    expect((W->type == GGML_TYPE_F32 || is16(W->type)) && ggml_is_contiguous(W) && ggml_n_dims(W) == 2 && W->ne[0] == h->ne[0],
           "expected a contiguous f32, f16 or bf16 head W [E, V]");
    const int64_t E = W->ne[0], V = W->ne[1], R = h->ne[1];
    ggml_tensor * args[7] = {h, W, rows.targets};
    int n = 3;
    expect(rows_of(rows.targets, GGML_TYPE_I32, R), "expected i32 targets [R]");
    if (spec.backward) {
        expect(rows_of(rows.neg_w, GGML_TYPE_F32, R), "expected f32 -weights [R]");
        args[n++] = rows.neg_w;
    }
    if (spec.has_old) {
        expect(rows_of(rows.old_lp, GGML_TYPE_F32, R), "expected f32 old log-probs [R]");
        args[n++] = rows.old_lp;
    }
    if (spec.kl) {
        expect(rows_of(rows.kl_m, GGML_TYPE_F32, R) && rows_of(rows.ref_lp, GGML_TYPE_F32, R), "expected f32 KL weights and reference log-probs [R]");
        args[n++] = rows.kl_m;
        args[n++] = rows.ref_lp;
    }
    const int64_t chunk = std::min(std::max<int64_t>(chunk_rows, 0), std::min(R, kMaxChunk));
    return ggml_custom_4d(ctx, GGML_TYPE_F32, layout(E, V, R, W->type, spec.backward, chunk).end, 1, 1, 1, args, n, loss_head_cpu, GGML_N_TASKS_MAX,
                          as_userdata(pack(spec, chunk)));
}

ggml_tensor * loss_head_lp(ggml_context * ctx, ggml_tensor * node) {
    return ggml_view_2d(ctx, node, 1, node->src[0]->ne[1], sizeof(float), 0);
}

ggml_tensor * loss_head_dh(ggml_context * ctx, ggml_tensor * node) {
    const ggml_tensor * W = node->src[1];
    const int64_t E = W->ne[0], R = node->src[0]->ne[1];
    const Layout l = layout(E, W->ne[1], R, W->type, true, chunk_of(node));
    return ggml_view_2d(ctx, node, E, R, (size_t) E * sizeof(float), (size_t) l.dh * sizeof(float));
}

bool is_loss_head(const ggml_tensor * t) { return is_custom_node(t, loss_head_cpu); }

LossHeadArgs loss_head_args(ggml_tensor * node) { return args_of(node); }

double loss_head_flops(const ggml_tensor * node) {
    const double E = (double) node->src[1]->ne[0], V = (double) node->src[1]->ne[1], R = (double) node->src[0]->ne[1];
    return 2.0 * E * V * R * (spec_of(node).backward ? 2.0 : 1.0);
}

double loss_head_bytes(const ggml_tensor * node) {
    const ggml_tensor * h = node->src[0], * W = node->src[1];
    const bool backward = spec_of(node).backward;
    const double E = (double) W->ne[0], V = (double) W->ne[1], w = (double) ggml_nbytes(W), g = (double) ggml_type_size(W->type);
    std::vector<LossHeadChunk> cs = chunks_of(node, nullptr);
    if (cs.empty()) cs.push_back(LossHeadChunk{{}, 0, h->ne[1]}); // the CPU's rows: one pass over them all, as a chunk
    double bytes = 0.0;
    for (const LossHeadChunk & c : cs) {
        const double n = (double) c.n;
        // h read (and rounded to 16 bits and read again), W, the logits written and read once
        // for the log-probs; with the backward pass W again, the logits read again, G written
        // and read, dh written
        bytes += 4.0 * E * n + (is16(W->type) ? 4.0 * E * n : 0.0) + w + 8.0 * V * n;
        if (backward) bytes += w + 4.0 * V * n + 2.0 * g * V * n + 4.0 * E * n;
    }
    // the rows' inputs and log-probs
    for (int k = 2; k < GGML_MAX_SRC && node->src[k]; ++k) bytes += (double) ggml_nbytes(node->src[k]);
    return bytes + 4.0 * (double) h->ne[1];
}

} // namespace rrr
