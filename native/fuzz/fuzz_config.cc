// libFuzzer target: the model config (__metadata__["fovea.config"]):
// models::Config::parse, then each model's config reader (DeepMask,
// SharpMask, MultiPathNet), which read and range-check every key they use,
// and the tensor lists derived from an accepted config.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.h"
#include "models/model_weights.h"
#include "models/deepmask.h"
#include "models/multipathnet.h"
#include "models/sharpmask.h"

using namespace fovea;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    fuzz::init_env();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    std::string json(reinterpret_cast<const char *>(data), size);
    try {
        models::Config config = models::Config::parse(json, "fuzz");
        try {
            (void)models::deepmask_tensor_specs(models::DeepMaskConfig::from(config));
        } catch (const Error & e) {
            fuzz::check_error(e);
        }
        try {
            (void)models::sharpmask_tensor_specs(models::SharpMaskConfig::from(config));
        } catch (const Error & e) {
            fuzz::check_error(e);
        }
        try {
            (void)models::MultiPathNetConfig::parse(config, "fuzz");
        } catch (const Error & e) {
            fuzz::check_error(e);
        }
    } catch (const Error & e) {
        fuzz::check_error(e);
    }
    return 0;
}
