// What one loaded model owns, shared by the JS objects that use it (the model itself,
// generators, trainers). Jobs hold a shared_ptr, so dispose() while a pass runs frees the
// memory when that pass ends instead of under its feet. `mu` serialises every graph run on
// these backends: the CPU backend and the scheduler are not safe to drive from two threads.
#pragma once
#include <memory>
#include <mutex>

#include <napi.h>

#include "backend.h"
#include "vocab.h"
#include "weights.h"

namespace rrr {

struct ModelCore {
    std::unique_ptr<Backends> backends;
    std::unique_ptr<ModelWeights> weights;
    std::unique_ptr<Vocab> vocab;
    std::mutex mu;
};

// The core of a NativeModel JS object; throws a JS TypeError for anything else and a JS Error
// for a disposed model. `what` names the caller in the message.
std::shared_ptr<ModelCore> model_core_of(const Napi::Value & v, const char * what);

} // namespace rrr
