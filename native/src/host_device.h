// RRR_HOST_DEVICE marks inline functions that the CPU's loops and our CUDA kernels share, so both
// compute a number the same way (swiglu_backward_math.h, loss_head_math.h).
#pragma once

#ifdef __CUDACC__
#define RRR_HOST_DEVICE __host__ __device__
#else
#define RRR_HOST_DEVICE
#endif
