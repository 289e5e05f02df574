// libFuzzer target: SafetensorsFile::parse on the input bytes, then load()
// every tensor it lists and read every loaded element.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "fuzz/fuzz_common.h"
#include "io/safetensors.h"

using namespace fovea;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    fuzz::init_env();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    // An exact-size heap copy, so ASan flags any read past the end.
    void * buf = std::malloc(size ? size : 1);
    if (size) std::memcpy(buf, data, size);
    auto storage = std::make_shared<Storage>(
        buf, size, Device{}, [](void * p, void *) { std::free(p); }, nullptr);
    try {
        io::SafetensorsFile file = io::SafetensorsFile::parse(storage);
        storage.reset();
        volatile uint8_t sink = 0;
        for (const io::SafetensorsEntry & entry : file.tensors()) {
            if (file.find(entry.name) != &entry) std::abort();
            try {
                Tensor t = file.load(entry);
                const uint8_t * p = static_cast<const uint8_t *>(t.raw());
                size_t n = t.nbytes();
                uint8_t acc = 0;
                for (size_t i = 0; i < n; ++i) acc ^= p[i];
                sink = sink ^ acc;
            } catch (const Error & e) {
                fuzz::check_error(e);  // unsupported dtypes are Error(Weights)
            }
        }
        (void)sink;
        for (const auto & kv : file.metadata()) (void)kv;
    } catch (const Error & e) {
        fuzz::check_error(e);
    }
    return 0;
}
