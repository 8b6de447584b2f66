// With RRR_EMULATE_CUDA=1 in the environment, a build without CUDA runs our nodes' CUDA code
// (native/cuda: kernels and cuBLAS calls) on the CPU, emulated (native/cuda-emu), in place of
// the nodes' CPU loops: the tests that compare our nodes with ggml's ops then check the code a
// GPU runs, on a machine without one. Slow; for tests only. A build with CUDA has no emulation.
#pragma once
#include "ggml.h"

namespace rrr {

// Whether this build has the emulation.
bool gpu_emulation_built();

// Called first by each node's CPU function: true where the node was (thread 0) or is being
// (the other threads) run as a GPU runs it, so the function returns at once. False without the
// environment's RRR_EMULATE_CUDA=1, or for a node that lacks what its GPU steps need (a work
// space), which then takes its CPU loops. An error of the GPU code aborts, naming it.
bool run_node_as_gpu(ggml_tensor * node, int ith);

} // namespace rrr
