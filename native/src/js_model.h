#pragma once
#include <memory>
#include <napi.h>

#include "model_core.h"

namespace rrr {
// The model behind a NativeModel object; throws a TypeError (naming `what`) for anything else.
std::shared_ptr<ModelCore> unwrap_model(const Napi::Value & v, const char * what);

Napi::Function define_native_model(Napi::Env env);
Napi::Function define_native_reference(Napi::Env env);
} // namespace rrr
