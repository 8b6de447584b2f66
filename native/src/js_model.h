#pragma once
#include <memory>
#include <napi.h>

#include "model_core.h"

namespace rrr {
Napi::Function define_native_model(Napi::Env env);
Napi::Function define_native_reference(Napi::Env env);
} // namespace rrr
