// One row of an RMS norm's backward pass, shared by the CPU's loop and the GPU's kernel
// (norm_backward.h), in ggml's RMS_NORM_BACK form: with the row's sums Σx² and Σx·g (g the
// gradient at the normalised row), dx = (g - x Σx·g / (Σx² + E ε)) / sqrt(Σx² / E + ε).
#pragma once
#include <cmath>

#include "host_device.h"

namespace rrr {

struct RmsBackRow {
    float rrms; // 1 / sqrt(mean x² + ε)
    float c;    // Σx·g / (Σx² + E ε)
};

RRR_HOST_DEVICE inline RmsBackRow rms_back_row(double sxx, double sxg, long long E, float eps) {
    RmsBackRow r;
    r.rrms = (float) (1.0 / sqrt(sxx / (double) E + (double) eps));
    r.c = (float) (sxg / (sxx + (double) eps * (double) E));
    return r;
}

RRR_HOST_DEVICE inline float rms_back_value(const RmsBackRow & r, float g, float x) { return (g - x * r.c) * r.rrms; }

} // namespace rrr
