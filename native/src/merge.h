// `export --merge`: base GGUF + LoRA GGUF -> a new standalone GGUF with W' = W + (alpha/r) B A.
// Every key/value and every other tensor is copied unchanged. A merged projection is computed in
// f32 and stored in the base tensor's own type (f32, f16, bf16 or a ggml quantization that needs
// no importance matrix: q8_0, q4_0, q4_K, ...); types that need one (the IQ family) fall back to
// f16, since requantizing them blindly would lose more than the adapter adds. Tensors stream
// from file to file one at a time, so memory stays at a few projections whatever the model size.
#pragma once
#include <cstdint>
#include <string>

#include "ggml.h"

namespace rrr {

struct MergeResult {
    int64_t merged = 0;     // projections that received a LoRA delta
    int64_t requantized_f16 = 0; // of those, stored as f16 instead of the base type
    int64_t quantized = 0;  // of those, stored quantized (rounding the adapter with the weights)
    std::string quantized_type; // the lowest-bit such type ("" when none)
    uint64_t bytes = 0;
};

// `merged_type`: the type merged projections are stored in; GGML_TYPE_COUNT keeps each base type.
MergeResult merge_adapter(const std::string & model_path, const std::string & adapter_path, const std::string & out_path,
                          ggml_type merged_type = GGML_TYPE_COUNT);

} // namespace rrr
