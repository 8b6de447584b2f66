// Where a step's time goes, op kind by op kind. While an OpProfiler lives, its scheduler runs
// every node as a graph of its own and waits for it, so the wall time of each node is its
// kernel time plus one launch and one sync: the figures rank the ops, they are not the step's
// speed (the step itself is slower while profiled).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ggml-backend.h"

namespace rrr {

struct OpTime {
    std::string op;   // e.g. "MUL_MAT f16 x f32", "SOFT_MAX"
    std::string role; // what the graph builder made the op for, e.g. "bwd.mlp" (name_role); "other" when unnamed
    int64_t count = 0;
    double ms = 0;
};

// Graph builders name the nodes they make "@<role>" (e.g. "@re.attn": recomputed attention), so
// a profile can say which part of a step its time went to, beside which kind of op. Names every
// tensor of `ctx` made after `after` (all of them when nullptr) and returns the newest one, the
// mark for the next call.
ggml_tensor * name_role(ggml_context * ctx, ggml_tensor * after, const std::string & role);

// Work a graph asks for, per (op kind, role), without running it: a backend-independent cost
// model to set beside a profile. bytes = every operand and result each op touches, counted once
// per op (views and reshapes move nothing and are left out; GET_ROWS and SET_ROWS count the rows
// they move, not the whole table).
// flops = 2 * multiply-adds of MUL_MAT, OUT_PROD and FLASH_ATTN_EXT (its two products); 0 for other ops.
struct OpCensus {
    std::string op, role;
    int64_t count = 0;
    double bytes = 0, flops = 0;
};

// Whose kernels the bytes are counted for. graph: the ops as written. cuda: as ggml-cuda runs
// them, with the conversions it makes inside an op counted as entries of their own, in the op's
// role: a large f16/bf16 product converts an f32 input to the compute type (f16 products also
// their f16 result to f32), a quantized one quantizes its input to q8_1 (MMQ), flash attention
// converts f32 K and V to f16. The product then counts the operands it reads in the converted
// type. GGML_CUDA_CUBLAS_COMPUTE_TYPE is honoured as ggml-cuda does.
enum class CensusKernels { graph, cuda };

// Sums the census of several graphs (keyed like OpProfiler's).
class Census {
public:
    explicit Census(CensusKernels kernels) : kernels_(kernels) {}
    void add(const ggml_cgraph * gf);
    // Most bytes first.
    std::vector<OpCensus> list() const;
    // Runs of our own nodes over the graphs added (custom_runs_of in backend.h).
    int64_t custom_runs() const { return custom_runs_; }

private:
    OpCensus & entry(const std::string & op, const std::string & role);
    CensusKernels kernels_;
    std::map<std::string, OpCensus> by_key_;
    int64_t custom_runs_ = 0;
};

class OpProfiler {
public:
    explicit OpProfiler(ggml_backend_sched_t sched);
    ~OpProfiler();
    OpProfiler(const OpProfiler &) = delete;
    OpProfiler & operator=(const OpProfiler &) = delete;

    // Per (op kind, role), slowest first.
    std::vector<OpTime> result() const;

private:
    static bool on_eval(ggml_tensor * t, bool ask, void * self);

    ggml_backend_sched_t sched_;
    std::chrono::steady_clock::time_point started_;
    std::map<std::string, OpTime> by_op_;
};

} // namespace rrr
