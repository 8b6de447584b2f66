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

} // namespace

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
    OpTime & o = p->by_op_[op_key(t)];
    o.count += 1;
    o.ms += std::chrono::duration<double, std::milli>(now - p->started_).count();
    return true;
}

std::vector<OpTime> OpProfiler::result() const {
    std::vector<OpTime> out;
    for (const auto & [k, v] : by_op_) {
        out.push_back(v);
        out.back().op = k;
    }
    std::sort(out.begin(), out.end(), [](const OpTime & a, const OpTime & b) { return a.ms > b.ms; });
    return out;
}

} // namespace rrr
