// Per-environment data (constructors of the wrapped classes). Kept in the env's instance data
// instead of statics so worker threads and re-loads each get their own.
#pragma once
#include <napi.h>

namespace rrr {
struct AddonState {
    Napi::FunctionReference model_ctor;
    Napi::FunctionReference reference_ctor;
    Napi::FunctionReference trainer_ctor;
    Napi::FunctionReference generator_ctor;
    Napi::FunctionReference ref_decoder_ctor;
};
} // namespace rrr
