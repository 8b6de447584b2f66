// Milliseconds of wall time for the timings the addon reports (steps, their graph work,
// generation waves, the reference decoder).
#pragma once
#include <chrono>

namespace rrr {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

} // namespace rrr
