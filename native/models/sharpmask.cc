#include "models/sharpmask.h"

#include "core/device.h"
#include "core/error.h"

namespace fovea::models {

namespace {

[[noreturn]] void fail(const std::string & message) { throw Error(ErrorCode::Weights, message); }

std::string quoted(const std::string & s) { return "\"" + s + "\""; }

// The skip taps in refinement order (i = 1..4), fixed by the released model.
const char * const kSkipTaps[4] = {"layer3", "layer2", "layer1", "conv1"};

}  // namespace

SharpMaskConfig SharpMaskConfig::from(const Config & c) {
    SharpMaskConfig s;
    s.deepmask = DeepMaskConfig::from(c);
    const DeepMaskConfig & d = s.deepmask;
    if (d.is_vgg()) c.fail("trunk", "SharpMask is defined on the ResNet trunks only");

    s.km = c.integer("km");
    // k_4 / 2 = km / 16 channels reach the final conv.
    if (s.km < 16 || s.km > 4096 || s.km % 16 != 0) {
        c.fail("km", std::to_string(s.km) + " is not a multiple of 16 in [16, 4096]");
    }
    if (c.integer("ks") != s.km) c.fail("ks", "must equal km (the h and v outputs are summed)");
    s.nhu2 = c.integers("nhu2");
    if (s.nhu2.size() != 4) c.fail("nhu2", "must have 4 values");
    for (int64_t v : s.nhu2) {
        if (v < 1 || v > 65536) c.fail("nhu2", "width " + std::to_string(v) + " is out of range");
    }
    const std::vector<std::string> taps = c.strings("skip_taps");
    if (taps.size() != 4) c.fail("skip_taps", "must have 4 values");
    for (size_t i = 0; i < 4; i++) {
        if (taps[i] != kSkipTaps[i]) {
            c.fail("skip_taps", "must be [layer3, layer2, layer1, conv1] (the released refinement), got " +
                                    quoted(taps[i]) + " at " + std::to_string(i));
        }
    }
    s.skip_crops = c.integers("skip_crops");
    if (s.skip_crops.size() != 4) c.fail("skip_crops", "must have 4 values");
    // Patch mode: the cropped F_i must be fSz·2^(i-1) square. Tap sides of
    // a wSz patch: conv1 ⌈wSz/2⌉, then one halving per stage; layer3 is
    // already cropped by trunk_crop.
    int64_t side[4];
    side[3] = (d.wSz + 1) / 2;
    for (int i = 2; i >= 0; i--) side[i] = (side[i + 1] + 1) / 2;
    side[0] -= 2 * d.trunk_crop;
    for (int i = 0; i < 4; i++) {
        const int64_t crop = s.skip_crops[size_t(i)];
        if (crop < 0 || side[i] - 2 * crop != (d.fSz << i)) {
            c.fail("skip_crops", "crop " + std::to_string(crop) + " of " + kSkipTaps[i] + " (side " +
                                     std::to_string(side[i]) + ") does not give " + std::to_string(d.fSz << i));
        }
    }
    if (c.integer("iSz") != s.mask_size()) c.fail("iSz", "must be 16 * fSz (the refined mask side)");
    return s;
}

std::vector<WeightSpec> sharpmask_tensor_specs(const SharpMaskConfig & c) {
    std::vector<WeightSpec> s = deepmask_tensor_specs(c.deepmask);
    auto conv = [&](const std::string & name, const Shape & w) {
        s.push_back({name + ".weight", w});
        s.push_back({name + ".bias", {w[0]}});
    };
    const int64_t f = c.deepmask.fSz;
    s.push_back({"refine.v0.weight", {c.km * f * f, c.deepmask.embed_dim}});
    s.push_back({"refine.v0.bias", {c.km * f * f}});
    const std::vector<int64_t> ch = c.deepmask.tap_channels();  // conv1, layer1, layer2, layer3
    for (int i = 0; i < 4; i++) {
        const std::string h = "refine.h" + std::to_string(i + 1), v = "refine.v" + std::to_string(i + 1);
        const int64_t k = c.k(i), nhu2 = c.nhu2[size_t(i)];
        conv(h + ".conv_a", {nhu2, ch[size_t(3 - i)], 3, 3});
        conv(h + ".conv_b", {k, nhu2, 3, 3});
        conv(h + ".conv_c", {k / 2, k, 3, 3});
        conv(v + ".conv_a", {k, k, 3, 3});
        conv(v + ".conv_b", {k / 2, k, 3, 3});
    }
    conv("refine.final", {1, c.km / 16, 3, 3});
    return s;
}

SharpMask SharpMask::load(const ModelWeights & weights, Backend & backend) {
    if (weights.architecture() != "sharpmask") {
        fail(weights.path() + ": architecture " + quoted(weights.architecture()) + " is not a SharpMask");
    }
    SharpMaskConfig config = SharpMaskConfig::from(weights.config());
    check_tensor_specs(weights, sharpmask_tensor_specs(config));
    DeepMask dm(config.deepmask, backend);
    dm.read(weights);
    SharpMask m(std::move(config), std::move(dm));

    m.v0_ = m.deepmask_.read_linear(weights, "refine.v0");
    auto conv3 = [&](const std::string & name, Activation act) {
        return m.deepmask_.read_conv(weights, name, 1, 1, 0, act);
    };
    const Activation relu = Activation::Relu, none = Activation::None;
    for (int i = 1; i <= 4; i++) {
        const std::string h = "refine.h" + std::to_string(i), v = "refine.v" + std::to_string(i);
        m.h_.push_back({conv3(h + ".conv_a", relu), conv3(h + ".conv_b", relu), conv3(h + ".conv_c", none)});
        m.v_.push_back({conv3(v + ".conv_a", relu), conv3(v + ".conv_b", none)});
    }
    m.final_ = conv3("refine.final", none);
    weights.check_all_used();
    return m;
}

Tensor SharpMask::run(const Net & net, const Tensor & x) const {
    Tensor y = x;
    for (const DeepMask::Conv & c : net) y = deepmask_.conv(c, y);
    return y;
}

Tensor SharpMask::top_down(const Tensor & embeddings, const std::vector<Tensor> & hs) const {
    Backend & b = *deepmask_.backend_;
    const int64_t k = embeddings.dim(0), f = config_.deepmask.fSz;
    Tensor m = b.linear(embeddings, v0_.weight, v0_.bias, Activation::None).reshape({k, config_.km, f, f});
    for (size_t i = 0; i < 4; i++) {
        m = b.upsample_nearest(b.add(hs[i], run(v_[i], m), Activation::Relu), 2);
    }
    const int64_t side = config_.mask_size();
    return deepmask_.conv(final_, m).reshape({k, side, side});
}

SharpMaskPatchOutput SharpMask::forward_patch(const Tensor & patches) const {
    TrunkTaps taps;
    DeepMaskPatchOutput dm = deepmask_.run_patch(patches, &taps);
    Backend & b = *deepmask_.backend_;
    const Tensor * f[4] = {&taps.layer3, &taps.layer2, &taps.layer1, &taps.conv1};
    std::vector<Tensor> hs;
    for (size_t i = 0; i < 4; i++) {
        Pad2dParams crop;
        crop.top = crop.left = crop.bottom = crop.right = -int(config_.skip_crops[i]);
        hs.push_back(run(h_[i], crop.top ? b.pad2d(*f[i], crop) : *f[i]));
    }
    SharpMaskPatchOutput out;
    out.mask_logits = top_down(dm.embedding, hs);
    out.dm_mask_logits = std::move(dm.mask_logits);
    out.score_logits = std::move(dm.score_logits);
    out.embedding = std::move(dm.embedding);
    return out;
}

SharpMaskDense SharpMask::dense(const Tensor & image) const {
    SharpMaskDense out;
    out.deepmask = deepmask_.dense(image, true);
    TrunkTaps taps = std::move(out.deepmask.taps);
    out.deepmask.taps = TrunkTaps();  // the h maps are all the refinement needs
    const Tensor * f[4] = {&taps.layer3, &taps.layer2, &taps.layer1, &taps.conv1};
    for (size_t i = 0; i < 4; i++) out.h_maps.push_back(run(h_[i], *f[i]));
    return out;
}

Tensor SharpMask::masks_at(const SharpMaskDense & dense, const std::vector<GridCell> & cells) const {
    FOVEA_CHECK_INPUT(dense.h_maps.size() == 4, "SharpMask: the dense result has " << dense.h_maps.size()
                                                                                   << " h maps, expected 4");
    const Tensor e = deepmask_.embeddings_at(dense.deepmask, cells);  // also checks the cells
    const int64_t side_out = config_.mask_size();
    if (cells.empty()) return to_device(Tensor::empty({0, side_out, side_out}), deepmask_.backend_->device());
    Backend & b = *deepmask_.backend_;
    const int64_t f = config_.deepmask.fSz;
    std::vector<Tensor> hs;
    for (size_t i = 0; i < 4; i++) {
        const Tensor & map = dense.h_maps[i];
        FOVEA_CHECK_INPUT(map.defined() && map.ndim() == 4 && map.dim(0) == 1 && map.dim(1) == config_.k(int(i)) / 2,
                          "SharpMask: h map " << i + 1 << " is not [1," << config_.k(int(i)) / 2 << ",H,W]");
        const int64_t t = int64_t(1) << i, side = f * t;
        std::vector<Tensor> windows;
        for (const GridCell & c : cells) {
            // Crop to the window; where it runs past the map the negative
            // crop becomes a zero pad.
            Pad2dParams p;
            p.top = -int(c.row * t);
            p.left = -int(c.col * t);
            p.bottom = int(c.row * t + side - map.dim(2));
            p.right = int(c.col * t + side - map.dim(3));
            windows.push_back(b.pad2d(map, p));
        }
        hs.push_back(windows.size() == 1 ? windows[0] : b.concat(windows, 0));
    }
    return top_down(e, hs);
}

}  // namespace fovea::models
