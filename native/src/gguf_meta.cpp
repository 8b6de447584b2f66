#include "gguf_meta.h"
#include "errors.h"

#include <cstdio>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

namespace rrr {

bool gguf_has(const gguf_context * g, const std::string & key) {
    return gguf_find_key(g, key.c_str()) >= 0;
}

std::string gguf_str(const gguf_context * g, const std::string & key, const std::string & path) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) throw Error(path + ": missing metadata key '" + key + "'");
    if (gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) throw Error(path + ": metadata key '" + key + "' is not a string");
    return gguf_get_val_str(g, id);
}

static bool read_int(const gguf_context * g, int64_t id, int64_t & out) {
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8:  out = gguf_get_val_u8(g, id); return true;
        case GGUF_TYPE_INT8:   out = gguf_get_val_i8(g, id); return true;
        case GGUF_TYPE_UINT16: out = gguf_get_val_u16(g, id); return true;
        case GGUF_TYPE_INT16:  out = gguf_get_val_i16(g, id); return true;
        case GGUF_TYPE_UINT32: out = gguf_get_val_u32(g, id); return true;
        case GGUF_TYPE_INT32:  out = gguf_get_val_i32(g, id); return true;
        case GGUF_TYPE_UINT64: out = (int64_t) gguf_get_val_u64(g, id); return true;
        case GGUF_TYPE_INT64:  out = gguf_get_val_i64(g, id); return true;
        default: return false;
    }
}

int64_t gguf_int(const gguf_context * g, const std::string & key, const std::string & path) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) throw Error(path + ": missing metadata key '" + key + "'");
    int64_t v = 0;
    if (!read_int(g, id, v)) throw Error(path + ": metadata key '" + key + "' is not an integer");
    return v;
}

int64_t gguf_int_or(const gguf_context * g, const std::string & key, int64_t fallback, const std::string & path) {
    return gguf_has(g, key) ? gguf_int(g, key, path) : fallback;
}

float gguf_float_or(const gguf_context * g, const std::string & key, float fallback, const std::string & path) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) return fallback;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_FLOAT32: return gguf_get_val_f32(g, id);
        case GGUF_TYPE_FLOAT64: return (float) gguf_get_val_f64(g, id);
        default: {
            int64_t v = 0;
            if (read_int(g, id, v)) return (float) v;
            throw Error(path + ": metadata key '" + key + "' is not a number");
        }
    }
}

std::string temp_path_for(const std::string & path) {
    return path + ".tmp-" + std::to_string((long) getpid());
}

void write_gguf_atomic(const gguf_context * g, const std::string & path) {
    const std::string tmp = temp_path_for(path);
    if (!gguf_write_to_file(g, tmp.c_str(), false)) {
        std::remove(tmp.c_str());
        throw Error(path + ": cannot write (is the directory writable and is there space left?)");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw Error(path + ": cannot rename the temporary file into place");
    }
}

void check_gguf_header(const std::string & path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) throw Error(path + ": no such file");
    if (S_ISDIR(st.st_mode)) throw Error(path + ": is a directory, expected a .gguf file");
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) throw Error(path + ": cannot open for reading");
    char magic[4] = {0, 0, 0, 0};
    const size_t n = std::fread(magic, 1, 4, f);
    std::fclose(f);
    if (n < 4 || std::memcmp(magic, "GGUF", 4) != 0) throw Error(path + ": not a GGUF file (bad magic)");
}

GgufFile::GgufFile(const std::string & path, bool with_data) {
    check_gguf_header(path);
    gguf_init_params ip{!with_data, &ctx};
    g = gguf_init_from_file(path.c_str(), ip);
    if (!g) throw Error(path + ": corrupt or truncated GGUF");
}

GgufFile::~GgufFile() {
    if (g) gguf_free(g);
    if (ctx) ggml_free(ctx);
}

} // namespace rrr
