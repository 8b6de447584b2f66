#pragma once
// A training batch packed into micro-batches: sequences padded to the longest of each, the rows
// whose log-probs the loss reads, their per-token coefficients, and the loss scale.
#include <cstdint>
#include <vector>

#include "train_step.h"

namespace rrr {

struct PackedBatch {
    std::vector<MicroBatch> mbs;
    int64_t n = 0;        // N: trained (masked-in) tokens of the whole batch
    int64_t tokens = 0;
    bool has_old = false;
};

// Token t of s is in the loss (its mask, else a non-zero weight).
bool trained(const TrainSeq & s, size_t t);

// The power of two the backward pass scales the loss by, for the largest per-token coefficient.
float loss_scale(double largest_coef);

// Packs a validated batch greedily, in batch order, into micro-batches of at most
// st.micro_batch_tokens padded tokens (a step may pack it several times to fit a budget).
PackedBatch pack_micro_batches(const std::vector<TrainSeq> & batch, const StepSettings & st);

} // namespace rrr
