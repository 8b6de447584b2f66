// How every wrapped class is born: native work builds the object's state off the JS thread, then
// the JS-thread callback hands a shared_ptr to the class constructor inside an External. JS code
// cannot call the constructors directly (they refuse anything but that External).
#pragma once
#include <memory>
#include <string>

#include <napi.h>

namespace rrr {

template <typename T>
Napi::Value construct_with(Napi::Env env, const Napi::FunctionReference & ctor, std::shared_ptr<T> state) {
    auto * holder = new std::shared_ptr<T>(std::move(state));
    auto ext = Napi::External<std::shared_ptr<T>>::New(env, holder, [](Napi::Env, std::shared_ptr<T> * p) { delete p; });
    return ctor.New({ext});
}

// The state passed by construct_with; `how` tells a caller who used `new` what to call instead.
template <typename T>
std::shared_ptr<T> state_from(const Napi::CallbackInfo & info, const char * how) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), how);
    return *info[0].As<Napi::External<std::shared_ptr<T>>>().Data();
}

} // namespace rrr
