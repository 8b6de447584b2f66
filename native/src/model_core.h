// What one loaded model owns, shared by the JS wrappers that use it (NativeModel, NativeTrainer).
// Jobs hold a shared_ptr, so dispose() while a pass runs frees the memory when that pass ends
// instead of under its feet. `mu` serialises every graph run on these backends: the CPU backend
// and the scheduler are not safe to drive from two threads at once.
#pragma once
#include <memory>
#include <mutex>

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

} // namespace rrr
