#pragma once
#include <napi.h>

namespace rrr {
Napi::Function define_native_generator(Napi::Env env);
Napi::Function define_native_reference_decoder(Napi::Env env);
} // namespace rrr
