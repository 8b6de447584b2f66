#include "backend.h"
#include "errors.h"

#include <algorithm>
#include <thread>
#include <unordered_set>

#include "ggml-cpu.h"

namespace rrr {

// Large enough for the forward graph of the deepest supported models (~90 nodes per layer).
static constexpr size_t kMaxGraphNodes = 16384;

DevicePref parse_device(const std::string & s) {
    if (s == "auto" || s.empty()) return DevicePref::Auto;
    if (s == "cpu") return DevicePref::Cpu;
    if (s == "cuda" || s == "gpu") return DevicePref::Cuda;
    throw Error("--device: unknown device '" + s + "' (expected auto, cpu or cuda)");
}

std::vector<DeviceInfo> list_devices() {
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        const auto t = ggml_backend_dev_type(d);
        if (t != GGML_BACKEND_DEVICE_TYPE_CPU && t != GGML_BACKEND_DEVICE_TYPE_GPU) continue;
        DeviceInfo info;
        info.name = ggml_backend_dev_name(d);
        info.description = ggml_backend_dev_description(d);
        info.type = t == GGML_BACKEND_DEVICE_TYPE_GPU ? "gpu" : "cpu";
        ggml_backend_dev_memory(d, &info.memory_free, &info.memory_total);
        out.push_back(info);
    }
    return out;
}

Backends::Backends(DevicePref pref, int n_threads) {
    n_threads_ = n_threads > 0 ? n_threads : (int) std::max(1u, std::thread::hardware_concurrency());
    cpu_ = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    if (!cpu_) throw Error("could not initialise the CPU backend");
    ggml_backend_cpu_set_n_threads(cpu_, n_threads_);
    primary_ = cpu_;
    if (pref != DevicePref::Cpu) {
        ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
        if (gpu) {
            primary_ = ggml_backend_dev_init(gpu, nullptr);
            if (!primary_) {
                ggml_backend_free(cpu_);
                throw Error(std::string("could not initialise GPU device ") + ggml_backend_dev_name(gpu));
            }
        } else if (pref == DevicePref::Cuda) {
            ggml_backend_free(cpu_);
            throw Error("--device cuda: no CUDA device available (this build has CUDA: "
#ifdef RRR_HAVE_CUDA
                        "yes"
#else
                        "no; reinstall with a CUDA toolkit that has cuBLAS, or RRR_CUDA=1"
#endif
                        ")");
        }
    }
    sched_ = new_sched(kMaxGraphNodes);
    if (!sched_) {
        if (primary_ != cpu_) ggml_backend_free(primary_);
        ggml_backend_free(cpu_);
        throw Error("could not create the ggml scheduler");
    }
}

Backends::~Backends() {
    if (sched_) ggml_backend_sched_free(sched_);
    if (primary_ && primary_ != cpu_) ggml_backend_free(primary_);
    if (cpu_) ggml_backend_free(cpu_);
}

ggml_backend_sched_t Backends::new_sched(size_t n_nodes, ggml_backend_t extra, bool extra_first) const {
    // The scheduler gives an op to the first backend that can run it on its buffer's type.
    std::vector<ggml_backend_t> list{primary_};
    if (extra) list.insert(extra_first ? list.begin() : list.end(), extra);
    if (primary_ != cpu_) list.push_back(cpu_);
    return ggml_backend_sched_new(list.data(), nullptr, (int) list.size(), n_nodes, false, true);
}

void Placement::merge(const Placement & o) {
    splits = std::max(splits, o.splits);
    host_inputs = std::max(host_inputs, o.host_inputs);
    custom_runs = std::max(custom_runs, o.custom_runs);
    std::vector<std::string> all(off_primary);
    all.insert(all.end(), o.off_primary.begin(), o.off_primary.end());
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    off_primary = std::move(all);
}

bool is_view_op(const ggml_tensor * t) {
    return t->op == GGML_OP_NONE || t->op == GGML_OP_VIEW || t->op == GGML_OP_RESHAPE || t->op == GGML_OP_PERMUTE ||
           t->op == GGML_OP_TRANSPOSE;
}

size_t compute_buffer_bytes(ggml_backend_sched_t sched, ggml_backend_t primary) {
    // Backends on one buffer type share one buffer, counted at the first of them only: with our
    // backend fronting ggml-cuda (custom_backend.h) that first one is ours, and the primary's is 0.
    size_t bytes = 0;
    for (int i = 0; i < ggml_backend_sched_get_n_backends(sched); ++i) {
        ggml_backend_t b = ggml_backend_sched_get_backend(sched, i);
        if (ggml_backend_get_default_buffer_type(b) == ggml_backend_get_default_buffer_type(primary)) bytes += ggml_backend_sched_get_buffer_size(sched, b);
    }
    return bytes;
}

int host_inputs_of(ggml_cgraph * gf) {
    std::unordered_set<const ggml_tensor *> inputs;
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        const ggml_tensor * t = ggml_graph_node(gf, i);
        if (is_view_op(t)) continue;
        for (const ggml_tensor * s : t->src) {
            // A view's view_src is the tensor it finally views, however many views deep.
            if (s && ((s->flags & GGML_TENSOR_FLAG_INPUT) || (s->view_src && (s->view_src->flags & GGML_TENSOR_FLAG_INPUT)))) inputs.insert(s);
        }
    }
    return (int) inputs.size();
}

int custom_runs_of(ggml_cgraph * gf) {
    int runs = 0;
    bool in_run = false;
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        const ggml_tensor * t = ggml_graph_node(gf, i);
        if (is_view_op(t)) continue;
        const bool custom = t->op == GGML_OP_CUSTOM;
        if (custom && !in_run) runs += 1;
        in_run = custom;
    }
    return runs;
}

Placement placement_of(ggml_backend_sched_t sched, ggml_cgraph * gf, int host_inputs) {
    Placement p;
    p.splits = ggml_backend_sched_get_n_splits(sched);
    p.host_inputs = host_inputs;
    p.custom_runs = custom_runs_of(gf);
    ggml_backend_t primary = ggml_backend_sched_get_backend(sched, 0);
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        ggml_tensor * t = ggml_graph_node(gf, i);
        // Views and reshapes cost nothing wherever they are placed.
        if (is_view_op(t)) continue;
        ggml_backend_t at = ggml_backend_sched_get_tensor_backend(sched, t);
        // A backend on the primary's own buffers (custom_backend.h) runs on the same device.
        if (at && at != primary && ggml_backend_get_default_buffer_type(at) != ggml_backend_get_default_buffer_type(primary)) {
            p.off_primary.push_back(ggml_op_desc(t));
        }
    }
    p.merge(Placement{});  // sorts and removes repeats
    return p;
}

} // namespace rrr
