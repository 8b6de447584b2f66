// Splits an index range over a few short-lived threads. Used for host work between graph
// computations (sampling many sequences), when the compute threads are idle anyway.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace rrr {

template <typename F>
void parallel_for(int64_t n, int threads, F && fn) {
    const int64_t t = std::max<int64_t>(1, std::min<int64_t>(threads, n));
    if (t == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors((size_t) t);
    auto run = [&](int64_t k) {
        try {
            for (int64_t i = k; i < n; i += t) fn(i);
        } catch (...) {
            errors[(size_t) k] = std::current_exception();
        }
    };
    for (int64_t k = 1; k < t; ++k) pool.emplace_back(run, k);
    run(0);
    for (auto & th : pool) th.join();
    for (auto & e : errors) if (e) std::rethrow_exception(e);
}

} // namespace rrr
