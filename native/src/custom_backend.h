// A ggml backend that runs only our own nodes (GGML_OP_CUSTOM: attn_backward.h,
// swiglu_backward.h, lora_merge.h, lora_backward.h, loss_head.h,
// norm_backward.h) on a CUDA device, beside ggml-cuda: it claims those nodes and nothing
// else, and reads and writes ggml-cuda's own buffers (it reports ggml-cuda's buffer type as its
// own), so the scheduler copies nothing between them; ggml-cuda cannot run a GGML_OP_CUSTOM
// node, which without this goes to the CPU. Built only with CUDA (native/cuda/custom_backend.cpp).
//
// As the scheduler's own pieces between ggml-cuda's, each run of our nodes costs two waits on
// the host (the scheduler waits for the backend before the next one's piece), during which the
// GPU has nothing queued; the 1.5B shape's best plan has 143 runs a micro-batch. As a front
// (TrainerOptions.nodeWaits 'device') it claims ggml-cuda's ops as well and hands each run of them
// to ggml-cuda as a view of the graph, and our stream and ggml-cuda's wait for each other on the
// device (events).
#pragma once
#include "ggml-backend.h"

namespace rrr {

// For the CUDA backend `gpu` (which must outlive it; ggml_backend_free frees it); `front`: it
// claims ggml-cuda's ops too and goes before `gpu` in a scheduler's list (Backends::new_sched),
// else only ours, after it. Throws rrr::Error when `gpu` is not ggml-cuda's or the device's
// stream or cuBLAS cannot be made.
ggml_backend_t custom_backend_new(ggml_backend_t gpu, bool front);

} // namespace rrr
