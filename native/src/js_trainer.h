// N-API surface of LoRA training: NativeTrainer (adapter + optimizer over one NativeModel) and
// the merge exporter.
#pragma once
#include <memory>
#include <napi.h>

namespace rrr {

class Trainer;

Napi::Function define_native_trainer(Napi::Env env);
Napi::Value merge_adapter_js(const Napi::CallbackInfo & info);

// The trainer behind a NativeTrainer object; throws a TypeError for anything else.
std::shared_ptr<Trainer> unwrap_trainer(const Napi::Value & v, const char * what);

} // namespace rrr
