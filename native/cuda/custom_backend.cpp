#include "custom_backend.h"
#include "backend.h"
#include "errors.h"
#include "run_node.h"

#include <cstdio>
#include <string>

#include "ggml-backend-impl.h"
#include "ggml-cuda.h"

namespace rrr {

namespace {

struct DeviceCtx {
    int device = 0;
    ggml_backend_buffer_type_t buft = nullptr; // ggml-cuda's, for `device`
    std::string name, description;
};

struct BackendCtx {
    ggml_backend_t gpu = nullptr; // ggml-cuda's backend on the same device, synchronised with ours
    cudaStream_t stream = nullptr;
    cublasHandle_t handle = nullptr;
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
bool dev_supports_op(ggml_backend_dev_t, const ggml_tensor * op) { return is_node_of_ours(op); }
bool dev_supports_buft(ggml_backend_dev_t d, ggml_backend_buffer_type_t buft) { return buft == dctx(d).buft; }
bool dev_offload_op(ggml_backend_dev_t, const ggml_tensor *) { return false; }

const char * backend_name(ggml_backend_t b) { return dev_name(b->device); }

void backend_free(ggml_backend_t b) {
    BackendCtx * c = &bctx(b);
    cudaSetDevice(c->dev_ctx.device);
    if (c->handle) cublasDestroy(c->handle);
    if (c->stream) cudaStreamDestroy(c->stream);
    delete c;
    delete b;
}

void backend_synchronize(ggml_backend_t b) { cudaStreamSynchronize(bctx(b).stream); }

// ggml-cuda's work before our nodes is waited for here, and theirs before returning: the
// scheduler synchronises the previous backend only for a split that copies no inputs, and
// ggml-cuda's next split may copy some (the host's token rows, positions).
ggml_status backend_graph_compute(ggml_backend_t b, ggml_cgraph * gf) {
    BackendCtx & c = bctx(b);
    cudaSetDevice(c.dev_ctx.device);
    ggml_backend_synchronize(c.gpu);
    for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
        ggml_tensor * t = ggml_graph_node(gf, i);
        if (is_view_op(t)) continue;
        if (!is_node_of_ours(t)) {
            std::fprintf(stderr, "%s: cannot run %s\n", backend_name(b), ggml_op_desc(t));
            return GGML_STATUS_FAILED;
        }
        const char * err = run_node_cuda(t, c.handle, c.stream);
        if (err) {
            std::fprintf(stderr, "%s: %s\n", backend_name(b), err);
            return GGML_STATUS_FAILED;
        }
    }
    return cudaStreamSynchronize(c.stream) == cudaSuccess ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
}

// A constant: ggml compares backends' guids by content, and this one names ours.
ggml_guid kGuid = {0x72, 0x72, 0x72, 0x2d, 0x61, 0x74, 0x74, 0x6e, 0x2d, 0x62, 0x77, 0x64, 0x2d, 0x63, 0x75, 0x01};

} // namespace

ggml_backend_t custom_backend_new(ggml_backend_t gpu) {
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
    ggml_backend_i iface = {};
    iface.get_name = backend_name;
    iface.free = backend_free;
    iface.synchronize = backend_synchronize;
    iface.graph_compute = backend_graph_compute;
    return new ggml_backend{&kGuid, iface, &c->dev, c};
}

} // namespace rrr
