#include "lora_backward.h"
#include "custom_node.h"
#include "errors.h"
#include "gpu_emulation.h"

#include <algorithm>
#include <string>

namespace rrr {

namespace {

void rows_cpu(ggml_tensor * dst, int ith, int nth, void *);
void grads_cpu(ggml_tensor * dst, int ith, int nth, void *);

bool is_rows(const ggml_tensor * t) { return is_custom_node(t, rows_cpu); }
bool is_grads(const ggml_tensor * t) { return is_custom_node(t, grads_cpu); }

int64_t n_srcs(const ggml_tensor * t) { return (int64_t) std::count_if(t->src, t->src + GGML_MAX_SRC, [](const ggml_tensor * s) { return s != nullptr; }); }
// The rows node's srcs: x, A, then B₁..B_k, then dy₁..dy_k.
int64_t rows_terms(const ggml_tensor * t) { return (n_srcs(t) - 2) / 2; }
// Whether a gradients node sums into the gradient buffers its srcs end with (lora_back_grads_into).
bool grads_into(const ggml_tensor * t) { return (custom_node_bits(t) & 1) != 0; }
// The gradients node's srcs: x, the rows node, then dy₁..dy_k; summing into the buffers, then
// the group's dA buffer and each dBᵢ's.
int64_t grads_terms(const ggml_tensor * t) { return grads_into(t) ? (n_srcs(t) - 3) / 2 : n_srcs(t) - 2; }

// Work space for 16-bit copies, in f32 slots, each part 256-byte aligned.
int64_t slots16(int64_t n) { return ((n + 1) / 2 + 63) / 64 * 64; }

// A number's address in a tensor, or null when only shapes are asked (no data yet).
const void * at(const ggml_tensor * s, int64_t offset) {
    return s->data ? (const void *) ((const char *) s->data + offset * (int64_t) ggml_type_size(s->type)) : nullptr;
}
float * f32_at(float * base, int64_t offset) { return base ? base + offset : nullptr; }

// A rows node's products over its srcs (x, A, B₁..B_k, dy₁..dy_k), writing from `out` (null:
// shapes only); `end` gets the f32 slots they use, work space included. The node is sized from
// this, and runs it on its data, so the two cannot part.
std::vector<NodeGemm> rows_gemms(ggml_tensor * const * src, int64_t k, float scale, float * out, int64_t * end) {
    const ggml_tensor * x = src[0], * A = src[1];
    const int64_t n_in = x->ne[0], T = x->ne[1], rk = A->ne[1], r = rk / k;
    std::vector<NodeGemm> g;
    // s Aᵀ x for the whole group, x read once; A rounded to a 16-bit x's type
    NodeGemm ax{true, false, rk, T, n_in, scale, {at(A, 0), A->type, n_in}, {at(x, 0), x->type, n_in}, 0.0f, out, rk};
    int64_t work = 2 * rk * T;
    if (is16(x->type)) {
        ax.in = x->type;
        ax.A.work = f32_at(out, work);
        work += slots16(n_in * rk);
    }
    g.push_back(ax);
    for (int64_t i = 0; i < k; ++i) {
        const ggml_tensor * B = src[2 + i], * dy = src[2 + k + i];
        // s Bᵢ dyᵢ into the adapter's rows of plane 1; B rounded to a 16-bit dy's type
        NodeGemm d{false, false, r, T, B->ne[1], scale, {at(B, 0), B->type, r}, {at(dy, 0), dy->type, dy->ne[0]}, 0.0f, f32_at(out, rk * T + i * r), rk};
        if (is16(dy->type)) {
            d.in = dy->type;
            d.A.work = f32_at(out, work);
            work += slots16(ggml_nelements(B));
        }
        g.push_back(d);
    }
    *end = work;
    return g;
}

// A gradients node's products over its srcs (x, the rows node, dy₁..dy_k), the same way: dA
// [n_in, r·k], then each dBᵢ [r, n_out_i], then (aligned) the work space, if any. With `into`
// they add to the buffers the srcs end with (beta 1) and the node holds only the work space.
std::vector<NodeGemm> grads_gemms(ggml_tensor * const * src, int64_t k, bool into, float * out, int64_t * end) {
    const ggml_tensor * x = src[0], * rows = src[1];
    const int64_t n_in = x->ne[0], T = x->ne[1], rk = rows->ne[0], r = rk / k;
    int64_t results = 0;
    if (!into) {
        results = n_in * rk;
        for (int64_t i = 0; i < k; ++i) results += r * src[2 + i]->ne[0];
    }
    const int64_t first_work = (results + 63) / 64 * 64;
    int64_t work = first_work;
    const float beta = into ? 1.0f : 0.0f;
    // the j-th buffer the srcs end with (dA, then each dBᵢ), or the node's own result at pos
    auto dest = [&](int64_t j, int64_t pos) { return into ? (float *) src[2 + k + j]->data : f32_at(out, pos); };
    std::vector<NodeGemm> g;
    // dA = x daᵀ for the whole group, x read once; da rounded to a 16-bit x's type
    NodeGemm dA{false, true, n_in, rk, T, 1.0f, {at(x, 0), x->type, n_in}, {at(rows, rk * T), rows->type, rk}, beta, dest(0, 0), n_in};
    if (is16(x->type)) {
        dA.in = x->type;
        dA.B.work = f32_at(out, work);
        work += slots16(rk * T);
    }
    g.push_back(dA);
    int64_t pos = n_in * rk;
    for (int64_t i = 0; i < k; ++i) {
        const ggml_tensor * dy = src[2 + i];
        const int64_t n_out = dy->ne[0];
        // dBᵢ = axᵢ dyᵢᵀ; ax rounded to a 16-bit dy's type
        NodeGemm d{false, true, r, n_out, T, 1.0f, {at(rows, i * r), rows->type, rk}, {at(dy, 0), dy->type, n_out}, beta, dest(1 + i, pos), r};
        if (is16(dy->type)) {
            d.in = dy->type;
            d.A.work = f32_at(out, work);
            work += slots16(r * T);
        }
        g.push_back(d);
        pos += r * n_out;
    }
    *end = work > first_work ? work : results;
    return g;
}

// A node's products on its data.
std::vector<NodeGemm> gemms_of(const ggml_tensor * t) {
    int64_t end = 0;
    if (is_rows(t)) return rows_gemms(t->src, rows_terms(t), bits_float((uint32_t) custom_node_bits(t)), (float *) t->data, &end);
    if (is_grads(t)) return grads_gemms(t->src, grads_terms(t), grads_into(t), (float *) t->data, &end);
    return {};
}

void run_cpu(ggml_tensor * dst, int ith, int nth) {
    if (run_node_as_gpu(dst, ith)) return;
    for (const NodeGemm & g : gemms_of(dst)) node_gemm_part(g, ith, nth);
}

void rows_cpu(ggml_tensor * dst, int ith, int nth, void *) { run_cpu(dst, ith, nth); }
void grads_cpu(ggml_tensor * dst, int ith, int nth, void *) { run_cpu(dst, ith, nth); }

void expect(bool ok, const char * what) {
    if (!ok) throw Error(std::string("lora_backward: ") + what);
}

bool plain_f32(const ggml_tensor * t) { return t->type == GGML_TYPE_F32 && ggml_is_contiguous(t) && ggml_n_dims(t) <= 2; }

// A gradients node's first srcs from its rows node: x, the rows node, and the rows node's own
// (contiguous) copy of each gradient dyᵢ. Returns k.
int64_t grads_args(ggml_tensor * rows, ggml_tensor ** args) {
    expect(is_rows(rows), "the gradients node takes a rows node");
    const int64_t k = rows_terms(rows);
    args[0] = rows->src[0];
    args[1] = rows;
    for (int64_t i = 0; i < k; ++i) args[2 + i] = rows->src[2 + k + i];
    return k;
}

} // namespace

ggml_tensor * lora_back_rows(ggml_context * ctx, ggml_tensor * x, ggml_tensor * A, const std::vector<LoraBackTerm> & terms, float scale) {
    const int64_t k = (int64_t) terms.size();
    expect(k >= 1 && k <= 3, "expected one to three adapters in a group");
    expect((x->type == GGML_TYPE_F32 || is16(x->type)) && ggml_is_contiguous(x) && ggml_n_dims(x) <= 2 && plain_f32(A) && A->ne[0] == x->ne[0] && A->ne[1] % k == 0,
           "expected contiguous x [n_in, T] (f32, f16 or bf16) and f32 A [n_in, r k]");
    const int64_t r = A->ne[1] / k, T = x->ne[1];
    ggml_tensor * args[8] = {x, A};
    for (int64_t i = 0; i < k; ++i) {
        ggml_tensor * B = terms[(size_t) i].b, * dy = terms[(size_t) i].dy;
        expect(plain_f32(B) && B->ne[0] == r, "expected contiguous f32 B [r, n_out]");
        if (!ggml_is_contiguous(dy)) dy = ggml_cont(ctx, dy);
        expect((dy->type == GGML_TYPE_F32 || is16(dy->type)) && ggml_nelements(dy) == B->ne[1] * T, "expected f32, f16 or bf16 dy [n_out, T]");
        expect(!is16(dy->type) || !is16(x->type) || dy->type == x->type, "expected one 16-bit type for x and dy");
        if (ggml_n_dims(dy) > 2 || dy->ne[0] != B->ne[1]) dy = ggml_reshape_2d(ctx, dy, B->ne[1], T);
        args[2 + i] = B;
        args[2 + k + i] = dy;
    }
    // two planes [r·k, T] (s·Aᵀx, da), then the work space's planes
    int64_t end = 0;
    rows_gemms(args, k, scale, nullptr, &end);
    const int64_t plane = r * k * T;
    return ggml_custom_4d(ctx, GGML_TYPE_F32, r * k, T, (end + plane - 1) / plane, 1, args, (int) (2 + 2 * k), rows_cpu, GGML_N_TASKS_MAX, as_userdata(float_bits(scale)));
}

ggml_tensor * lora_back_grads(ggml_context * ctx, ggml_tensor * rows) {
    ggml_tensor * args[GGML_MAX_SRC] = {};
    const int64_t k = grads_args(rows, args);
    int64_t end = 0;
    grads_gemms(args, k, false, nullptr, &end);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, end, 1, 1, 1, args, (int) (2 + k), grads_cpu, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * lora_back_grads_into(ggml_context * ctx, ggml_tensor * rows, ggml_tensor * dA, const std::vector<ggml_tensor *> & dB) {
    ggml_tensor * args[GGML_MAX_SRC] = {};
    const int64_t k = grads_args(rows, args), n_in = rows->src[0]->ne[0], rk = rows->ne[0], r = rk / k;
    expect((int64_t) dB.size() == k && plain_f32(dA) && dA->ne[0] == n_in && dA->ne[1] == rk, "expected f32 dA buffers [n_in, r k] and one dB buffer an adapter");
    args[2 + k] = dA;
    for (int64_t i = 0; i < k; ++i) {
        expect(plain_f32(dB[(size_t) i]) && dB[(size_t) i]->ne[0] == r && dB[(size_t) i]->ne[1] == args[2 + i]->ne[0], "expected f32 dB buffers [r, n_out]");
        args[3 + k + i] = dB[(size_t) i];
    }
    int64_t end = 0;
    grads_gemms(args, k, true, nullptr, &end);
    return ggml_custom_4d(ctx, GGML_TYPE_F32, std::max<int64_t>(end, 1), 1, 1, 1, args, (int) (3 + 2 * k), grads_cpu, GGML_N_TASKS_MAX, as_userdata(1));
}

ggml_tensor * lora_back_grad_a(ggml_context * ctx, ggml_tensor * grads, int64_t i) {
    expect(!grads_into(grads), "a node summing into the gradient buffers holds no gradients of its own");
    const int64_t k = grads_terms(grads), n_in = grads->src[0]->ne[0], r = grads->src[1]->ne[0] / k;
    return ggml_view_2d(ctx, grads, n_in, r, (size_t) n_in * sizeof(float), (size_t) (i * r * n_in) * sizeof(float));
}

ggml_tensor * lora_back_grad_b(ggml_context * ctx, ggml_tensor * grads, int64_t i) {
    expect(!grads_into(grads), "a node summing into the gradient buffers holds no gradients of its own");
    const int64_t k = grads_terms(grads), n_in = grads->src[0]->ne[0], rk = grads->src[1]->ne[0], r = rk / k;
    int64_t at = n_in * rk;
    for (int64_t j = 0; j < i; ++j) at += r * grads->src[2 + j]->ne[0];
    return ggml_view_2d(ctx, grads, r, grads->src[2 + i]->ne[0], (size_t) r * sizeof(float), (size_t) at * sizeof(float));
}

bool is_lora_back(const ggml_tensor * t) { return is_rows(t) || is_grads(t); }

std::vector<NodeGemm> lora_back_gemms(const ggml_tensor * node) { return gemms_of(node); }

double lora_back_flops(const ggml_tensor * node) {
    double flops = 0.0;
    for (const NodeGemm & g : gemms_of(node)) flops += gemm_flops(g);
    return flops;
}

} // namespace rrr
