// The CPU backend: the op table over the reference implementations.
#include "cpu/ops.h"

namespace fovea {

namespace {

class CpuBackend final : public Backend {
  public:
    const char * name() const override { return "cpu"; }
    Device device() const override { return Device{}; }

    Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) override {
        return cpu::conv2d(x, w, bias, p);
    }
    Tensor conv2d_residual(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                           const Tensor & residual, const Tensor & residual_scale) override {
        return cpu::conv2d(x, w, bias, p, cpu::ConvAlgo::Auto, residual, residual_scale);
    }
    Tensor gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) override {
        return cpu::gemm(a, b, c, p);
    }
    Tensor linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act) override {
        return cpu::linear(x, w, bias, act);
    }
    Tensor max_pool2d(const Tensor & x, const Pool2dParams & p) override { return cpu::max_pool2d(x, p); }
    Tensor avg_pool2d(const Tensor & x, const Pool2dParams & p) override { return cpu::avg_pool2d(x, p); }
    Tensor relu(const Tensor & x) override { return cpu::relu(x); }
    Tensor sigmoid(const Tensor & x) override { return cpu::sigmoid(x); }
    Tensor softmax(const Tensor & x, int axis) override { return cpu::softmax(x, axis); }
    Tensor resize_bilinear(const Tensor & x, const ResizeParams & p) override { return cpu::resize_bilinear(x, p); }
    Tensor image_scale(const Tensor & x, int64_t out_h, int64_t out_w) override {
        return cpu::image_scale(x, out_h, out_w);
    }
    Tensor upsample_nearest(const Tensor & x, int factor) override { return cpu::upsample_nearest(x, factor); }
    Tensor pad2d(const Tensor & x, const Pad2dParams & p) override { return cpu::pad2d(x, p); }
    Tensor concat(const std::vector<Tensor> & xs, int axis) override { return cpu::concat(xs, axis); }
    Tensor add(const Tensor & a, const Tensor & b, Activation act) override { return cpu::add(a, b, act); }
    Tensor batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                      const Tensor & var, float epsilon) override {
        return cpu::batch_norm(x, scale, bias, mean, var, epsilon);
    }
    Tensor roi_max_pool(const Tensor & x, const Tensor & rois, const RoiPoolParams & p) override {
        return cpu::roi_max_pool(x, rois, p);
    }
    Tensor roi_align(const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                     const RoiAlignParams & p) override {
        return cpu::roi_align(x, rois, batch_indices, p);
    }
    std::vector<int64_t> nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p) override {
        return cpu::nms(boxes, scores, p);
    }
};

}  // namespace

Backend & cpu_backend() {
    static CpuBackend backend;
    return backend;
}

}  // namespace fovea
