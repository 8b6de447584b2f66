// Where the attention backward node's work space (attn_backward_steps.h) keeps each number,
// shared by the CPU's loops and the GPU's kernels.
//
// Queries go by blocks of Lb positions: per K/V group and sequence, the group's grp query heads
// lie as [hd, Lb, grp, L / Lb] (block after block, each block's heads side by side), so the
// columns of one query block over all the group's heads are one matrix, and a product can stop
// at the keys that block can see (causal: up to the block's end). K and V (grp 1, one block) lie
// as [hd, L]. With one block this is the plain head-major [hd, L, heads] layout.
#pragma once
#include <cstdint>

#include "host_device.h"

namespace rrr {

// The head-major index of number d of head h at position i of sequence b (H heads, in groups of grp).
RRR_HOST_DEVICE inline int64_t head_major_at(int64_t d, int64_t h, int64_t i, int64_t b, int64_t hd, int64_t H, int64_t L, int64_t grp, int64_t Lb) {
    const int64_t g = h / grp, hh = h - g * grp, qb = i / Lb, j = i - qb * Lb;
    return d + hd * (j + Lb * (hh + grp * (qb + (L / Lb) * (g + (H / grp) * b))));
}

// The query position of column c of the scores ([L_k, grp * L] per group and sequence).
RRR_HOST_DEVICE inline int64_t query_of_column(int64_t c, int64_t L, int64_t grp, int64_t Lb) {
    const int64_t in_pair = c % (grp * L);
    return in_pair / (grp * Lb) * Lb + in_pair % Lb;
}

// The keys a query's column holds: up to its block's end (zeros past the query itself).
RRR_HOST_DEVICE inline int64_t keys_of_query(int64_t i, int64_t Lb) { return (i / Lb + 1) * Lb; }

} // namespace rrr
