// MultiPathNet (Zagoruyko et al., BMVC 2016; facebookresearch/multipathnet):
// classifies object proposals and regresses their boxes. Two variants, chosen
// by the config key "variant" (tools/reference/NAMING.md, section MultiPathNet;
// shared/spec/multipathnet.md):
//
// * resnet18_integral, the released COCO model: zero-padded ResNet-18 up to
//   layer3 (stride 16), ROI max pooling 14x14 (imagine-nn v2) on layer3,
//   layer4 + 7x7 average pool per ROI -> 512-d, 6 integral-loss classifiers
//   (probability = mean of their softmaxes) and one box regressor.
// * vgg16_multipath, the full MultiPath network: VGG-16 taps conv3/4/5, four
//   foveal regions (1x, 1.5x, 2x, 4x the box), five towers (ROI pool 7x7 per
//   tap, L2 normalisation per ROI and tap, x1000, 1x1 mix conv, fc6, fc7),
//   classifiers on the concatenated R1..R4, box regressor on the het tower RH.
//
// Both end in BBoxNorm: the box deltas are de-normalised (d * std + mean).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/ops.h"
#include "models/model_weights.h"

namespace fovea::models {

enum class MultiPathNetVariant { ResNet18Integral, Vgg16MultiPath };

// VGG-16 taps, in the order the towers concatenate them.
enum class VggTap { Conv5, Conv4, Conv3 };

struct MultiPathTower {
    std::string name;
    int region = 0;             // index into MultiPathNetConfig::foveal_factors
    std::vector<VggTap> taps;   // concat order
    bool het = false;           // the box-regression tower (not fed to the classifiers)
};

// Everything the forward pass and the tensor shapes depend on, parsed from
// the file's config. Channel counts come from the config too, so a file whose
// tensors disagree with it is rejected on load.
struct MultiPathNetConfig {
    MultiPathNetVariant variant = MultiPathNetVariant::ResNet18Integral;
    int64_t num_classes = 81;      // column 0 = background
    int64_t integral_heads = 6;
    int roi_pool_h = 14, roi_pool_w = 14;
    bool roi_round_bins = true;    // roi_pool_version 2 (imagine-nn v2); 1 = Caffe bins

    // resnet18_integral
    int64_t base_width = 64;       // conv1 width; layer L has base_width * 2^(L-1) channels
    float roi_scale = 1.0f / 16;
    // How the Torch checkpoint held the trunk. The exported tensors are the same
    // either way (folded); only the checkpoint's parameter count depends on it.
    bool conv_bias = false;        // convs had their own bias
    bool shortcut_affine = true;   // projection shortcuts had a BatchNorm
    bool prefold_layer1 = true;    // conv1 + layer1 BN folded at build time (frozen)

    // vgg16_multipath
    std::vector<int64_t> stage_widths;  // 5 VGG stages
    bool pool_ceil = true;
    float tap_scales[3] = {1.0f / 16, 1.0f / 8, 1.0f / 4};  // by VggTap
    float norm_eps = 1e-10f;
    float norm_scale = 1000.0f;
    int64_t mix_channels = 512;
    int64_t fc_dim = 4096;
    std::vector<double> foveal_factors;  // box grows by f*w, f*h on each side
    std::vector<MultiPathTower> towers;
    bool model_het = true;  // box regressor on the het tower; else on the classifier features

    // Error(Weights) naming the key on a missing, mistyped or unsupported
    // value; `where` (e.g. "<file>: fovea.config") starts the messages of the
    // value checks made here (the Config accessors name the file themselves).
    // The tower layout and foveal regions are the MultiPath network's own
    // (models/multipathnet.lua); the config's "towers" and "foveal_regions"
    // record the same and are not read.
    static MultiPathNetConfig parse(const Config & config, const std::string & where = "multipathnet config");

    // Width of the features the classifiers read.
    int64_t cls_features() const;
    // Width of the features the box regressor reads.
    int64_t box_features() const;
};

// How the released Torch checkpoint holds an exported tensor.
enum class TensorRole {
    Learned,      // a trainable parameter of the checkpoint
    FoldedShift,  // a conv bias made at export from a fixed affine's shift (or zeros): not a parameter
    Buffer,       // a constant of a module (BBoxNorm mean/std)
};

struct TensorSpec {
    std::string name;
    Shape shape;
    TensorRole role = TensorRole::Learned;
    // For a conv weight: channels of the fixed affine (inn.ConstAffine, BN after
    // BNtoFixed) folded into it; the checkpoint holds its scale and shift.
    int64_t affine_channels = 0;
};

// Every tensor of the model (NAMING.md), in module order, with the shape the
// config implies. Used to validate a file on load and to size the released
// models without weights.
std::vector<TensorSpec> multipathnet_tensor_specs(const MultiPathNetConfig & config);

struct CheckpointSize {
    int64_t learned = 0;  // trainable parameters of the Torch checkpoint (Torch parameters())
    int64_t fixed = 0;    // fixed-affine constants (scale and shift per channel)
    int64_t stored = 0;   // floats in the exported file
};
CheckpointSize multipathnet_checkpoint_size(const MultiPathNetConfig & config);

struct MultiPathNetOptions {
    // ROIs per pass through the per-ROI layers: bounds memory; the released
    // test code uses 500 (memoryEfficientForward). Results do not depend on it.
    int64_t roi_chunk = 500;
    // Also return the intermediate tensors below (tests, debugging).
    bool keep_intermediates = false;
};

struct MultiPathNetOutput {
    Tensor cls_prob;     // [K, num_classes]: mean over the integral heads of their softmax
    Tensor bbox_deltas;  // [K, 4 * num_classes]: (dx, dy, dw, dh) per class, de-normalised

    // Only with keep_intermediates:
    Tensor cls_logits;           // [integral_heads, K, num_classes]
    Tensor bbox_raw;             // [K, 4 * num_classes] before BBoxNorm
    Tensor pooled;               // resnet18_integral: [K, 4w, 14, 14] ROI-pooled layer3
    Tensor feature;              // resnet18_integral: [K, 8w] after layer4 and the average pool
    Tensor foveal_rois;          // vgg16_multipath: [regions, K, 5] (batch, x1, y1, x2, y2)
    std::vector<Tensor> towers;  // vgg16_multipath: [K, fc_dim] per tower, config order
};

class MultiPathNet {
  public:
    // Reads and validates every tensor against the config (Error(Weights) on a
    // missing, extra or misshapen tensor). The tensors stay valid after
    // `weights` is gone. Ops run on `backend`, which must outlive the model.
    MultiPathNet(const ModelWeights & weights, Backend & backend);

    const MultiPathNetConfig & config() const { return config_; }

    // image: [1, 3, H, W] float32, normalised as the config's input_transform
    // says. rois: [K, 4] float32 (x1, y1, x2, y2) in the image's pixels,
    // 0-based (= the Lua 1-based coordinates minus one). K = 0 gives empty
    // outputs. Error(Input) on a bad shape or a non-finite coordinate.
    // image lives on the backend's device; rois on the host or that device
    // (they are checked and expanded on the host, then uploaded once). The
    // outputs live on the backend's device. Weights are uploaded to it on load.
    MultiPathNetOutput forward(const Tensor & image, const Tensor & rois,
                               const MultiPathNetOptions & options = {}) const;

  private:
    struct Conv {
        Tensor weight, bias;
        Conv2dParams params;
    };
    struct Linear {
        Tensor weight, bias;
    };
    struct Block {  // ResNet basic block
        Conv conv1, conv2, downsample;  // downsample.weight undefined: identity shortcut
    };
    struct Tower {
        Conv mix;
        Linear fc6, fc7;
    };

    Tensor run_block(const Block & b, const Tensor & x) const;
    // Trunk feature maps: {layer3} (ResNet) or {conv5, conv4, conv3} (VGG).
    std::vector<Tensor> trunk(const Tensor & image) const;
    // Per-ROI layers on one chunk; rois5: [n, 5] with batch index 0.
    void resnet_chunk(const std::vector<Tensor> & maps, const Tensor & rois5, bool keep,
                      MultiPathNetOutput & out) const;
    void vgg_chunk(const std::vector<Tensor> & maps, const std::vector<Tensor> & regions, bool keep,
                   MultiPathNetOutput & out) const;
    // Classifiers, softmax mean, box regressor and BBoxNorm.
    void heads(const Tensor & f_cls, const Tensor & f_box, bool keep, MultiPathNetOutput & out) const;

    MultiPathNetConfig config_;
    Backend * backend_;
    // resnet18_integral
    Conv conv1_;
    std::vector<Block> trunk_blocks_;  // layer1..layer3
    std::vector<Block> tower_blocks_;  // layer4
    // vgg16_multipath
    std::vector<std::vector<Conv>> stages_;
    std::vector<Tower> towers_;
    // heads
    std::vector<Linear> cls_;
    Linear bbox_;
    Tensor bbox_std_, bbox_mean_, zeros4_, ones4_;
};

// Class-specific boxes from the proposals and the de-normalised deltas
// (utils.convertFrom): w = x2 - x1, h = y2 - y1, cx = (x1 + x2) / 2,
// cx' = cx + dx * w, w' = w * exp(dw) (same for y), box = cx' -+ w'/2.
// boxes: [K, 4] proposals in the ORIGINAL image's pixels (not the network
// input's), 0-based; deltas: [K, 4C]. Returns [K, 4C]: class c at columns
// 4c..4c+3. The released code clamps 1-based x to [1, W] and y to [1, H]; the
// decoding commutes with the shift by one, so on 0-based boxes the same clamp
// is x to [0, W - 1], y to [0, H - 1]. Error(Input) on bad shapes, sizes or
// non-finite values. Host arithmetic: device inputs are downloaded; the
// result is a host tensor.
Tensor decode_multipathnet_boxes(const Tensor & boxes, const Tensor & deltas, int64_t image_width,
                                 int64_t image_height);

}  // namespace fovea::models
