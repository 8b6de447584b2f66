// Conversions between JS values and native batch/result types shared by the wrapped classes.
#pragma once
#include <napi.h>
#include <vector>

#include "backend.h"
#include "forward.h"

namespace rrr {

std::vector<std::vector<int32_t>> seqs_from_js(const Napi::Value & v, const char * what);
Napi::Object forward_result_to_js(Napi::Env env, ForwardResult && r);
std::string str_opt(const Napi::Object & o, const char * key, const std::string & fallback);
int64_t int_opt(const Napi::Object & o, const char * key, int64_t fallback);
double num_opt(const Napi::Object & o, const char * key, double fallback);
bool bool_opt(const Napi::Object & o, const char * key, bool fallback);
// Adds graphSplits and fallbackOps (ops placed off the compute device) to a stats object.
void set_placement(Napi::Env env, Napi::Object & o, const Placement & p);

} // namespace rrr
