#include "custom_backend.h"
#include "backend.h"
#include "errors.h"
#include "run_node.h"

#include <cstdio>
#include <string>

#include "ggml-backend-impl.h"
#include "ggml-impl.h" // ggml_graph_view, and ggml_cgraph whole
#include "ggml-cuda.h"

namespace rrr {

namespace {

struct DeviceCtx {
    int device = 0;
    ggml_backend_dev_t gpu_dev = nullptr;      // ggml-cuda's, whose ops a front runs too
    bool front = false;
    ggml_backend_buffer_type_t buft = nullptr; // ggml-cuda's, for `device`
    std::string name, description;
};

struct BackendCtx {
    ggml_backend_t gpu = nullptr; // ggml-cuda's backend on the same device, synchronised with ours
    cudaStream_t stream = nullptr;
    cublasHandle_t handle = nullptr;
    // ggml-cuda's events (a cudaEvent_t each): one recorded on its stream and waited for on
    // ours, one recorded on ours and waited for on its. Null where its build has none; then the
    // host waits.
    ggml_backend_event_t theirs_done = nullptr, ours_done = nullptr;
    ggml_backend_device dev{};
    DeviceCtx dev_ctx;
};

DeviceCtx & dctx(ggml_backend_dev_t d) { return *(DeviceCtx *) d->context; }
BackendCtx & bctx(ggml_backend_t b) { return *(BackendCtx *) b->context; }

const char * dev_name(ggml_backend_dev_t d) { return dctx(d).name.c_str(); }
const char * dev_description(ggml_backend_dev_t d) { return dctx(d).description.c_str(); }
void dev_memory(ggml_backend_dev_t d, size_t * free, size_t * total) { ggml_backend_cuda_get_device_memory(dctx(d).device, free, total); }
enum ggml_backend_dev_type dev_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_GPU; }
void dev_props(ggml_backend_dev_t d, ggml_backend_dev_props * p) {
    p->name = dev_name(d);
    p->description = dev_description(d);
    dev_memory(d, &p->memory_free, &p->memory_total);
    p->type = GGML_BACKEND_DEVICE_TYPE_GPU;
    p->device_id = nullptr;
    p->caps = {/* async */ false, /* host_buffer */ false, /* buffer_from_host_ptr */ false, /* events */ false, /* mmap_support */ false};
}
ggml_backend_buffer_type_t dev_buft(ggml_backend_dev_t d) { return dctx(d).buft; }
bool dev_supports_op(ggml_backend_dev_t d, const ggml_tensor * op) {
    return is_node_of_ours(op) || (dctx(d).front && ggml_backend_dev_supports_op(dctx(d).gpu_dev, op));
}
bool dev_supports_buft(ggml_backend_dev_t d, ggml_backend_buffer_type_t buft) { return buft == dctx(d).buft; }
bool dev_offload_op(ggml_backend_dev_t d, const ggml_tensor * op) {
    return dctx(d).front && !is_node_of_ours(op) && ggml_backend_dev_offload_op(dctx(d).gpu_dev, op);
}

const char * backend_name(ggml_backend_t b) { return dev_name(b->device); }

void backend_free(ggml_backend_t b) {
    BackendCtx * c = &bctx(b);
    cudaSetDevice(c->dev_ctx.device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->handle) cublasDestroy(c->handle);
    if (c->stream) cudaStreamDestroy(c->stream);
    if (c->theirs_done) ggml_backend_event_free(c->theirs_done);
    if (c->ours_done) ggml_backend_event_free(c->ours_done);
    delete c;
    delete b;
}

cudaEvent_t cuda_event(ggml_backend_event_t e) { return (cudaEvent_t) e->context; }

// ggml-cuda's stream waits for ours, so waiting for it covers both.
void backend_synchronize(ggml_backend_t b) {
    BackendCtx & c = bctx(b);
    const cudaError_t e = cudaStreamSynchronize(c.stream);
    if (e != cudaSuccess) std::fprintf(stderr, "%s: %s\n", backend_name(b), cudaGetErrorString(e));
    ggml_backend_synchronize(c.gpu);
}

// Our stream starts after ggml-cuda's work so far.
void follow_theirs(BackendCtx & c) {
    if (c.theirs_done) {
        ggml_backend_event_record(c.theirs_done, c.gpu);
        cudaStreamWaitEvent(c.stream, cuda_event(c.theirs_done), 0);
    } else {
        ggml_backend_synchronize(c.gpu);
    }
}

// ggml-cuda's stream goes on after our work so far.
bool lead_theirs(BackendCtx & c) {
    if (c.ours_done) {
        if (cudaEventRecord(cuda_event(c.ours_done), c.stream) != cudaSuccess) return false;
        ggml_backend_event_wait(c.gpu, c.ours_done);
        return true;
    }
    return cudaStreamSynchronize(c.stream) == cudaSuccess;
}

// Runs nodes [i0, i1) of ours on our stream.
bool run_ours(ggml_backend_t b, ggml_cgraph * gf, int i0, int i1) {
    BackendCtx & c = bctx(b);
    for (int i = i0; i < i1; ++i) {
        ggml_tensor * t = ggml_graph_node(gf, i);
        if (is_view_op(t)) continue;
        if (!is_node_of_ours(t)) {
            std::fprintf(stderr, "%s: cannot run %s\n", backend_name(b), ggml_op_desc(t));
            return false;
        }
        if (const char * err = run_node_cuda(t, c.handle, c.stream)) {
            std::fprintf(stderr, "%s: %s\n", backend_name(b), err);
            return false;
        }
    }
    return true;
}

// The graph's runs of our nodes go on our stream, and (for a front) the runs of ggml-cuda's ops
// between them to ggml-cuda as views of the graph, each stream waiting for the other's last
// run on the device: the host never waits between them, so it queues the next run while the
// GPU works. As the scheduler's own pieces (not a front) the scheduler waits on the host for
// each backend before the next one's piece, so ours waits for its own work before returning.
ggml_status backend_graph_compute(ggml_backend_t b, ggml_cgraph * gf) {
    BackendCtx & c = bctx(b);
    cudaSetDevice(c.dev_ctx.device);
    const int n = ggml_graph_n_nodes(gf);
    bool ours_last = false;
    for (int i = 0; i < n;) {
        // Views run nothing: they go with the run of the node after them.
        int k = i;
        while (k < n && is_view_op(ggml_graph_node(gf, k))) ++k;
        if (k == n) break;
        const bool ours = is_node_of_ours(ggml_graph_node(gf, k));
        int j = k + 1;
        while (j < n && (is_view_op(ggml_graph_node(gf, j)) || is_node_of_ours(ggml_graph_node(gf, j)) == ours)) ++j;
        // Not a front, ggml's ops reach run_ours, which says it cannot run them.
        if (ours || !c.dev_ctx.front) {
            if (!ours_last) follow_theirs(c);
            if (!run_ours(b, gf, i, j)) return GGML_STATUS_FAILED;
        } else {
            if (ours_last && !lead_theirs(c)) return GGML_STATUS_FAILED;
            ggml_cgraph view = ggml_graph_view(gf, i, j);
            const ggml_status st = ggml_backend_graph_compute_async(c.gpu, &view);
            if (st != GGML_STATUS_SUCCESS) return st;
        }
        ours_last = ours;
        i = j;
    }
    if (!c.dev_ctx.front) return cudaStreamSynchronize(c.stream) == cudaSuccess ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
    // A fault of a kernel queued here shows at the next wait (backend_synchronize says which).
    return ours_last && !lead_theirs(c) ? GGML_STATUS_FAILED : GGML_STATUS_SUCCESS;
}

// A constant: ggml compares backends' guids by content, and this one names ours.
ggml_guid kGuid = {0x72, 0x72, 0x72, 0x2d, 0x61, 0x74, 0x74, 0x6e, 0x2d, 0x62, 0x77, 0x64, 0x2d, 0x63, 0x75, 0x01};

} // namespace

ggml_backend_t custom_backend_new(ggml_backend_t gpu, bool front) {
    if (!gpu || !ggml_backend_is_cuda(gpu)) throw Error("our nodes' backend: the GPU backend is not ggml-cuda's");
    ggml_backend_buffer_type_t buft = ggml_backend_get_default_buffer_type(gpu);
    int device = -1;
    for (int i = 0; i < ggml_backend_cuda_get_device_count(); ++i) {
        if (ggml_backend_cuda_buffer_type(i) == buft) device = i;
    }
    if (device < 0) throw Error("our nodes' backend: cannot tell the GPU backend's device");
    auto * c = new BackendCtx;
    c->gpu = gpu;
    c->dev_ctx.device = device;
    c->dev_ctx.buft = buft;
    c->dev_ctx.gpu_dev = ggml_backend_get_device(gpu);
    c->dev_ctx.front = front;
    c->dev_ctx.name = "RRR-NODES" + std::to_string(device);
    c->dev_ctx.description = std::string("rrr-native's own nodes beside ") + ggml_backend_name(gpu);
    c->dev.iface = {dev_name, dev_description, dev_memory, dev_type, dev_props, /* init_backend */ nullptr, dev_buft,
                    /* get_host_buffer_type */ nullptr, /* buffer_from_host_ptr */ nullptr, dev_supports_op, dev_supports_buft, dev_offload_op,
                    /* event_new */ nullptr, /* event_free */ nullptr, /* event_synchronize */ nullptr};
    c->dev.reg = nullptr;
    c->dev.context = &c->dev_ctx;
    cudaSetDevice(device);
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess || cublasCreate(&c->handle) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->handle, c->stream) != CUBLAS_STATUS_SUCCESS) {
        if (c->handle) cublasDestroy(c->handle);
        if (c->stream) cudaStreamDestroy(c->stream);
        delete c;
        throw Error("our nodes' backend: could not make a CUDA stream and cuBLAS handle");
    }
    // As the scheduler's own pieces the scheduler waits on the host between them anyway.
    if (front) {
        c->theirs_done = ggml_backend_event_new(c->dev_ctx.gpu_dev);
        c->ours_done = ggml_backend_event_new(c->dev_ctx.gpu_dev);
        if (!c->theirs_done || !c->ours_done) {
            if (c->theirs_done) ggml_backend_event_free(c->theirs_done);
            if (c->ours_done) ggml_backend_event_free(c->ours_done);
            c->theirs_done = c->ours_done = nullptr;
        }
    }
    ggml_backend_i iface = {};
    iface.get_name = backend_name;
    iface.free = backend_free;
    iface.synchronize = backend_synchronize;
    iface.graph_compute = backend_graph_compute;
    return new ggml_backend{&kGuid, iface, &c->dev, c};
}

} // namespace rrr
