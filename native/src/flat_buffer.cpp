#include "flat_buffer.h"
#include "errors.h"

#include <algorithm>

namespace rrr {

FlatBuffer place_flat(ggml_context * ctx, const std::vector<ggml_tensor *> & tensors, ggml_backend_t backend, const std::string & what) {
    // The backend's own alignment, as ggml's allocator would give each tensor: kernels that load
    // two or four floats at a time need their operands aligned.
    const size_t align = ggml_backend_get_alignment(backend);
    std::vector<size_t> offsets;
    size_t size = 0;
    for (ggml_tensor * t : tensors) {
        if (t->type != GGML_TYPE_F32) throw Error("internal error: " + what + ": " + ggml_get_name(t) + " is not f32");
        size = GGML_PAD(size, align);
        offsets.push_back(size);
        size += ggml_nbytes(t);
    }
    size = GGML_PAD(std::max<size_t>(size, sizeof(float)), align);
    const std::string on = std::string(" on ") + ggml_backend_name(backend);
    if (size > ggml_backend_get_max_size(backend)) {
        throw Error(what + ": " + std::to_string(size >> 20) + " MiB exceed the largest buffer" + on + " (use a smaller rank or fewer targets)");
    }
    FlatBuffer f;
    f.buffer = ggml_backend_alloc_buffer(backend, size);
    if (!f.buffer) throw Error("out of memory allocating " + what + on);
    char * base = (char *) ggml_backend_buffer_get_base(f.buffer);
    f.whole = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, (int64_t) (size / sizeof(float)));
    bool ok = f.whole && ggml_backend_tensor_alloc(f.buffer, f.whole, base) == GGML_STATUS_SUCCESS;
    for (size_t i = 0; ok && i < tensors.size(); ++i) ok = ggml_backend_tensor_alloc(f.buffer, tensors[i], base + offsets[i]) == GGML_STATUS_SUCCESS;
    if (!ok) {
        ggml_backend_buffer_free(f.buffer);
        throw Error("internal error: could not place " + what + on);
    }
    ggml_backend_buffer_clear(f.buffer, 0);
    return f;
}

} // namespace rrr
