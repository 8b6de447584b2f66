// Typed reads of GGUF key/values with errors that name the file and key.
#pragma once
#include <string>
#include "ggml.h"
#include "gguf.h"

namespace rrr {

bool gguf_has(const gguf_context * g, const std::string & key);
std::string gguf_str(const gguf_context * g, const std::string & key, const std::string & path);
int64_t gguf_int(const gguf_context * g, const std::string & key, const std::string & path);
int64_t gguf_int_or(const gguf_context * g, const std::string & key, int64_t fallback, const std::string & path);
float gguf_float_or(const gguf_context * g, const std::string & key, float fallback, const std::string & path);

// The temporary file an atomic write of `path` goes through before its rename:
// "<path>.tmp-<pid>", which the CLI removes when Ctrl-C ends the process mid-write.
std::string temp_path_for(const std::string & path);

// Writes `g` to `path` through temp_path_for(path) and a rename.
void write_gguf_atomic(const gguf_context * g, const std::string & path);

// Reads the first bytes of `path` and throws rrr::Error unless it looks like a GGUF file.
void check_gguf_header(const std::string & path);

// A GGUF opened for reading (header checked first), its tensors' data loaded into host memory
// when asked for; freed with the object. Throws rrr::Error naming the file.
struct GgufFile {
    gguf_context * g = nullptr;
    ggml_context * ctx = nullptr;
    GgufFile(const std::string & path, bool with_data);
    ~GgufFile();
    GgufFile(const GgufFile &) = delete;
    GgufFile & operator=(const GgufFile &) = delete;
};

} // namespace rrr
