#include "op_profile.h"
#include "attn_backward.h"
#include "backend.h"
#include "lora_backward.h"
#include "lora_merge.h"
#include "loss_head.h"
#include "product16.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace rrr {

namespace {

// Matmul-like ops are told apart by operand types: an f16 weight GEMM and an f32 attention
// product are different kernels with different costs.
std::string op_key(const ggml_tensor * t) {
    std::string k = ggml_op_desc(t);
    if ((t->op == GGML_OP_MUL_MAT || t->op == GGML_OP_OUT_PROD) && t->src[0] && t->src[1]) {
        k += std::string(" ") + ggml_type_name(t->src[0]->type) + " x " + ggml_type_name(t->src[1]->type);
    }
    return k;
}

std::string role_of(const ggml_tensor * t) { return t->name[0] == '@' ? std::string(t->name + 1) : std::string("other"); }

// The share of an [L, L] tensor the attention node's steps compute: (n + 1) / (2 n) with n
// query blocks (attn_query_blocks), all of it without a work space (the CPU's own loops).
double seen_share(const AttnBackwardShape & s) {
    if (s.scratch_seqs == 0) return 1.0;
    const double n = (double) attn_query_blocks(s.L);
    return (n + 1.0) / (2.0 * n);
}

double flops_of(const ggml_tensor * t) {
    // mul_mat: each result element is a dot product over src0's rows; out_prod: over src0's columns.
    if (t->op == GGML_OP_MUL_MAT) return 2.0 * (double) t->src[0]->ne[0] * (double) ggml_nelements(t);
    if (t->op == GGML_OP_OUT_PROD) return 2.0 * (double) t->src[0]->ne[1] * (double) ggml_nelements(t);
    if (t->op == GGML_OP_FLASH_ATTN_EXT) {
        // Q Kᵀ and P V for every (query, key) pair of every head, masked ones included (as the two
        // products of the plain path count them).
        const ggml_tensor * q = t->src[0], * k = t->src[1], * v = t->src[2];
        return 2.0 * (double) q->ne[1] * (double) k->ne[1] * (double) q->ne[2] * (double) q->ne[3] * (double) (k->ne[0] + v->ne[0]);
    }
    if (is_attn_backward(t)) {
        // Its five products (attn_backward_steps.h) over the (query, key) pairs of every query
        // head: S, dP, dV, dQ and dK, 2 hd flops each. Without a work space over every pair,
        // masked ones included; with one, over the blocks the causal mask does not zero whole.
        const AttnBackwardShape s = attn_backward_shape(t);
        return 10.0 * (double) s.L * (double) s.L * (double) s.hd * (double) s.n_head * (double) s.B * seen_share(s);
    }
    if (is_lora_merge(t)) {
        // s·B·A summed once per merged weight (W [n_in, n_out], A [n_in, r]), as ggml's merge
        // counted its delta's product.
        return 2.0 * (double) t->src[1]->ne[1] * (double) ggml_nelements(t->src[0]);
    }
    if (is_lora_back(t)) return lora_back_flops(t);
    if (is_loss_head(t)) return loss_head_flops(t);
    if (is_product16(t)) return gemm_flops(product16_gemm(t));
    return 0.0;
}

// What an op reads and writes as the graph writes it.
double graph_bytes(const ggml_tensor * t) {
    if (is_loss_head(t)) return loss_head_bytes(t); // its steps, not its work space's size
    if (is_attn_backward(t)) {
        // The GPU's steps, each operand once: [L, L] per query head written by two products,
        // softmax (read, write) and its gradient (two reads, a write), read by three products:
        // 10 times; Q and dO (and dQ) copied by head and back, read and written by products: 11
        // times their size; K and V (and dK, dV) 13 times.
        const AttnBackwardShape s = attn_backward_shape(t);
        const double P = (double) s.L * (double) s.L * (double) s.n_head * (double) s.B * seen_share(s);
        const double nq = (double) (s.hd * s.n_head * s.T()), nkv = (double) (s.hd * s.n_head_kv * s.T());
        // With f16 copies (half): scores and dP 4 bytes written and 4 read each, P and dS 2
        // written and read twice each: 28 bytes per [L, L] number. Q, dO and K read (4), copied
        // (2) and read by two products (2 each), V by one; the gradients as before (12 each).
        if (s.half && s.scratch_seqs > 0) return 28.0 * P + 32.0 * nq + 42.0 * nkv;
        return 4.0 * (10.0 * P + 11.0 * nq + 13.0 * nkv);
    }
    if (t->op == GGML_OP_GET_ROWS) {
        // the rows gathered, not the table, and the indices
        return (double) ggml_nbytes(t) + (double) (ggml_row_size(t->src[0]->type, t->src[0]->ne[0]) * (size_t) ggml_nrows(t)) +
               (double) ggml_nbytes(t->src[1]);
    }
    if (t->op == GGML_OP_SET_ROWS) {
        // the rows scattered (read, then written into the destination) and the indices
        return (double) ggml_nbytes(t->src[0]) + (double) (ggml_row_size(t->type, t->ne[0]) * (size_t) ggml_nrows(t->src[0])) +
               (double) ggml_nbytes(t->src[1]);
    }
    double bytes = (double) ggml_nbytes(t);
    for (int k = 0; k < GGML_MAX_SRC; ++k) {
        // a CPY's second source is where it writes, already counted as its result
        if (t->src[k] && !(t->op == GGML_OP_CPY && k == 1)) bytes += (double) ggml_nbytes(t->src[k]);
    }
    return bytes;
}

struct Conversion {
    std::string op;
    double bytes;
};

// The compute type ggml-cuda's cuBLAS path gives a float product (ggml_cuda_mul_mat_cublas).
ggml_type cublas_type(const ggml_tensor * t) {
    ggml_type ct = t->src[0]->type;
    if (t->op_params[0] == GGML_PREC_F32) ct = GGML_TYPE_F32;
    if (const char * env = std::getenv("GGML_CUDA_CUBLAS_COMPUTE_TYPE")) {
        std::string e = env;
        for (char & ch : e) ch = (char) std::tolower((unsigned char) ch);
        if (e == "f32" || e == "fp32") ct = GGML_TYPE_F32;
        else if (e == "f16" || e == "fp16") ct = GGML_TYPE_F16;
        else if (e == "bf16") ct = GGML_TYPE_BF16;
    }
    return ct;
}

// Bytes of an operand read in `type` after ggml-cuda converted it there (a conversion is
// recorded), or as it is.
double operand_as(const ggml_tensor * x, ggml_type type, const char * what, std::vector<Conversion> & conv) {
    if (x->type == type) return (double) ggml_nbytes(x);
    const double converted = (double) ggml_nelements(x) * (double) ggml_type_size(type) / (double) ggml_blck_size(type);
    conv.push_back({std::string("CONVERT ") + ggml_type_name(x->type) + " to " + ggml_type_name(type) + " (" + what + ")",
                    (double) ggml_nbytes(x) + converted});
    return converted;
}

// What `t`'s own kernel moves on ggml-cuda (an NVIDIA GPU of Ampere or later), and the
// conversions it runs around it.
double cuda_bytes(const ggml_tensor * t, std::vector<Conversion> & conv) {
    if (t->op == GGML_OP_MUL_MAT) {
        const ggml_tensor * a = t->src[0], * b = t->src[1];
        const double out = (double) ggml_nbytes(t);
        // Up to 16 f32 columns go to ggml's own vector and small-batch kernels, which convert nothing.
        if (b->type == GGML_TYPE_F32 && b->ne[1] <= 16) return graph_bytes(t);
        if (ggml_is_quantized(a->type)) {
            // MMQ: the input quantized to q8_1 blocks of 128 values in 144 bytes
            const double q = (double) ggml_nelements(b) * 144.0 / 128.0;
            conv.push_back({"QUANTIZE f32 to q8_1 (MMQ input)", (double) ggml_nbytes(b) + q});
            return (double) ggml_nbytes(a) + q + out;
        }
        const ggml_type ct = cublas_type(t);
        double bytes = operand_as(a, ct, "cuBLAS src0", conv) + operand_as(b, ct, "cuBLAS src1", conv);
        if (ct == GGML_TYPE_F16) {
            // f16 products write an f16 result, converted to the f32 one after
            const double half = (double) ggml_nelements(t) * 2.0;
            conv.push_back({"CONVERT f16 to f32 (cuBLAS result)", half + out});
            return bytes + half;
        }
        return bytes + out;
    }
    if (t->op == GGML_OP_FLASH_ATTN_EXT) {
        double bytes = (double) ggml_nbytes(t) + (double) ggml_nbytes(t->src[0]);
        bytes += operand_as(t->src[1], GGML_TYPE_F16, "flash-attn K", conv);
        bytes += operand_as(t->src[2], GGML_TYPE_F16, "flash-attn V", conv);
        for (int k = 3; k < GGML_MAX_SRC; ++k) {
            if (t->src[k]) bytes += (double) ggml_nbytes(t->src[k]);
        }
        return bytes;
    }
    return graph_bytes(t);
}

} // namespace

OpCensus & Census::entry(const std::string & op, const std::string & role) {
    OpCensus & c = by_key_[op + '\n' + role];
    c.op = op;
    c.role = role;
    return c;
}

void Census::add(const ggml_cgraph * gf) {
    ggml_cgraph * g = const_cast<ggml_cgraph *>(gf); // ggml's graph accessors take non-const graphs
    custom_runs_ += custom_runs_of(g);
    for (int i = 0; i < ggml_graph_n_nodes(g); ++i) {
        const ggml_tensor * t = ggml_graph_node(g, i);
        if (is_view_op(t)) continue;
        const std::string role = role_of(t);
        std::vector<Conversion> conv;
        OpCensus & c = entry(op_key(t), role);
        c.count += 1;
        c.bytes += kernels_ == CensusKernels::cuda ? cuda_bytes(t, conv) : graph_bytes(t);
        c.flops += flops_of(t);
        for (const Conversion & v : conv) {
            OpCensus & e = entry(v.op, role);
            e.count += 1;
            e.bytes += v.bytes;
        }
    }
}

std::vector<OpCensus> Census::list() const {
    std::vector<OpCensus> out;
    for (const auto & kv : by_key_) out.push_back(kv.second);
    std::sort(out.begin(), out.end(), [](const OpCensus & a, const OpCensus & b) { return a.bytes > b.bytes; });
    return out;
}

ggml_tensor * name_role(ggml_context * ctx, ggml_tensor * after, const std::string & role) {
    ggml_tensor * last = after;
    for (ggml_tensor * t = after ? ggml_get_next_tensor(ctx, after) : ggml_get_first_tensor(ctx); t; t = ggml_get_next_tensor(ctx, t)) {
        ggml_format_name(t, "@%s", role.c_str());
        last = t;
    }
    return last;
}

OpProfiler::OpProfiler(ggml_backend_sched_t sched) : sched_(sched) {
    ggml_backend_sched_set_eval_callback(sched_, &OpProfiler::on_eval, this);
}

OpProfiler::~OpProfiler() { ggml_backend_sched_set_eval_callback(sched_, nullptr, nullptr); }

// The scheduler asks (ask = true) before a node, runs it alone when told yes, synchronises,
// then calls again (ask = false): the time between the two calls is that node's.
bool OpProfiler::on_eval(ggml_tensor * t, bool ask, void * self) {
    auto * p = static_cast<OpProfiler *>(self);
    if (is_view_op(t)) return false;
    const auto now = std::chrono::steady_clock::now();
    if (ask) {
        p->started_ = now;
        return true;
    }
    const std::string op = op_key(t), role = role_of(t);
    OpTime & o = p->by_op_[op + '\n' + role];
    o.op = op;
    o.role = role;
    o.count += 1;
    o.ms += std::chrono::duration<double, std::milli>(now - p->started_).count();
    return true;
}

std::vector<OpTime> OpProfiler::result() const {
    std::vector<OpTime> out;
    for (const auto & kv : by_op_) out.push_back(kv.second);
    std::sort(out.begin(), out.end(), [](const OpTime & a, const OpTime & b) { return a.ms > b.ms; });
    return out;
}

} // namespace rrr
