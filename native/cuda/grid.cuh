// Launch sizes for our grid-stride kernels (each thread loops over the numbers a grid's width
// apart), shared so that every kernel stays within the grid's 65,535 blocks the same way.
#pragma once
#include <algorithm>
#include <cstdint>

namespace rrr {

constexpr int kGridThreads = 256;

// Blocks of kGridThreads for n numbers: at least one, at most 65,535.
inline int grid_blocks(int64_t n) { return (int) std::max<int64_t>(1, std::min<int64_t>((n + kGridThreads - 1) / kGridThreads, 65535)); }

} // namespace rrr
