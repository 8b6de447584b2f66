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

} // namespace

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
