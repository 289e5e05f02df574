#include <cmath>

#include "core/error.h"
#include "core/op_shapes.h"

namespace fovea {

FoldedConv fold_batch_norm(const Tensor & w, const Tensor & conv_bias, const Tensor & scale, const Tensor & bias,
                           const Tensor & mean, const Tensor & var, float epsilon) {
    check_f32(w, "fold_batch_norm", "weight");
    FOVEA_CHECK_INPUT(w.ndim() >= 2, "fold_batch_norm: weight must be at least 2-D, got " << shape_str(w.shape()));
    int64_t oc = w.dim(0);
    // The BN statistics are per output channel of the conv: check them as a
    // batch_norm over a [1, OC] input would be.
    check_batch_norm(Tensor::wrap(nullptr, {1, oc}), scale, bias, mean, var, epsilon);
    if (conv_bias.defined()) {
        check_f32(conv_bias, "fold_batch_norm", "conv bias", 1);
        FOVEA_CHECK_INPUT(conv_bias.dim(0) == oc, "fold_batch_norm: conv bias has " << conv_bias.dim(0)
                                                                                    << " values for " << oc << " outputs");
    }
    int64_t per_channel = oc ? w.numel() / oc : 0;
    FoldedConv out{Tensor::empty(w.shape()), Tensor::empty({oc})};
    const float * wi = w.f32();
    float * wo = out.weight.f32();
    for (int64_t c = 0; c < oc; c++) {
        double inv_std = 1.0 / std::sqrt(double(var.f32()[c]) + double(epsilon));
        FOVEA_CHECK_INPUT(std::isfinite(inv_std), "fold_batch_norm: variance of channel " << c << " gives no finite scale");
        double k = double(scale.f32()[c]) * inv_std;
        for (int64_t i = 0; i < per_channel; i++) wo[c * per_channel + i] = float(wi[c * per_channel + i] * k);
        double b = conv_bias.defined() ? conv_bias.f32()[c] : 0.0;
        out.bias.f32()[c] = float((b - mean.f32()[c]) * k + bias.f32()[c]);
    }
    return out;
}

}  // namespace fovea
