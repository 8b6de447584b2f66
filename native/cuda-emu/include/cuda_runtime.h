// A stand-in for the CUDA runtime's header in builds without CUDA: with it, our kernels
// (native/cuda/*.cu, turned into C++ by scripts/cuda-emu-source.mjs) build with the C++ compiler
// and run on the CPU (native/cuda-emu/launch.cpp), each GPU thread a fiber, so that a machine
// without a GPU checks their indexing, barriers and shuffles, not only the math they share with
// the CPU's loops. Only what our kernels use is here.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One block runs at a time on a thread, so a function's thread-local statics are its block's
// shared memory; two emulated nodes on two threads (two models' steps) each keep their own.
#define __shared__ static thread_local

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9, cudaErrorLaunchFailure = 719 };
typedef struct rrr_emu_stream * cudaStream_t;
constexpr unsigned cudaStreamNonBlocking = 1;

cudaError_t cudaGetLastError();
const char * cudaGetErrorString(cudaError_t err);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t * stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

namespace rrr_emu {

// The running fiber's thread and block, as the kernel sees them.
const uint3 & thread_idx();
const uint3 & block_idx();
const dim3 & block_dim();
const dim3 & grid_dim();
void sync_block();
// The word `v` of the lane `lane ^ mask` of the calling thread's warp.
uint64_t shuffle_xor(uint64_t v, int mask);
void * dynamic_shared();
// A kernel launch: `body` runs once per thread of every block, blocks one after another, a
// block's threads as fibers switched at barriers. A launch the GPU would refuse (sizes out of
// range) runs nothing and leaves its error for cudaGetLastError, as the GPU does.
void launch(const std::function<void()> & body, dim3 grid, dim3 block, size_t shared = 0, cudaStream_t stream = nullptr);

} // namespace rrr_emu

#define threadIdx (::rrr_emu::thread_idx())
#define blockIdx (::rrr_emu::block_idx())
#define blockDim (::rrr_emu::block_dim())
#define gridDim (::rrr_emu::grid_dim())

inline void __syncthreads() { ::rrr_emu::sync_block(); }

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffled value is at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    bits = ::rrr_emu::shuffle_xor(bits, mask);
    T out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}
