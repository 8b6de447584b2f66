#include "gpu_emulation.h"

#include <cstdlib>
#include <cstring>

#ifdef RRR_CUDA_EMU
#include <cstdio>
#include <mutex>

#include "attn_backward.h"
#include "loss_head.h"
#include "run_node.h"
#endif

namespace rrr {

#ifdef RRR_CUDA_EMU

bool gpu_emulation_built() { return true; }

namespace {

bool asked() {
    const char * v = std::getenv("RRR_EMULATE_CUDA");
    return v && std::strcmp(v, "1") == 0;
}

// What a GPU's steps need that a CPU's node may go without.
bool has_gpu_steps(ggml_tensor * t) {
    if (is_attn_backward(t)) return attn_backward_args(t).scratch_seqs > 0;
    if (is_loss_head(t)) return !loss_head_args(t).chunks.empty();
    return true;
}

} // namespace

bool run_node_as_gpu(ggml_tensor * node, int ith) {
    if (!asked() || !has_gpu_steps(node)) return false;
    if (ith != 0) return true;
    // said once, so that a test's log shows the emulation ran
    static std::once_flag said;
    std::call_once(said, [] { std::fprintf(stderr, "rrr-native: RRR_EMULATE_CUDA=1: our nodes run their CUDA code on the CPU, emulated\n"); });
    cublasHandle_t handle = nullptr;
    cublasCreate(&handle);
    const char * err = run_node_cuda(node, handle, nullptr);
    if (!err && cudaGetLastError() != cudaSuccess) err = "a kernel failed";
    cublasDestroy(handle);
    if (err) GGML_ABORT("emulated CUDA, node %s (%s): %s", node->name, ggml_op_desc(node), err);
    return true;
}

#else

bool gpu_emulation_built() { return false; }
bool run_node_as_gpu(ggml_tensor *, int) { return false; }

#endif

} // namespace rrr
