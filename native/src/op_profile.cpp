#include "op_profile.h"
#include "backend.h"

#include <algorithm>

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
    return 0.0;
}

} // namespace

void add_census(const ggml_cgraph * gf, std::map<std::string, OpCensus> & into) {
    ggml_cgraph * g = const_cast<ggml_cgraph *>(gf); // ggml's graph accessors take non-const graphs
    for (int i = 0; i < ggml_graph_n_nodes(g); ++i) {
        const ggml_tensor * t = ggml_graph_node(g, i);
        if (is_view_op(t)) continue;
        const std::string op = op_key(t), role = role_of(t);
        OpCensus & c = into[op + '\n' + role];
        c.op = op;
        c.role = role;
        c.count += 1;
        double bytes = 0;
        if (t->op == GGML_OP_GET_ROWS) {
            // the rows gathered, not the table, and the indices
            bytes = (double) ggml_nbytes(t) + (double) (ggml_row_size(t->src[0]->type, t->src[0]->ne[0]) * (size_t) ggml_nrows(t)) +
                    (double) ggml_nbytes(t->src[1]);
        } else if (t->op == GGML_OP_SET_ROWS) {
            // the rows scattered (read, then written into the destination) and the indices
            bytes = (double) ggml_nbytes(t->src[0]) +
                    (double) (ggml_row_size(t->type, t->ne[0]) * (size_t) ggml_nrows(t->src[0])) + (double) ggml_nbytes(t->src[1]);
        } else {
            bytes = (double) ggml_nbytes(t);
            for (int k = 0; k < GGML_MAX_SRC; ++k) {
                // a CPY's second source is where it writes, already counted as its result
                if (t->src[k] && !(t->op == GGML_OP_CPY && k == 1)) bytes += (double) ggml_nbytes(t->src[k]);
            }
        }
        c.bytes += bytes;
        c.flops += flops_of(t);
    }
}

std::vector<OpCensus> census_list(const std::map<std::string, OpCensus> & by_key) {
    std::vector<OpCensus> out;
    for (const auto & kv : by_key) out.push_back(kv.second);
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
