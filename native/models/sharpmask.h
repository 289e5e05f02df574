// SharpMask (facebookresearch/deepmask SharpMask.lua + InferSharpMask.lua):
// a DeepMask (ResNet trunk) plus top-down refinement. M_1 = v0(embedding)
// viewed [km, fSz, fSz]; for i = 1..4 with skip tap F_i (layer3, layer2,
// layer1, conv1): M_{i+1} = Up2_nearest(ReLU(h_i(F_i) + v_i(M_i))); then
// `final` gives 16·fSz x 16·fSz (160x160) mask logits for the central iSz
// square of the wSz patch.
//
// Whole-image inference runs each h_i once on its whole tap map; a selected
// cell (r, c) then reads the window of side fSz·2^(i-1) at (r·2^(i-1),
// c·2^(i-1)) of h_i's output, zero-filled past the map's edge, and only the
// vertical path runs per cell.
#pragma once

#include <cstdint>
#include <vector>

#include "models/deepmask.h"

namespace fovea::models {

struct SharpMaskConfig {
    DeepMaskConfig deepmask;
    int64_t km = 0;                  // = ks; k_i = km / 2^(i-1)
    std::vector<int64_t> nhu2;       // h_i hidden widths (64, 64, 64, 32)
    std::vector<int64_t> skip_crops; // patch-mode crops of F_i (0, 2, 4, 8)

    // k_i for i = 1..4 (index 0..3).
    int64_t k(int i) const { return km >> i; }
    // The refined mask side: fSz · 16.
    int64_t mask_size() const { return deepmask.fSz * 16; }

    static SharpMaskConfig from(const Config & config);
};

// Every tensor of a SharpMask: the DeepMask ones, then refine.*.
std::vector<WeightSpec> sharpmask_tensor_specs(const SharpMaskConfig & config);

struct SharpMaskPatchOutput {
    Tensor mask_logits;     // [N, 16 fSz, 16 fSz] refined
    Tensor dm_mask_logits;  // [N, oSz, oSz] the DeepMask head on the same patches
    Tensor score_logits;    // [N]
    Tensor embedding;       // [N, D]
};

// One image through the fully convolutional form.
struct SharpMaskDense {
    DeepMaskDense deepmask;       // scores and embedding (no taps: h_maps replace them)
    std::vector<Tensor> h_maps;   // h_i on the whole tap maps: [1, k_i/2, ., .], i = 1..4
};

class SharpMask {
  public:
    // The file's architecture must be "sharpmask"; every tensor is checked and
    // must be used.
    static SharpMask load(const ModelWeights & weights, Backend & backend = cpu_backend());

    const SharpMaskConfig & config() const { return config_; }
    const DeepMask & deepmask() const { return deepmask_; }

    // patches: [N, 3, wSz, wSz].
    SharpMaskPatchOutput forward_patch(const Tensor & patches) const;

    // image: [1, 3, H, W] padded and normalised (see DeepMask::dense).
    SharpMaskDense dense(const Tensor & image) const;
    // Refined mask logits [K, 16 fSz, 16 fSz] at the given grid cells.
    Tensor masks_at(const SharpMaskDense & dense, const std::vector<GridCell> & cells) const;

  private:
    // h: conv_a, conv_b, conv_c; v: conv_a, conv_b (each SymPad(1) + 3x3).
    using Net = std::vector<DeepMask::Conv>;

    SharpMask(SharpMaskConfig config, DeepMask deepmask)
        : config_(std::move(config)), deepmask_(std::move(deepmask)) {}

    Tensor run(const Net & net, const Tensor & x) const;
    // The vertical path from embeddings [K, D] and the h_i outputs hs[i]
    // [K, k_i/2, fSz·2^i, fSz·2^i] -> [K, 16 fSz, 16 fSz].
    Tensor top_down(const Tensor & embeddings, const std::vector<Tensor> & hs) const;

    SharpMaskConfig config_;
    DeepMask deepmask_;
    DeepMask::Linear v0_;
    std::vector<Net> h_, v_;
    DeepMask::Conv final_;
};

}  // namespace fovea::models
