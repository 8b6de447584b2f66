// splitmix64 with Box-Muller normals: the same stream on every platform and compiler for a
// given seed, so generated models and fresh adapters are reproducible byte for byte.
#pragma once
#include <cmath>
#include <cstdint>

namespace rrr {

class SplitMix64 {
public:
    explicit SplitMix64(uint64_t seed) : s_(seed) {}
    uint64_t next() {
        uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in (0, 1): never 0, so log() in normal() is safe.
    double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
    float normal() {
        const double u1 = uniform(), u2 = uniform();
        return (float) (std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }

private:
    uint64_t s_;
};

} // namespace rrr
