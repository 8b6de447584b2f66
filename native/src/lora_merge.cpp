#include "lora_merge.h"
#include "gpu_emulation.h"
#include "cpu_numbers.h"
#include "custom_node.h"
#include "errors.h"

#include <algorithm>
#include <vector>

namespace rrr {

namespace {

// The node's scalars in its userdata (custom_node.h): the scale's bits above, which outputs it
// writes in the low two bits.
uint64_t pack(float scale, MergeOut out) { return ((uint64_t) float_bits(scale) << 32) | (uint64_t) out; }

MergeOut out_of(const ggml_tensor * t) { return (MergeOut) (custom_node_bits(t) & 3u); }

// One task per run of W's rows (output units o): the row's s·Σ_r B[r, o]·A[:, r] is summed over
// A's contiguous columns, added to W's row and rounded once to the output's type, then written as the
// row, the transposed column, or both. Plain loops: the CPU merges only where asked (tests).
void lora_merge_cpu(ggml_tensor * dst, int ith, int nth, void *) {
    if (run_node_as_gpu(dst, ith)) return;
    const LoraMergeArgs a = lora_merge_args(dst);
    std::vector<float> row((size_t) a.n_in);
    for (int64_t o = ith; o < a.n_out; o += nth) {
        std::fill(row.begin(), row.end(), 0.0f);
        for (int64_t r = 0; r < a.r; ++r) {
            const float b = a.B[r + o * a.r];
            const float * Ar = a.A + r * a.n_in;
            for (int64_t i = 0; i < a.n_in; ++i) row[(size_t) i] += b * Ar[i];
        }
        for (int64_t i = 0; i < a.n_in; ++i) {
            const float v = load_as(a.W, a.type, i + o * a.n_in) + a.scale * row[(size_t) i];
            if (a.out) store_as(a.out, a.out_type, i + o * a.n_in, v);
            if (a.out_t) store_as(a.out_t, a.out_type, o + i * a.n_out, v);
        }
    }
}

} // namespace

bool lora_merge_supports(ggml_type t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

ggml_tensor * lora_merge(ggml_context * ctx, ggml_tensor * W, ggml_tensor * A, ggml_tensor * B, float scale, MergeOut out, ggml_type out_type) {
    if (!lora_merge_supports(W->type)) throw Error(std::string("lora_merge: cannot merge into ") + ggml_type_name(W->type) + " weights");
    if (out_type != W->type && out_type != GGML_TYPE_BF16) {
        throw Error(std::string("lora_merge: merges ") + ggml_type_name(W->type) + " weights into " + ggml_type_name(W->type) + " or bf16, not " + ggml_type_name(out_type));
    }
    if (A->type != GGML_TYPE_F32 || B->type != GGML_TYPE_F32) throw Error("lora_merge: expected f32 A and B");
    if (ggml_n_dims(W) > 2 || A->ne[0] != W->ne[0] || B->ne[1] != W->ne[1] || A->ne[1] != B->ne[0] || !ggml_is_contiguous(W) ||
        !ggml_is_contiguous(A) || !ggml_is_contiguous(B)) {
        throw Error("lora_merge: expected contiguous W [n_in, n_out], A [n_in, r], B [r, n_out]");
    }
    ggml_tensor * args[3] = {W, A, B};
    const int64_t planes = out == MergeOut::Both ? 2 : 1;
    return ggml_custom_4d(ctx, out_type, ggml_nelements(W) * planes, 1, 1, 1, args, 3, lora_merge_cpu, GGML_N_TASKS_MAX, as_userdata(pack(scale, out)));
}

ggml_tensor * lora_merge_part(ggml_context * ctx, ggml_tensor * node, MergeOut which) {
    const ggml_tensor * W = node->src[0];
    const MergeOut has = out_of(node);
    if (which == MergeOut::Both || ((int) has & (int) which) == 0) throw Error("lora_merge_part: the node does not hold that part");
    const size_t ts = ggml_type_size(node->type);
    if (which == MergeOut::Weight) return ggml_view_2d(ctx, node, W->ne[0], W->ne[1], W->ne[0] * ts, 0);
    const size_t offset = has == MergeOut::Both ? (size_t) ggml_nelements(W) * ts : 0;
    return ggml_view_2d(ctx, node, W->ne[1], W->ne[0], W->ne[1] * ts, offset);
}

bool is_lora_merge(const ggml_tensor * t) { return is_custom_node(t, lora_merge_cpu); }

LoraMergeArgs lora_merge_args(ggml_tensor * t) {
    const uint64_t u = custom_node_bits(t);
    const MergeOut out = out_of(t);
    LoraMergeArgs a;
    a.W = t->src[0]->data;
    a.A = (const float *) t->src[1]->data;
    a.B = (const float *) t->src[2]->data;
    a.type = t->src[0]->type;
    a.out_type = t->type;
    a.n_in = t->src[0]->ne[0];
    a.n_out = t->src[0]->ne[1];
    a.r = t->src[1]->ne[1];
    a.scale = bits_float((uint32_t) (u >> 32));
    char * base = (char *) t->data;
    if (out == MergeOut::Weight || out == MergeOut::Both) a.out = base;
    if (out == MergeOut::Transposed) a.out_t = base;
    if (out == MergeOut::Both) a.out_t = base + (size_t) ggml_nelements(t->src[0]) * ggml_type_size(t->type);
    return a;
}

} // namespace rrr
