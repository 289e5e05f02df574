// DeepMask (facebookresearch/deepmask): a trunk that turns a 192x192 patch (or
// a whole padded image, fully convolutionally) into a 512-d embedding per
// stride-16 cell, a mask head (56x56 logits) and a score head (objectness
// logit). Built from Backend ops and the tensors of a ModelWeights file whose
// names and shapes follow tools/reference/NAMING.md; shared/spec/
// deepmask-sharpmask.md is the layer-by-layer spec.
//
// Trunks: "resnet50" (block_layout "post_add", the released model, or
// "standard"), "resnet18" (standard basic blocks), both with head "C";
// "vgg_a" (the NIPS'15 paper variant, head "paper"). Any channel widths.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/ops.h"
#include "models/model_weights.h"

namespace fovea::models {

// One tensor a model reads: its name in the file and its shape. (Not
// "TensorSpec": multipathnet.h has its own, richer, one.)
struct WeightSpec {
    std::string name;
    Shape shape;
};

// Checks a file against a model's table: every listed tensor present with its
// exact shape and no tensor that the table does not list, except names that
// start with `foreign_prefix` (when not empty: a part of the file another
// model reads). Error(Weights) naming the tensor (and both shapes).
void check_tensor_specs(const ModelWeights & weights, const std::vector<WeightSpec> & specs,
                        const std::string & foreign_prefix = std::string());

// The hyper-parameters of DeepMask, read from the config and checked for
// range and consistency (Error(Weights) naming the key).
struct DeepMaskConfig {
    std::string trunk;         // resnet50 | resnet18 | vgg_a
    std::string block_layout;  // ResNet: post_add | standard
    int64_t base_width = 0;    // ResNet w (64 released)
    int64_t proj_channels = 0; // ResNet P (128)
    std::vector<int64_t> stage_widths;  // VGG-A: 5 stage widths
    bool pool_ceil = false;    // VGG-A pools
    int64_t mask_conv = 0;     // VGG-A mask 1x1 conv width
    int64_t score_fc1 = 0;     // VGG-A score fc1 width
    int64_t embed_dim = 0;     // D (512)
    int64_t score_hidden = 0;  // H (1024)
    int64_t wSz = 0;           // patch side (192 ResNet, 224 VGG-A)
    int64_t fSz = 0;           // trunk side after the crop (10 ResNet, 14 VGG-A)
    int64_t oSz = 0;           // mask side (56)
    int64_t trunk_crop = 0;    // Crop(k) after layer3 in patch mode (1 ResNet, 0 VGG-A)

    bool is_vgg() const { return trunk == "vgg_a"; }
    // ResNet: 4 (bottleneck) or 1 (basic block).
    int64_t expansion() const { return trunk == "resnet50" ? 4 : 1; }
    // Channels of the taps conv1, layer1, layer2, layer3 (ResNet).
    std::vector<int64_t> tap_channels() const;

    static DeepMaskConfig from(const Config & config);
};

// Every tensor of a DeepMask with this config, in module order.
std::vector<WeightSpec> deepmask_tensor_specs(const DeepMaskConfig & config);

// A cell of the stride-16 output grid, 0-based.
struct GridCell {
    int64_t row = 0;
    int64_t col = 0;
};

struct DeepMaskPatchOutput {
    Tensor mask_logits;   // [N, oSz, oSz]
    Tensor score_logits;  // [N]
    Tensor embedding;     // [N, D]
};

// ResNet trunk taps (after the ReLU of each stage): conv1 stride 2, layer1
// stride 4, layer2 stride 8, layer3 stride 16 (after Crop(trunk_crop) in
// patch mode). SharpMask's skip inputs.
struct TrunkTaps {
    Tensor conv1, layer1, layer2, layer3;
};

// One image through the fully convolutional form.
struct DeepMaskDense {
    Tensor score_logits;  // [gh, gw] objectness logits
    Tensor embedding;     // [1, D, gh, gw]
    TrunkTaps taps;       // ResNet, when asked for (keep_taps)
};

class DeepMask {
  public:
    // Checks the architecture ("deepmask", or "sharpmask": its DeepMask part),
    // the config and every tensor shape; a "deepmask" file must have no tensor
    // the model does not use. Weights live on the backend's device: views of
    // the file on the CPU, uploaded once here (to_device) on a GPU. Every
    // input and output of the methods below lives on that device too.
    static DeepMask load(const ModelWeights & weights, Backend & backend = cpu_backend());

    const DeepMaskConfig & config() const { return config_; }

    // patches: [N, 3, wSz, wSz] normalised RGB (Error(Input) otherwise).
    DeepMaskPatchOutput forward_patch(const Tensor & patches) const;

    // Output grid of the fully convolutional form for an h x w input:
    // L(n) - (fSz - 1) per side, L = four halvings (ceil for the ResNets).
    // Returns {0, 0} if the input is too small for one cell.
    std::pair<int64_t, int64_t> grid_size(int64_t h, int64_t w) const;

    // image: [1, 3, H, W], already padded and normalised, with a grid of at
    // least one cell. keep_taps keeps the ResNet trunk taps (for SharpMask).
    DeepMaskDense dense(const Tensor & image, bool keep_taps = false) const;
    // Embeddings [K, D] and mask logits [K, oSz, oSz] at the given cells
    // (Error(Input) for a cell outside the grid).
    Tensor embeddings_at(const DeepMaskDense & dense, const std::vector<GridCell> & cells) const;
    Tensor masks_at(const DeepMaskDense & dense, const std::vector<GridCell> & cells) const;

    // Embeddings [K, D] -> mask logits [K, oSz, oSz].
    Tensor mask_head(const Tensor & embeddings) const;

  private:
    struct Conv {
        Tensor weight, bias;
        int stride = 1;
        int sym_pad = 0;   // symmetric padding applied before the conv
        int zero_pad = 0;  // zero padding inside the conv
        int dilation = 1;
        Activation act = Activation::None;
    };
    struct Linear {
        Tensor weight, bias;  // [M, K], [M]
        Tensor weight_1x1;    // [M, K, 1, 1]: the same Linear per map location
    };
    struct Block {
        Conv conv1, conv2, conv3;  // conv3: bottleneck only
        Conv downsample;           // defined where channels change
        // A post-add affine, ReLU(scale * (main + shortcut) + bias), is folded
        // into the last conv's weights and bias; the shortcut is then scaled.
        Tensor residual_scale;
    };

    DeepMask(DeepMaskConfig config, Backend & backend) : config_(std::move(config)), backend_(&backend) {}
    // Reads every DeepMask tensor (shapes already checked).
    void read(const ModelWeights & weights);
    Conv upload_conv(const Tensor & weight, const Tensor & bias, int stride, int sym_pad, int zero_pad,
                     Activation act) const;
    Conv read_conv(const ModelWeights & w, const std::string & name, int stride, int sym_pad, int zero_pad,
                   Activation act) const;
    // The same conv times out_scale per output channel, plus out_shift:
    // scale * (W x + b) + shift as W' x + b'.
    Conv read_conv_folded(const ModelWeights & w, const std::string & name, int stride, int sym_pad, int zero_pad,
                          const Tensor & out_scale, const Tensor & out_shift) const;
    Linear read_linear(const ModelWeights & w, const std::string & name) const;

    // With a residual, ReLU(conv(x) + residual_scale * residual) in one pass
    // (c's own activation must be none; residual_scale may be undefined): a
    // residual block's last conv and its skip connection.
    Tensor conv(const Conv & c, const Tensor & x, const Tensor & residual = Tensor(),
                const Tensor & residual_scale = Tensor()) const;
    Tensor linear(const Linear & l, const Tensor & x, Activation act) const;
    Tensor linear_map(const Linear & l, const Tensor & x, Activation act) const;
    Tensor block(const Block & b, const Tensor & x) const;
    // The ResNet trunk up to the taps; layer3 cropped in patch mode.
    TrunkTaps trunk_taps(const Tensor & x, bool patch) const;
    // VGG-A conv5 features.
    Tensor vgg_features(const Tensor & x) const;
    // forward_patch, keeping the ResNet taps in *taps when given.
    DeepMaskPatchOutput run_patch(const Tensor & patches, TrunkTaps * taps) const;
    void check_input(const Tensor & x, const char * what) const;

    friend class SharpMask;

    DeepMaskConfig config_;
    Backend * backend_;
    // ResNet
    Conv conv1_;
    std::vector<std::vector<Block>> layers_;
    Conv proj_, embed_;
    Linear mask_fc_, score_fc1_, score_fc2_;
    // VGG-A
    std::vector<std::vector<Conv>> stages_;
    Conv mask_conv_, mask_fc_conv_, score_fc1_conv_;
    Linear mask_out_, score_fc3_;
};

// L(n) of the ResNet trunk: four ceil-halvings (conv1, max-pool, layer2, layer3).
int64_t resnet_stride16_size(int64_t n);

}  // namespace fovea::models
