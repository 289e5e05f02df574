// The op interface every backend implements. Parameters are plain structs;
// validation and output shapes live in core/op_shapes.h so every backend
// rejects bad input the same way before touching memory.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace fovea {

// Activation fused into the epilogue of conv2d / gemm.
enum class Activation : int32_t { None, Relu, Sigmoid };

struct Conv2dParams {
    int stride_h = 1, stride_w = 1;
    int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
    int dilation_h = 1, dilation_w = 1;
    int groups = 1;
    Activation activation = Activation::None;
};

// y = alpha * op(A) * op(B) + beta * C, A: [M,K] (or [K,M] if trans_a),
// B: [K,N] (or [N,K] if trans_b), C broadcastable to [M,N] (scalar, [N], [M,1], [1,N], [M,N]).
struct GemmParams {
    bool trans_a = false;
    bool trans_b = false;
    float alpha = 1.0f;
    float beta = 1.0f;
    Activation activation = Activation::None;
};

struct Pool2dParams {
    int kernel_h = 1, kernel_w = 1;
    int stride_h = 1, stride_w = 1;
    int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
    int dilation_h = 1, dilation_w = 1;  // max pool only
    // Ceil mode drops a last window that would start in the trailing padding
    // (Torch7 and PyTorch rule; the ONNX 1.12 reference keeps it).
    bool ceil_mode = false;
    // Average pool: divide by the full window including padding (Torch7 and
    // cuDNN default) or by the number of valid input cells (ONNX default).
    bool count_include_pad = false;
};

// How an output pixel maps back to input coordinates in a linear resize.
enum class ResizeCoord : int32_t {
    AlignCorners,      // src = dst * (in - 1) / (out - 1); Torch7 SpatialReSamplingEx, image.scale,
                       // nn.SpatialUpSamplingBilinear (the DeepMask models' convention)
    HalfPixel,         // src = (dst + 0.5) / scale - 0.5 (ONNX default, PyTorch align_corners=False)
    PytorchHalfPixel,  // as HalfPixel, but src = 0 when out == 1
    Asymmetric,        // src = dst / scale
};

struct ResizeParams {
    int64_t out_h = 0, out_w = 0;
    ResizeCoord coord = ResizeCoord::AlignCorners;
    // Explicit scale (ONNX's `scales` input, which can differ from out/in);
    // 0 means out/in. When given, half-pixel and asymmetric divide by it, and
    // align-corners / pytorch_half_pixel use in*scale as the resized length,
    // as the ONNX reference does.
    double scale_h = 0.0, scale_w = 0.0;
};

// ROI max pooling as in Fast R-CNN. rois: [K,5] float (batch_index, x1, y1, x2, y2)
// in input-image pixels, 0-based. Output [K, C, out_h, out_w].
struct RoiPoolParams {
    int out_h = 7, out_w = 7;
    float spatial_scale = 1.0f;
    // false: Caffe / ONNX MaxRoiPool bins (floor/ceil edges, end inclusive).
    // true: imagine-nn ROIPooling v2 (rounded bin edges, end exclusive), used by MultiPathNet.
    bool round_bins = false;
};

// ROI align (Mask R-CNN). rois: [K,4] float (x1,y1,x2,y2) with a separate
// batch index per ROI. Output [K, C, out_h, out_w].
struct RoiAlignParams {
    int out_h = 1, out_w = 1;
    float spatial_scale = 1.0f;
    int sampling_ratio = 0;  // 0: adaptive ceil(roi_size / out_size)
    bool aligned = false;    // true: shift by -0.5 pixel (ONNX half_pixel)
    bool max_mode = false;   // ONNX mode="max"
};

enum class PadMode : int32_t {
    Constant,   // fill with `value`
    Symmetric,  // edge-inclusive mirror: c b a | a b c d (DeepMask's SymPad, numpy 'symmetric')
};

// Pads (positive) or crops (negative) the last two dims of [N,C,H,W]. Crop(k)
// of the DeepMask trunk is all four set to -k.
struct Pad2dParams {
    int top = 0, left = 0, bottom = 0, right = 0;
    PadMode mode = PadMode::Constant;
    float value = 0.0f;
};

struct NmsParams {
    float iou_threshold = 0.5f;
    float score_threshold = -1e30f;  // keep boxes with score > threshold
    int64_t max_output = -1;         // -1: no limit; 0 keeps nothing
    // 1 for the Torch7 / MultiPathNet convention where a box from x1 to x2
    // covers x2 - x1 + 1 pixels; 0 for ONNX / torchvision.
    float pixel_offset = 0.0f;
    bool center_point_box = false;   // boxes given as (cx, cy, w, h)
};

class Backend {
  public:
    virtual ~Backend() = default;
    virtual const char * name() const = 0;
    virtual Device device() const = 0;

    // x: [N,C,H,W], w: [OC, C/groups, KH, KW], bias: [OC] or undefined.
    virtual Tensor conv2d(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p) = 0;
    // act(conv2d(x, w, bias) + residual_scale * residual), residual shaped as
    // the output, residual_scale [OC] or undefined (1): a residual block's
    // last conv and its skip connection (the scale: a post-add affine folded
    // into the conv). This default runs conv2d, batch_norm and add; backends
    // that can add in the conv's epilogue override it and save the passes.
    virtual Tensor conv2d_residual(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                                   const Tensor & residual, const Tensor & residual_scale);
    virtual Tensor gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) = 0;
    // x: [N,K], w: [M,K] (PyTorch / Torch7 layout), bias [M] or undefined -> [N,M].
    virtual Tensor linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act) = 0;

    virtual Tensor max_pool2d(const Tensor & x, const Pool2dParams & p) = 0;
    virtual Tensor avg_pool2d(const Tensor & x, const Pool2dParams & p) = 0;

    virtual Tensor relu(const Tensor & x) = 0;
    virtual Tensor sigmoid(const Tensor & x) = 0;
    // Softmax along one axis (negative counts from the end).
    virtual Tensor softmax(const Tensor & x, int axis) = 0;

    // x: [N,C,H,W] -> [N,C,out_h,out_w], bilinear.
    virtual Tensor resize_bilinear(const Tensor & x, const ResizeParams & p) = 0;
    // torch/image image.scale(x, out_w, out_h, 'bilinear'): separable, width
    // first; per axis align-corners linear when growing (last sample copied),
    // area average with fractional edge weights when shrinking, copy when
    // equal. DeepMask's mask pasting and MultiPathNet's input scaling.
    virtual Tensor image_scale(const Tensor & x, int64_t out_h, int64_t out_w) = 0;
    // Nearest-neighbour upsampling by an integer factor (nn.SpatialUpSamplingNearest).
    virtual Tensor upsample_nearest(const Tensor & x, int factor) = 0;

    virtual Tensor pad2d(const Tensor & x, const Pad2dParams & p) = 0;
    virtual Tensor concat(const std::vector<Tensor> & xs, int axis) = 0;
    // Elementwise a + b (same shape), optionally followed by ReLU (residual blocks).
    virtual Tensor add(const Tensor & a, const Tensor & b, Activation act) = 0;

    // Inference batch norm over channel axis 1 of [N,C,...].
    virtual Tensor batch_norm(const Tensor & x, const Tensor & scale, const Tensor & bias, const Tensor & mean,
                              const Tensor & var, float epsilon) = 0;

    virtual Tensor roi_max_pool(const Tensor & x, const Tensor & rois, const RoiPoolParams & p) = 0;
    // batch_indices: [K] int64 (or int32).
    virtual Tensor roi_align(const Tensor & x, const Tensor & rois, const Tensor & batch_indices,
                             const RoiAlignParams & p) = 0;
    // boxes: [N,4] (x1,y1,x2,y2, either corner order), scores: [N].
    // Returns the kept indices in decreasing score order (stable for ties).
    virtual std::vector<int64_t> nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p) = 0;
};

// BatchNorm folded into the preceding conv at conversion time:
// w' = w * scale / sqrt(var + eps), b' = (b - mean) * scale / sqrt(var + eps) + bias.
// w: [OC, ...], conv_bias [OC] or undefined. Returns {w', b'}; host fp32 only.
struct FoldedConv {
    Tensor weight;
    Tensor bias;
};
FoldedConv fold_batch_norm(const Tensor & w, const Tensor & conv_bias, const Tensor & scale, const Tensor & bias,
                           const Tensor & mean, const Tensor & var, float epsilon);

// The CPU backend (always present) and the CUDA backend when compiled and a
// device exists; cuda_backend throws Error(Device) with the reason otherwise.
Backend & cpu_backend();
// One backend per device, created on first use. Its ops take and return
// tensors on that device and are enqueued on the device's one stream (see
// native/cuda/backend.cu); to_host() (core/device.h) waits for them.
Backend & cuda_backend(int index = 0);

}  // namespace fovea
