// The compute devices one model runs on: a primary backend (GPU when asked for and present,
// else CPU) plus the CPU backend for ops the primary cannot run, and the scheduler over both.
// Devices come from ggml's backend registry, the only process-wide state the addon uses.
#pragma once
#include <string>
#include <vector>

#include "ggml-backend.h"

namespace rrr {

enum class DevicePref { Auto, Cpu, Cuda };

DevicePref parse_device(const std::string & s); // throws rrr::Error for unknown names

struct DeviceInfo {
    std::string name;
    std::string description;
    std::string type; // "cpu" | "gpu"
    size_t memory_free = 0;
    size_t memory_total = 0;
};
std::vector<DeviceInfo> list_devices();

// Where an allocated graph runs: the pieces the scheduler cut it into and the ops it placed off
// its first (primary) backend. On a GPU build those are ops the GPU backend cannot run, each a
// copy across the bus and a CPU kernel per step; a graph wholly on the GPU is one split.
struct Placement {
    int splits = 0;
    std::vector<std::string> off_primary;  // distinct op names, sorted
    // Distinct tensors the kernels read from the host's input tensors (an input, or a view of
    // one): a GPU scheduler copies each of them to the device, and ggml's cuts the graph in two
    // when one piece needs more than 30 (GGML_SCHED_MAX_SPLIT_INPUTS). Counted on any backend, so
    // the CPU can tell a graph that a GPU would cut.
    int host_inputs = 0;
    // Runs of our own nodes (GGML_OP_CUSTOM) in the graph's order, views aside: on a GPU each
    // hands the work to our CUDA stream and back (custom_backend.h). Counted on any backend, like
    // host_inputs.
    int custom_runs = 0;
    void merge(const Placement & o);
};
// The compute buffer a scheduler holds on the primary's device, whichever of its backends on
// that device's buffers holds it.
size_t compute_buffer_bytes(ggml_backend_sched_t sched, ggml_backend_t primary);
// Host inputs a graph's kernels read (Placement::host_inputs), counted before the scheduler
// allocates it: a GPU's scheduler then points each kernel at its device copy of the input.
int host_inputs_of(ggml_cgraph * gf);
// Placement::custom_runs of a graph.
int custom_runs_of(ggml_cgraph * gf);
// After ggml_backend_sched_alloc_graph, with host_inputs_of() taken before it.
Placement placement_of(ggml_backend_sched_t sched, ggml_cgraph * gf, int host_inputs);

// Views, reshapes, permutes and transposes (and leaves): nodes that run no kernel.
bool is_view_op(const ggml_tensor * t);

class Backends {
public:
    Backends(DevicePref pref, int n_threads);
    ~Backends();
    Backends(const Backends &) = delete;
    Backends & operator=(const Backends &) = delete;

    ggml_backend_t primary() const { return primary_; }
    ggml_backend_t cpu() const { return cpu_; }
    ggml_backend_sched_t sched() const { return sched_; }
    bool is_gpu() const { return primary_ != cpu_; }
    std::string name() const { return ggml_backend_name(primary_); }
    int n_threads() const { return n_threads_; }
    // A scheduler over the primary backend and `extra` when given (a backend for ops of our own
    // that shares the primary's buffers: custom_backend.h), `extra` first where it fronts the
    // primary, then the CPU for what a GPU cannot run (the caller frees it); nullptr when ggml
    // could not make one.
    ggml_backend_sched_t new_sched(size_t n_nodes, ggml_backend_t extra = nullptr, bool extra_first = false) const;

private:
    ggml_backend_t primary_ = nullptr;
    ggml_backend_t cpu_ = nullptr;
    ggml_backend_sched_t sched_ = nullptr;
    int n_threads_ = 1;
};

} // namespace rrr
