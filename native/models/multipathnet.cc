#include "models/multipathnet.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>
#include <utility>

#include "core/device.h"
#include "core/error.h"

namespace fovea::models {

namespace {

// Value checks of MultiPathNetConfig::parse; messages start with `where`.
struct ConfigReader {
    const Config & c;
    const std::string & where;

    [[noreturn]] void fail(const std::string & message) const {
        throw Error(ErrorCode::Weights, where + ": " + message);
    }
    int64_t positive(const std::string & key) const {
        int64_t v = c.integer(key);
        if (v < 1 || v > (int64_t(1) << 20)) fail(key + " must be in [1, 2^20], got " + std::to_string(v));
        return v;
    }
    // `from` is c or an object inside it, at `path` ("tap_scales.").
    float positive_number(const Config & from, const std::string & key, const std::string & path = "") const {
        double v = from.number(key);
        if (!(v > 0) || !std::isfinite(float(v))) fail(path + key + " must be a finite number > 0");
        return float(v);
    }
    float positive_number(const std::string & key) const { return positive_number(c, key); }
};

// The MultiPath towers of models/multipathnet.lua (:87-105): R1..R4 on the
// foveal regions 1x, 1.5x, 2x, 4x with conv3 only on R1 and conv4 on R1..R3,
// plus the het tower RH on 1.5x with all taps. The config's "towers" and
// "foveal_regions" record the same layout; no other is defined.
std::vector<MultiPathTower> multipath_towers() {
    using T = VggTap;
    return {{"R1", 0, {T::Conv5, T::Conv4, T::Conv3}, false},
            {"R2", 1, {T::Conv5, T::Conv4}, false},
            {"R3", 2, {T::Conv5, T::Conv4}, false},
            {"R4", 3, {T::Conv5}, false},
            {"RH", 1, {T::Conv5, T::Conv4, T::Conv3}, true}};
}

// VGG-16 convs per stage.
constexpr int kVggConvs[5] = {2, 2, 3, 3, 3};

int64_t tap_channels(const MultiPathNetConfig & c, VggTap t) {
    return c.stage_widths[t == VggTap::Conv5 ? 4 : t == VggTap::Conv4 ? 3 : 2];
}

void add(std::vector<TensorSpec> & specs, const std::string & name, Shape shape, TensorRole role,
         int64_t affine = 0) {
    specs.push_back({name, std::move(shape), role, affine});
}

void add_linear(std::vector<TensorSpec> & specs, const std::string & prefix, int64_t out, int64_t in) {
    add(specs, prefix + ".weight", {out, in}, TensorRole::Learned);
    add(specs, prefix + ".bias", {out}, TensorRole::Learned);
}

// ROIs as [K, 5] (batch 0, x1, y1, x2, y2), grown by f * (w, h) on each side
// (nn.Foveal): computed in double and rounded to float, as Foveal.lua does.
// rois: a host tensor; so is the result (a small table, uploaded by the caller).
Tensor region_rois(const Tensor & rois, double f) {
    const int64_t k = rois.dim(0);
    Tensor out = Tensor::empty({k, 5});
    const float * r = rois.f32();
    float * o = out.f32();
    for (int64_t i = 0; i < k; i++) {
        double x1 = r[4 * i], y1 = r[4 * i + 1], x2 = r[4 * i + 2], y2 = r[4 * i + 3];
        double w = x2 - x1, h = y2 - y1;
        o[5 * i] = 0.0f;
        o[5 * i + 1] = float(x1 - f * w);
        o[5 * i + 2] = float(y1 - f * h);
        o[5 * i + 3] = float(x2 + f * w);
        o[5 * i + 4] = float(y2 + f * h);
    }
    return out;
}

// Rows [begin, end) of a float32 tensor on any device, without a copy (the
// view borrows `t`'s buffer; `t` must outlive it).
Tensor rows(const Tensor & t, int64_t begin, int64_t end) {
    FOVEA_CHECK(t.dtype() == DType::F32, ErrorCode::Internal, "rows: expected a float32 tensor");
    Shape shape = t.shape();
    int64_t row = t.numel() / std::max<int64_t>(shape[0], 1);
    shape[0] = end - begin;
    return Tensor::wrap(t.data<float>() + begin * row, shape, DType::F32, t.device());
}

Tensor concat_or_empty(Backend & be, const std::vector<Tensor> & parts, int axis, const Shape & empty_shape) {
    if (parts.empty()) return to_device(Tensor::zeros(empty_shape), be.device());
    if (parts.size() == 1) return parts[0];
    return be.concat(parts, axis);
}

}  // namespace

// ---------------------------------------------------------------------------
// config

MultiPathNetConfig MultiPathNetConfig::parse(const Config & c, const std::string & where) {
    const ConfigReader r{c, where};
    MultiPathNetConfig m;
    std::string variant = c.string("variant");
    if (variant == "resnet18_integral") {
        m.variant = MultiPathNetVariant::ResNet18Integral;
    } else if (variant == "vgg16_multipath") {
        m.variant = MultiPathNetVariant::Vgg16MultiPath;
    } else {
        r.fail("unknown variant \"" + variant + "\" (fovea knows resnet18_integral, vgg16_multipath)");
    }
    m.num_classes = r.positive("num_classes");
    m.integral_heads = r.positive("integral_heads");
    std::vector<int64_t> pool = c.integers("roi_pool");
    if (pool.size() != 2 || pool[0] < 1 || pool[1] < 1 || pool[0] > 1024 || pool[1] > 1024) {
        r.fail("roi_pool must be [H, W] in [1, 1024]");
    }
    m.roi_pool_h = int(pool[0]);
    m.roi_pool_w = int(pool[1]);
    int64_t version = c.integer("roi_pool_version");
    if (version != 1 && version != 2) r.fail("roi_pool_version must be 1 or 2, got " + std::to_string(version));
    m.roi_round_bins = version == 2;

    if (m.variant == MultiPathNetVariant::ResNet18Integral) {
        int64_t feature_dim = r.positive("feature_dim");
        if (feature_dim % 8 != 0) r.fail("feature_dim must be 8 x the conv1 width, got " + std::to_string(feature_dim));
        m.base_width = feature_dim / 8;
        if (c.has("base_width") && c.integer("base_width") != m.base_width) {
            r.fail("base_width " + std::to_string(c.integer("base_width")) + " disagrees with feature_dim " +
                   std::to_string(feature_dim));
        }
        m.roi_scale = r.positive_number("roi_scale");
        // Layer4 halves the pooled map; the 7x7 average pool must then give one vector per ROI.
        if ((m.roi_pool_h + 1) / 2 != 7 || (m.roi_pool_w + 1) / 2 != 7) {
            r.fail("roi_pool must give a 7x7 layer4 output (13 or 14), got " + std::to_string(m.roi_pool_h) + "x" +
                   std::to_string(m.roi_pool_w));
        }
        if (c.has("conv_bias")) m.conv_bias = c.boolean("conv_bias");
        if (c.has("shortcut_affine")) m.shortcut_affine = c.boolean("shortcut_affine");
        if (c.has("prefold_layer1")) m.prefold_layer1 = c.boolean("prefold_layer1");
        return m;
    }

    m.stage_widths = c.integers("stage_widths");
    if (m.stage_widths.size() != 5) r.fail("stage_widths must list the 5 VGG-16 stages");
    for (int64_t w : m.stage_widths) {
        if (w < 1 || w > (1 << 20)) r.fail("stage_widths must be in [1, 2^20]");
    }
    m.pool_ceil = c.boolean("pool_ceil");
    Config scales = c.object("tap_scales");
    m.tap_scales[int(VggTap::Conv5)] = r.positive_number(scales, "conv5", "tap_scales.");
    m.tap_scales[int(VggTap::Conv4)] = r.positive_number(scales, "conv4", "tap_scales.");
    m.tap_scales[int(VggTap::Conv3)] = r.positive_number(scales, "conv3", "tap_scales.");
    // The other mode (fixed per-tap scales instead of L2 norm) has no reference to test against.
    if (!c.boolean("conv345_norm")) r.fail("conv345_norm = false is not supported");
    double eps = c.number("norm_eps");
    if (!(eps >= 0) || !std::isfinite(float(eps))) r.fail("norm_eps must be finite and >= 0");
    m.norm_eps = float(eps);
    m.norm_scale = r.positive_number("norm_scale");
    m.mix_channels = r.positive("mix_channels");
    m.fc_dim = r.positive("fc_dim");
    m.model_het = c.boolean("model_het");
    m.foveal_factors = {0.0, 0.25, 0.5, 1.5};
    m.towers = multipath_towers();
    return m;
}

int64_t MultiPathNetConfig::cls_features() const {
    if (variant == MultiPathNetVariant::ResNet18Integral) return 8 * base_width;
    int64_t n = 0;
    for (const MultiPathTower & t : towers) n += t.het ? 0 : 1;
    return n * fc_dim;
}

int64_t MultiPathNetConfig::box_features() const {
    if (variant == MultiPathNetVariant::ResNet18Integral) return 8 * base_width;
    return model_het ? fc_dim : cls_features();
}

// ---------------------------------------------------------------------------
// tensor table

std::vector<TensorSpec> multipathnet_tensor_specs(const MultiPathNetConfig & c) {
    std::vector<TensorSpec> specs;
    if (c.variant == MultiPathNetVariant::ResNet18Integral) {
        const int64_t w = c.base_width;
        // Bias of a trunk conv: the checkpoint's own (conv_bias, or made by the
        // build-time fold of conv1 + layer1), else the export's fold of a fixed affine.
        auto conv = [&](const std::string & prefix, Shape shape, bool prefolded, bool affine) {
            int64_t oc = shape[0];
            bool learned_bias = c.conv_bias || prefolded;
            add(specs, prefix + ".weight", std::move(shape), TensorRole::Learned, affine && !prefolded ? oc : 0);
            add(specs, prefix + ".bias", {oc}, learned_bias ? TensorRole::Learned : TensorRole::FoldedShift);
        };
        conv("trunk.conv1", {w, 3, 7, 7}, c.prefold_layer1, true);
        int64_t cin = w;
        for (int layer = 1; layer <= 4; layer++) {
            int64_t wl = w << (layer - 1);
            bool prefolded = layer == 1 && c.prefold_layer1;
            for (int j = 0; j < 2; j++) {
                std::string p = (layer == 4 ? "tower.layer4." : "trunk.layer" + std::to_string(layer) + ".") +
                                std::to_string(j);
                conv(p + ".conv1", {wl, cin, 3, 3}, prefolded, true);
                conv(p + ".conv2", {wl, wl, 3, 3}, prefolded, true);
                if (cin != wl) conv(p + ".downsample", {wl, cin, 1, 1}, prefolded, c.shortcut_affine);
                cin = wl;
            }
        }
    } else {
        int64_t cin = 3;
        for (int s = 0; s < 5; s++) {
            for (int i = 0; i < kVggConvs[s]; i++) {
                std::string p = "trunk.conv" + std::to_string(s + 1) + "_" + std::to_string(i + 1);
                add(specs, p + ".weight", {c.stage_widths[s], cin, 3, 3}, TensorRole::Learned);
                add(specs, p + ".bias", {c.stage_widths[s]}, TensorRole::Learned);
                cin = c.stage_widths[s];
            }
        }
        for (size_t t = 0; t < c.towers.size(); t++) {
            int64_t in = 0;
            for (VggTap tap : c.towers[t].taps) in += tap_channels(c, tap);
            std::string p = "towers." + std::to_string(t);
            add(specs, p + ".mix.weight", {c.mix_channels, in, 1, 1}, TensorRole::Learned);
            add(specs, p + ".mix.bias", {c.mix_channels}, TensorRole::Learned);
            add_linear(specs, p + ".fc6", c.fc_dim, c.mix_channels * c.roi_pool_h * c.roi_pool_w);
            add_linear(specs, p + ".fc7", c.fc_dim, c.fc_dim);
        }
    }
    for (int64_t k = 0; k < c.integral_heads; k++) {
        add_linear(specs, "cls." + std::to_string(k), c.num_classes, c.cls_features());
    }
    add_linear(specs, "bbox", 4 * c.num_classes, c.box_features());
    add(specs, "bbox_norm.mean", {4}, TensorRole::Buffer);
    add(specs, "bbox_norm.std", {4}, TensorRole::Buffer);
    return specs;
}

CheckpointSize multipathnet_checkpoint_size(const MultiPathNetConfig & config) {
    CheckpointSize s;
    for (const TensorSpec & t : multipathnet_tensor_specs(config)) {
        int64_t n = shape_numel(t.shape);
        s.stored += n;
        if (t.role == TensorRole::Learned) s.learned += n;
        s.fixed += 2 * t.affine_channels;
    }
    return s;
}

// ---------------------------------------------------------------------------
// model

namespace {

// The config of a MultiPathNet file; checked first so that another model's file
// is named as such rather than by its first missing key.
const Config & multipathnet_file_config(const ModelWeights & weights) {
    if (weights.architecture() != "multipathnet") {
        throw Error(ErrorCode::Weights, weights.path() + ": architecture is \"" + weights.architecture() +
                                            "\", expected \"multipathnet\"");
    }
    return weights.config();
}

}  // namespace

MultiPathNet::MultiPathNet(const ModelWeights & weights, Backend & backend)
    : config_(MultiPathNetConfig::parse(multipathnet_file_config(weights), weights.path() + ": fovea.config")),
      backend_(&backend) {
    // Every weight is uploaded once, here, to the backend's device.
    const Device dev = backend.device();
    std::unordered_map<std::string, Tensor> t;
    for (const TensorSpec & s : multipathnet_tensor_specs(config_)) {
        t[s.name] = to_device(weights.get(s.name, s.shape), dev);
    }
    weights.check_all_used();

    auto conv = [&](const std::string & prefix, int stride, int pad, Activation act) {
        Conv c{t.at(prefix + ".weight"), t.at(prefix + ".bias"), {}};
        c.params.stride_h = c.params.stride_w = stride;
        c.params.pad_top = c.params.pad_left = c.params.pad_bottom = c.params.pad_right = pad;
        c.params.activation = act;
        return c;
    };
    auto linear = [&](const std::string & prefix) { return Linear{t.at(prefix + ".weight"), t.at(prefix + ".bias")}; };

    if (config_.variant == MultiPathNetVariant::ResNet18Integral) {
        conv1_ = conv("trunk.conv1", 2, 3, Activation::Relu);
        int64_t cin = config_.base_width;
        for (int layer = 1; layer <= 4; layer++) {
            int64_t wl = config_.base_width << (layer - 1);
            for (int j = 0; j < 2; j++) {
                std::string p = (layer == 4 ? "tower.layer4." : "trunk.layer" + std::to_string(layer) + ".") +
                                std::to_string(j);
                int stride = layer > 1 && j == 0 ? 2 : 1;
                Block b;
                b.conv1 = conv(p + ".conv1", stride, 1, Activation::Relu);
                b.conv2 = conv(p + ".conv2", 1, 1, Activation::None);  // ReLU after the sum
                if (cin != wl) b.downsample = conv(p + ".downsample", stride, 0, Activation::None);
                (layer == 4 ? tower_blocks_ : trunk_blocks_).push_back(std::move(b));
                cin = wl;
            }
        }
    } else {
        for (int s = 0; s < 5; s++) {
            stages_.emplace_back();
            for (int i = 0; i < kVggConvs[s]; i++) {
                stages_.back().push_back(
                    conv("trunk.conv" + std::to_string(s + 1) + "_" + std::to_string(i + 1), 1, 1, Activation::Relu));
            }
        }
        for (size_t i = 0; i < config_.towers.size(); i++) {
            std::string p = "towers." + std::to_string(i);
            towers_.push_back({conv(p + ".mix", 1, 0, Activation::None), linear(p + ".fc6"), linear(p + ".fc7")});
        }
    }
    for (int64_t k = 0; k < config_.integral_heads; k++) cls_.push_back(linear("cls." + std::to_string(k)));
    bbox_ = linear("bbox");
    bbox_mean_ = t.at("bbox_norm.mean");
    bbox_std_ = t.at("bbox_norm.std");
    zeros4_ = to_device(Tensor::zeros({4}), dev);
    ones4_ = to_device(Tensor::full({4}, 1.0f), dev);
}

Tensor MultiPathNet::run_block(const Block & b, const Tensor & x) const {
    Backend & be = *backend_;
    const Tensor y = be.conv2d(x, b.conv1.weight, b.conv1.bias, b.conv1.params);
    const Tensor shortcut = b.downsample.weight.defined()
                                ? be.conv2d(x, b.downsample.weight, b.downsample.bias, b.downsample.params)
                                : x;
    // ReLU(conv2(y) + shortcut), the shortcut added as conv2 stores its output.
    Conv2dParams last = b.conv2.params;
    FOVEA_CHECK(last.activation == Activation::None, ErrorCode::Internal, "a residual conv with its own activation");
    last.activation = Activation::Relu;
    return be.conv2d_residual(y, b.conv2.weight, b.conv2.bias, last, shortcut, Tensor());
}

std::vector<Tensor> MultiPathNet::trunk(const Tensor & image) const {
    Backend & be = *backend_;
    if (config_.variant == MultiPathNetVariant::ResNet18Integral) {
        Tensor x = be.conv2d(image, conv1_.weight, conv1_.bias, conv1_.params);
        Pool2dParams pool;
        pool.kernel_h = pool.kernel_w = 3;
        pool.stride_h = pool.stride_w = 2;
        pool.pad_top = pool.pad_left = pool.pad_bottom = pool.pad_right = 1;
        x = be.max_pool2d(x, pool);
        for (const Block & b : trunk_blocks_) x = run_block(b, x);
        return {x};
    }
    Tensor x = image;
    std::vector<Tensor> taps(3);
    for (size_t s = 0; s < stages_.size(); s++) {
        if (s > 0) {
            Pool2dParams pool;
            pool.kernel_h = pool.kernel_w = 2;
            pool.stride_h = pool.stride_w = 2;
            pool.ceil_mode = config_.pool_ceil;
            x = be.max_pool2d(x, pool);
        }
        for (const Conv & c : stages_[s]) x = be.conv2d(x, c.weight, c.bias, c.params);
        if (s == 2) taps[int(VggTap::Conv3)] = x;
        if (s == 3) taps[int(VggTap::Conv4)] = x;
        if (s == 4) taps[int(VggTap::Conv5)] = x;
    }
    return taps;
}

void MultiPathNet::heads(const Tensor & f_cls, const Tensor & f_box, bool keep, MultiPathNetOutput & out) const {
    Backend & be = *backend_;
    const int64_t n = f_cls.dim(0), c = config_.num_classes, h = config_.integral_heads;
    std::vector<Tensor> logits;
    for (const Linear & l : cls_) {
        logits.push_back(be.linear(f_cls, l.weight, l.bias, Activation::None).reshape({1, n, c}));
    }
    Tensor all = be.concat(logits, 0);  // [h, n, c]
    // Mean over the heads of their softmaxes (the ModeSwitch eval branch): an
    // h x 1 average pool over the stacked probabilities.
    Pool2dParams mean;
    mean.kernel_h = int(h);
    Tensor prob = be.avg_pool2d(be.softmax(all, -1).reshape({1, 1, h, n * c}), mean).reshape({n, c});
    Tensor raw = be.linear(f_box, bbox_.weight, bbox_.bias, Activation::None);
    // BBoxNorm (d * std + mean per group of 4) as a batch norm over the 4
    // delta slots: mean 0, variance 1 and epsilon 0 leave the affine exact.
    Tensor deltas = be.batch_norm(raw.reshape({n * c, 4}), bbox_std_, bbox_mean_, zeros4_, ones4_, 0.0f)
                        .reshape({n, 4 * c});
    out.cls_prob = prob;
    out.bbox_deltas = deltas;
    if (keep) {
        out.cls_logits = all;
        out.bbox_raw = raw;
    }
}

void MultiPathNet::resnet_chunk(const std::vector<Tensor> & maps, const Tensor & rois5, bool keep,
                                MultiPathNetOutput & out) const {
    Backend & be = *backend_;
    RoiPoolParams rp;
    rp.out_h = config_.roi_pool_h;
    rp.out_w = config_.roi_pool_w;
    rp.spatial_scale = config_.roi_scale;
    rp.round_bins = config_.roi_round_bins;
    Tensor pooled = be.roi_max_pool(maps[0], rois5, rp);
    Tensor y = pooled;
    for (const Block & b : tower_blocks_) y = run_block(b, y);
    Pool2dParams avg;
    avg.kernel_h = avg.kernel_w = 7;
    y = be.avg_pool2d(y, avg);
    Tensor feature = y.reshape({y.dim(0), y.dim(1)});
    heads(feature, feature, keep, out);
    if (keep) {
        out.pooled = pooled;
        out.feature = feature;
    }
}

void MultiPathNet::vgg_chunk(const std::vector<Tensor> & maps, const std::vector<Tensor> & regions, bool keep,
                             MultiPathNetOutput & out) const {
    Backend & be = *backend_;
    const int64_t n = regions[0].dim(0);
    // Pooled and normalised maps by (region, tap): R2 and RH read the same ones.
    std::map<std::pair<int, VggTap>, Tensor> pooled;
    auto pool = [&](int region, VggTap tap) {
        Tensor & p = pooled[{region, tap}];
        if (p.defined()) return p;
        RoiPoolParams rp;
        rp.out_h = config_.roi_pool_h;
        rp.out_w = config_.roi_pool_w;
        rp.spatial_scale = config_.tap_scales[int(tap)];
        rp.round_bins = config_.roi_round_bins;
        Tensor x = be.roi_max_pool(maps[int(tap)], regions[size_t(region)], rp);
        // nn.Normalize(2) per ROI and tap, then the tower's x norm_scale:
        // x * norm_scale / sqrt(sum x^2 + eps), a batch norm whose channels are
        // the ROIs (variance = the ROI's sum of squares, mean 0). The sums are
        // taken here on the host: the Backend has no reduction op, so on a
        // device the pooled maps are downloaded for them (a known round trip
        // of this variant; the per-ROI constants go back up).
        const int64_t d = x.numel() / std::max<int64_t>(n, 1);
        const Tensor xh = to_host(x);
        Tensor sumsq = Tensor::empty({n});
        const float * xp = xh.f32();
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t j = 0; j < d; j++) s += double(xp[i * d + j]) * double(xp[i * d + j]);
            sumsq.f32()[i] = float(s);
        }
        const Device dev = be.device();
        p = be.batch_norm(x.reshape({1, n, d}), to_device(Tensor::full({n}, config_.norm_scale), dev),
                          to_device(Tensor::zeros({n}), dev), to_device(Tensor::zeros({n}), dev),
                          to_device(sumsq, dev), config_.norm_eps)
                .reshape(x.shape());
        return p;
    };
    std::vector<Tensor> cls_parts, tower_out;
    Tensor box;
    for (size_t ti = 0; ti < config_.towers.size(); ti++) {
        const MultiPathTower & tower = config_.towers[ti];
        const Tower & w = towers_[ti];
        std::vector<Tensor> parts;
        for (VggTap tap : tower.taps) parts.push_back(pool(tower.region, tap));
        Tensor x = parts.size() == 1 ? parts[0] : be.concat(parts, 1);
        x = be.conv2d(x, w.mix.weight, w.mix.bias, w.mix.params);
        x = x.reshape({n, x.numel() / std::max<int64_t>(n, 1)});
        x = be.linear(x, w.fc6.weight, w.fc6.bias, Activation::Relu);  // dropout: identity at test time
        x = be.linear(x, w.fc7.weight, w.fc7.bias, Activation::Relu);
        if (tower.het) {
            box = x;
        } else {
            cls_parts.push_back(x);
        }
        tower_out.push_back(x);
    }
    Tensor f_cls = cls_parts.size() == 1 ? cls_parts[0] : be.concat(cls_parts, 1);
    heads(f_cls, config_.model_het ? box : f_cls, keep, out);
    if (keep) out.towers = tower_out;
}

MultiPathNetOutput MultiPathNet::forward(const Tensor & image, const Tensor & rois,
                                         const MultiPathNetOptions & options) const {
    FOVEA_CHECK_INPUT(image.defined() && image.dtype() == DType::F32 && image.ndim() == 4 && image.dim(0) == 1 &&
                          image.dim(1) == 3,
                      "multipathnet: image must be float32 [1, 3, H, W], got "
                          << (image.defined() ? shape_str(image.shape()) : std::string("nothing")));
    FOVEA_CHECK_INPUT(rois.defined() && rois.dtype() == DType::F32 && rois.ndim() == 2 && rois.dim(1) == 4,
                      "multipathnet: rois must be float32 [K, 4] (x1, y1, x2, y2), got "
                          << (rois.defined() ? shape_str(rois.shape()) : std::string("nothing")));
    FOVEA_CHECK_OPTIONS(options.roi_chunk >= 1, "multipathnet: roi_chunk must be >= 1, got " << options.roi_chunk);
    // The ROIs are a small table: checked and grown into the foveal regions
    // on the host, then uploaded once to the backend's device.
    const Tensor rois_host = to_host(rois);
    const Device dev = backend_->device();
    const int64_t k = rois.dim(0);
    const float * r = rois_host.f32();
    for (int64_t i = 0; i < 4 * k; i++) {
        FOVEA_CHECK_INPUT(std::isfinite(r[i]), "multipathnet: ROI " << i / 4 << " has a non-finite coordinate");
    }
    const MultiPathNetConfig & c = config_;
    const bool resnet = c.variant == MultiPathNetVariant::ResNet18Integral;
    const bool keep = options.keep_intermediates;

    // The trunk runs once; everything after the ROI pooling runs per chunk.
    std::vector<Tensor> maps;
    std::vector<Tensor> regions;  // [K, 5] per ROI box the towers pool
    if (k > 0) {
        maps = trunk(image);
        if (resnet) {
            regions.push_back(to_device(region_rois(rois_host, 0.0), dev));
        } else {
            for (double f : c.foveal_factors) regions.push_back(to_device(region_rois(rois_host, f), dev));
        }
    }
    std::vector<MultiPathNetOutput> chunks;
    for (int64_t begin = 0; begin < k; begin += options.roi_chunk) {
        int64_t end = std::min(k, begin + options.roi_chunk);
        std::vector<Tensor> part;
        for (const Tensor & reg : regions) part.push_back(rows(reg, begin, end));
        chunks.emplace_back();
        if (resnet) {
            resnet_chunk(maps, part[0], keep, chunks.back());
        } else {
            vgg_chunk(maps, part, keep, chunks.back());
        }
    }

    Backend & be = *backend_;
    // Joins one field of every chunk; `shape` is its shape for K = 0.
    auto join = [&](Tensor MultiPathNetOutput::*field, int axis, const Shape & shape) {
        std::vector<Tensor> parts;
        for (const MultiPathNetOutput & o : chunks) parts.push_back(o.*field);
        return concat_or_empty(be, parts, axis, shape);
    };
    const int64_t nc = c.num_classes;
    MultiPathNetOutput out;
    out.cls_prob = join(&MultiPathNetOutput::cls_prob, 0, {0, nc});
    out.bbox_deltas = join(&MultiPathNetOutput::bbox_deltas, 0, {0, 4 * nc});
    if (!keep) return out;
    out.cls_logits = join(&MultiPathNetOutput::cls_logits, 1, {c.integral_heads, 0, nc});
    out.bbox_raw = join(&MultiPathNetOutput::bbox_raw, 0, {0, 4 * nc});
    if (resnet) {
        out.pooled = join(&MultiPathNetOutput::pooled, 0, {0, 4 * c.base_width, c.roi_pool_h, c.roi_pool_w});
        out.feature = join(&MultiPathNetOutput::feature, 0, {0, 8 * c.base_width});
        return out;
    }
    std::vector<Tensor> stacked;
    for (const Tensor & reg : regions) stacked.push_back(reg.reshape({1, k, 5}));
    out.foveal_rois = concat_or_empty(be, stacked, 0, {int64_t(c.foveal_factors.size()), 0, 5});
    for (size_t t = 0; t < c.towers.size(); t++) {
        std::vector<Tensor> parts;
        for (const MultiPathNetOutput & o : chunks) parts.push_back(o.towers[t]);
        out.towers.push_back(concat_or_empty(be, parts, 0, {0, c.fc_dim}));
    }
    return out;
}

// ---------------------------------------------------------------------------
// box decoding

Tensor decode_multipathnet_boxes(const Tensor & boxes_in, const Tensor & deltas_in, int64_t image_width,
                                 int64_t image_height) {
    // Host arithmetic on small tables: device inputs are downloaded.
    const Tensor boxes = to_host(boxes_in), deltas = to_host(deltas_in);
    FOVEA_CHECK_INPUT(boxes.defined() && boxes.dtype() == DType::F32 && boxes.ndim() == 2 && boxes.dim(1) == 4,
                      "decode_multipathnet_boxes: boxes must be float32 [K, 4]");
    FOVEA_CHECK_INPUT(deltas.defined() && deltas.dtype() == DType::F32 && deltas.ndim() == 2 &&
                          deltas.dim(0) == boxes.dim(0) && deltas.dim(1) % 4 == 0 && deltas.dim(1) > 0,
                      "decode_multipathnet_boxes: deltas must be float32 [" << boxes.dim(0) << ", 4C], got "
                          << (deltas.defined() ? shape_str(deltas.shape()) : std::string("nothing")));
    FOVEA_CHECK_INPUT(image_width >= 1 && image_height >= 1,
                      "decode_multipathnet_boxes: image size " << image_width << "x" << image_height << " is empty");
    const int64_t k = boxes.dim(0), nc = deltas.dim(1) / 4;
    const float * b = boxes.f32();
    const float * d = deltas.f32();
    for (int64_t i = 0; i < 4 * k; i++) {
        FOVEA_CHECK_INPUT(std::isfinite(b[i]), "decode_multipathnet_boxes: box " << i / 4 << " is not finite");
    }
    for (int64_t i = 0; i < k * 4 * nc; i++) {
        FOVEA_CHECK_INPUT(!std::isnan(d[i]), "decode_multipathnet_boxes: delta " << i << " of ROI "
                                                                                 << i / (4 * nc) << " is NaN");
    }
    Tensor out = Tensor::empty(deltas.shape());
    float * o = out.f32();
    const double xmax = double(image_width - 1), ymax = double(image_height - 1);
    for (int64_t i = 0; i < k; i++) {
        const float * bi = b + 4 * i;
        double w = double(bi[2]) - bi[0], h = double(bi[3]) - bi[1];
        double cx = (double(bi[0]) + bi[2]) / 2, cy = (double(bi[1]) + bi[3]) / 2;
        for (int64_t j = 0; j < nc; j++) {
            const float * dj = d + (i * nc + j) * 4;
            float * oj = o + (i * nc + j) * 4;
            // An overflowing exp gives an infinite box, which the clamp turns
            // into the image edges.
            double ncx = cx + dj[0] * w, ncy = cy + dj[1] * h;
            // (0 * an overflowing exp stays 0 rather than NaN.)
            double nw = w == 0 ? 0.0 : w * std::exp(double(dj[2]));
            double nh = h == 0 ? 0.0 : h * std::exp(double(dj[3]));
            oj[0] = float(std::clamp(ncx - nw / 2, 0.0, xmax));
            oj[1] = float(std::clamp(ncy - nh / 2, 0.0, ymax));
            oj[2] = float(std::clamp(ncx + nw / 2, 0.0, xmax));
            oj[3] = float(std::clamp(ncy + nh / 2, 0.0, ymax));
        }
    }
    return out;
}

}  // namespace fovea::models
