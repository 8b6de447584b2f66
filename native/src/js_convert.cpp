#include "js_convert.h"

#include <cstring>

namespace rrr {

std::vector<std::vector<int32_t>> seqs_from_js(const Napi::Value & v, const char * what) {
    Napi::Env env = v.Env();
    if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + ": expected an array of Int32Array token sequences");
    Napi::Array arr = v.As<Napi::Array>();
    std::vector<std::vector<int32_t>> out(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value e = arr.Get(i);
        if (!e.IsTypedArray() || e.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
            throw Napi::TypeError::New(env, std::string(what) + ": sequence " + std::to_string(i) + " is not an Int32Array");
        }
        Napi::Int32Array a = e.As<Napi::Int32Array>();
        out[i].assign(a.Data(), a.Data() + a.ElementLength());
    }
    return out;
}

Napi::Object forward_result_to_js(Napi::Env env, ForwardResult && r) {
    Napi::Object o = Napi::Object::New(env);
    // The result's own memory becomes the array's, freed with it: all logits of a long batch run
    // to hundreds of MB, whose copy (and zero fill) would hold up the event loop for seconds.
    const size_t n = r.logits.size();
    Napi::Float32Array logits;
    if (n == 0) {
        logits = Napi::Float32Array::New(env, 0);
    } else {
        auto * owned = new std::vector<float>(std::move(r.logits));
        Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, owned->data(), n * sizeof(float),
                                                       [](Napi::Env, void *, std::vector<float> * v) { delete v; }, owned);
        logits = Napi::Float32Array::New(env, n, buf, 0);
    }
    Napi::Array starts = Napi::Array::New(env, r.row_start.size());
    for (size_t i = 0; i < r.row_start.size(); ++i) starts.Set((uint32_t) i, Napi::Number::New(env, (double) r.row_start[i]));
    o.Set("nVocab", Napi::Number::New(env, (double) r.n_vocab));
    o.Set("logits", logits);
    o.Set("rowStart", starts);
    return o;
}

std::string str_opt(const Napi::Object & o, const char * key, const std::string & fallback) {
    Napi::Value v = o.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}

int64_t int_opt(const Napi::Object & o, const char * key, int64_t fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().Int64Value() : fallback;
}

double num_opt(const Napi::Object & o, const char * key, double fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

bool bool_opt(const Napi::Object & o, const char * key, bool fallback) {
    Napi::Value v = o.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

void set_placement(Napi::Env env, Napi::Object & o, const Placement & p) {
    o.Set("graphSplits", p.splits);
    o.Set("graphHostInputs", p.host_inputs);
    Napi::Array ops = Napi::Array::New(env, p.off_primary.size());
    for (size_t i = 0; i < p.off_primary.size(); ++i) ops.Set((uint32_t) i, p.off_primary[i]);
    o.Set("fallbackOps", ops);
}

} // namespace rrr
