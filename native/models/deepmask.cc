#include "models/deepmask.h"

#include <algorithm>
#include <set>

#include "core/device.h"
#include "core/error.h"

namespace fovea::models {

namespace {

[[noreturn]] void fail(const std::string & message) { throw Error(ErrorCode::Weights, message); }

std::string quoted(const std::string & s) { return "\"" + s + "\""; }

int64_t ceil_half(int64_t n) { return (n + 1) / 2; }

// VGG-A: the side after the four 2x2/2 pools.
int64_t vgg_stride16_size(int64_t n, bool ceil_mode) {
    for (int i = 0; i < 4; i++) n = ceil_mode ? ceil_half(n) : n / 2;
    return n;
}

// ResNet blocks per layer (layer1..3).
std::vector<int> block_counts(const std::string & trunk) {
    return trunk == "resnet50" ? std::vector<int>{3, 4, 6} : std::vector<int>{2, 2, 2};
}

int64_t bounded(const Config & c, const std::string & key, int64_t lo, int64_t hi) {
    const int64_t v = c.integer(key);
    if (v < lo || v > hi) {
        c.fail(key, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return v;
}

void expect_string(const Config & c, const std::string & key, const std::string & want) {
    const std::string v = c.string(key);
    if (v != want) c.fail(key, quoted(v) + " is not supported (fovea implements " + quoted(want) + ")");
}

// Channel counts: generous, but small enough that no shape product overflows.
constexpr int64_t kMaxChannels = 1 << 16;

}  // namespace

int64_t resnet_stride16_size(int64_t n) {
    for (int i = 0; i < 4; i++) n = ceil_half(n);
    return n;
}

// ---------------------------------------------------------------------------
// config and tensor table

std::vector<int64_t> DeepMaskConfig::tap_channels() const {
    const int64_t e = expansion();
    return {base_width, base_width * e, base_width * 2 * e, base_width * 4 * e};
}

DeepMaskConfig DeepMaskConfig::from(const Config & c) {
    DeepMaskConfig d;
    d.trunk = c.string("trunk");
    if (d.trunk != "resnet50" && d.trunk != "resnet18" && d.trunk != "vgg_a") {
        c.fail("trunk", "unknown trunk " + quoted(d.trunk) + " (fovea implements resnet50, resnet18, vgg_a)");
    }
    d.embed_dim = bounded(c, "embed_dim", 1, kMaxChannels);
    d.score_hidden = bounded(c, "score_hidden", 1, kMaxChannels);
    d.wSz = bounded(c, "wSz", 1, 8192);
    d.fSz = bounded(c, "fSz", 1, 512);
    d.oSz = bounded(c, "oSz", 1, 1024);
    if (c.integer("stride") != 16) c.fail("stride", "must be 16 (four 2x poolings)");

    if (d.is_vgg()) {
        d.stage_widths = c.integers("stage_widths");
        if (d.stage_widths.size() != 5) c.fail("stage_widths", "must have 5 values");
        for (int64_t v : d.stage_widths) {
            if (v < 1 || v > kMaxChannels) c.fail("stage_widths", "width " + std::to_string(v) + " is out of range");
        }
        d.pool_ceil = c.boolean("pool_ceil");
        d.mask_conv = bounded(c, "mask_conv", 1, kMaxChannels);
        d.score_fc1 = bounded(c, "score_fc1", 1, kMaxChannels);
        d.trunk_crop = bounded(c, "trunk_crop", 0, 0);
        expect_string(c, "pad_mode", "zero");
        expect_string(c, "head", "paper");
        // The patch's conv5 map is exactly the fSz x fSz the mask Linear reads,
        // and the score branch's 2x2 pool halves it.
        if (vgg_stride16_size(d.wSz, d.pool_ceil) != d.fSz) {
            c.fail("fSz", std::to_string(d.fSz) + " is not the conv5 side of a " + std::to_string(d.wSz) + " patch");
        }
        if (d.fSz % 2 != 0) c.fail("fSz", "must be even (the score branch pools it 2x2)");
        return d;
    }

    if (c.integer("trunk_layers") != 3) c.fail("trunk_layers", "must be 3 (the trunk ends after conv4_x)");
    d.block_layout = c.string("block_layout");
    if (d.block_layout != "standard" && !(d.block_layout == "post_add" && d.trunk == "resnet50")) {
        c.fail("block_layout", quoted(d.block_layout) + " is not a block layout of " + d.trunk +
                                   " (resnet50: post_add or standard; resnet18: standard)");
    }
    expect_string(c, "pad_mode", "symmetric");
    expect_string(c, "head", "C");
    d.base_width = bounded(c, "base_width", 1, kMaxChannels / 16);
    d.proj_channels = bounded(c, "proj_channels", 1, kMaxChannels);
    d.trunk_crop = bounded(c, "trunk_crop", 0, 512);
    if (resnet_stride16_size(d.wSz) - 2 * d.trunk_crop != d.fSz) {
        c.fail("fSz", std::to_string(d.fSz) + " is not the cropped layer3 side of a " + std::to_string(d.wSz) +
                          " patch (trunk_crop " + std::to_string(d.trunk_crop) + ")");
    }
    return d;
}

std::vector<WeightSpec> deepmask_tensor_specs(const DeepMaskConfig & c) {
    std::vector<WeightSpec> s;
    auto conv = [&](const std::string & name, const Shape & w) {
        s.push_back({name + ".weight", w});
        s.push_back({name + ".bias", {w[0]}});
    };
    auto linear = [&](const std::string & name, int64_t out, int64_t in) {
        s.push_back({name + ".weight", {out, in}});
        s.push_back({name + ".bias", {out}});
    };
    const int64_t d = c.embed_dim, f = c.fSz, o = c.oSz;
    if (c.is_vgg()) {
        const int convs[5] = {1, 1, 2, 2, 2};  // VGG-A
        int64_t cin = 3;
        for (int st = 0; st < 5; st++) {
            for (int i = 0; i < convs[st]; i++) {
                const std::string name = "trunk.conv" + std::to_string(st + 1) + "_" + std::to_string(i + 1);
                conv(name, {c.stage_widths[st], cin, 3, 3});
                cin = c.stage_widths[st];
            }
        }
        conv("mask.conv", {c.mask_conv, cin, 1, 1});
        conv("mask.fc", {d, c.mask_conv, f, f});
        linear("mask.out", o * o, d);
        conv("score.fc1", {c.score_fc1, cin, f / 2, f / 2});
        linear("score.fc2", c.score_hidden, c.score_fc1);
        linear("score.fc3", 1, c.score_hidden);
        return s;
    }
    const int64_t w = c.base_width, e = c.expansion();
    const bool bottleneck = c.trunk == "resnet50";
    conv("trunk.conv1", {w, 3, 7, 7});
    int64_t cin = w;
    const std::vector<int> counts = block_counts(c.trunk);
    for (int l = 0; l < 3; l++) {
        const int64_t wl = w << l, cout = wl * e;
        for (int j = 0; j < counts[size_t(l)]; j++) {
            const std::string p = "trunk.layer" + std::to_string(l + 1) + "." + std::to_string(j);
            if (bottleneck) {
                conv(p + ".conv1", {wl, cin, 1, 1});
                conv(p + ".conv2", {wl, wl, 3, 3});
                conv(p + ".conv3", {cout, wl, 1, 1});
            } else {
                conv(p + ".conv1", {wl, cin, 3, 3});
                conv(p + ".conv2", {wl, wl, 3, 3});
            }
            if (cin != cout) {
                conv(p + ".downsample", {cout, cin, 1, 1});
            } else if (c.block_layout == "post_add") {
                s.push_back({p + ".post_affine.scale", {cout}});
                s.push_back({p + ".post_affine.bias", {cout}});
            }
            cin = cout;
        }
    }
    conv("trunk.proj", {c.proj_channels, cin, 1, 1});
    conv("trunk.embed", {d, c.proj_channels, f, f});
    linear("mask.fc", o * o, d);
    linear("score.fc1", c.score_hidden, d);
    linear("score.fc2", 1, c.score_hidden);
    return s;
}

void check_tensor_specs(const ModelWeights & weights, const std::vector<WeightSpec> & specs,
                        const std::string & foreign_prefix) {
    std::set<std::string> expected;
    for (const WeightSpec & t : specs) {
        if (!weights.has(t.name)) {
            fail(weights.path() + ": missing tensor " + quoted(t.name) + " (shape " + shape_str(t.shape) + ") of the " +
                 weights.architecture() + " model");
        }
        const Shape actual = weights.shape(t.name);
        if (actual != t.shape) {
            fail(weights.path() + ": tensor " + quoted(t.name) + " has shape " + shape_str(actual) +
                 ", the config gives " + shape_str(t.shape));
        }
        expected.insert(t.name);
    }
    std::vector<std::string> extra;
    for (const std::string & name : weights.names()) {
        const bool foreign = !foreign_prefix.empty() && name.compare(0, foreign_prefix.size(), foreign_prefix) == 0;
        if (!expected.count(name) && !foreign) extra.push_back(name);
    }
    if (!extra.empty()) {
        std::string list;
        for (size_t i = 0; i < extra.size() && i < 10; i++) list += (i ? ", " : "") + quoted(extra[i]);
        if (extra.size() > 10) list += ", ...";
        fail(weights.path() + ": " + std::to_string(extra.size()) + " tensor(s) that the " + weights.architecture() +
             " config does not describe: " + list);
    }
}

// ---------------------------------------------------------------------------
// loading

DeepMask DeepMask::load(const ModelWeights & weights, Backend & backend) {
    const std::string arch = weights.architecture();
    if (arch != "deepmask" && arch != "sharpmask") {
        fail(weights.path() + ": architecture " + quoted(arch) + " is not a DeepMask (deepmask or sharpmask)");
    }
    DeepMask m(DeepMaskConfig::from(weights.config()), backend);
    // A SharpMask file also runs as its DeepMask; its refine.* part is SharpMask's.
    const bool own_file = arch == "deepmask";
    check_tensor_specs(weights, deepmask_tensor_specs(m.config_), own_file ? std::string() : "refine.");
    m.read(weights);
    if (own_file) weights.check_all_used();
    return m;
}

DeepMask::Conv DeepMask::upload_conv(const Tensor & weight, const Tensor & bias, int stride, int sym_pad,
                                     int zero_pad, Activation act) const {
    // Uploaded once, here: every op then reads them on the backend's device.
    const Device dev = backend_->device();
    Conv c;
    c.weight = to_device(weight, dev);
    c.bias = to_device(bias, dev);
    c.stride = stride;
    c.sym_pad = sym_pad;
    c.zero_pad = zero_pad;
    c.act = act;
    return c;
}

DeepMask::Conv DeepMask::read_conv(const ModelWeights & w, const std::string & name, int stride, int sym_pad,
                                   int zero_pad, Activation act) const {
    return upload_conv(w.get(name + ".weight"), w.get(name + ".bias"), stride, sym_pad, zero_pad, act);
}

DeepMask::Conv DeepMask::read_conv_folded(const ModelWeights & w, const std::string & name, int stride, int sym_pad,
                                          int zero_pad, const Tensor & out_scale, const Tensor & out_shift) const {
    // scale * y + shift is a batch norm with mean 0, variance 1, epsilon 0.
    const Shape channels = out_scale.shape();
    FoldedConv f = fold_batch_norm(w.get(name + ".weight"), w.get(name + ".bias"), out_scale, out_shift,
                                   Tensor::zeros(channels), Tensor::full(channels, 1.0f), 0.0f);
    f.weight.mark_constant();
    f.bias.mark_constant();
    return upload_conv(f.weight, f.bias, stride, sym_pad, zero_pad, Activation::None);
}

DeepMask::Linear DeepMask::read_linear(const ModelWeights & w, const std::string & name) const {
    const Device dev = backend_->device();
    Linear l;
    l.weight = to_device(w.get(name + ".weight"), dev);
    l.bias = to_device(w.get(name + ".bias"), dev);
    l.weight_1x1 = l.weight.reshape({l.weight.dim(0), l.weight.dim(1), 1, 1});
    return l;
}

void DeepMask::read(const ModelWeights & w) {
    const DeepMaskConfig & c = config_;
    const Activation relu = Activation::Relu, none = Activation::None;
    if (c.is_vgg()) {
        const int convs[5] = {1, 1, 2, 2, 2};
        for (int st = 0; st < 5; st++) {
            stages_.emplace_back();
            for (int i = 0; i < convs[st]; i++) {
                const std::string name = "trunk.conv" + std::to_string(st + 1) + "_" + std::to_string(i + 1);
                stages_.back().push_back(read_conv(w, name, 1, 0, 1, relu));
            }
        }
        mask_conv_ = read_conv(w, "mask.conv", 1, 0, 0, relu);
        mask_fc_conv_ = read_conv(w, "mask.fc", 1, 0, 0, none);
        mask_out_ = read_linear(w, "mask.out");
        score_fc1_conv_ = read_conv(w, "score.fc1", 1, 0, 0, relu);
        score_fc2_ = read_linear(w, "score.fc2");
        score_fc3_ = read_linear(w, "score.fc3");
        return;
    }
    const bool bottleneck = c.trunk == "resnet50";
    conv1_ = read_conv(w, "trunk.conv1", 2, 3, 0, relu);
    const std::vector<int> counts = block_counts(c.trunk);
    for (int l = 0; l < 3; l++) {
        layers_.emplace_back();
        for (int j = 0; j < counts[size_t(l)]; j++) {
            const std::string p = "trunk.layer" + std::to_string(l + 1) + "." + std::to_string(j);
            const int stride = (l > 0 && j == 0) ? 2 : 1;
            Block b;
            // The last conv, with the block's post-add affine folded in where it has one.
            const bool affine = w.has(p + ".post_affine.scale");
            const Tensor scale = affine ? w.get(p + ".post_affine.scale") : Tensor();
            const Tensor shift = affine ? w.get(p + ".post_affine.bias") : Tensor();
            auto last = [&](const std::string & name, int last_stride, int sym_pad) {
                return affine ? read_conv_folded(w, name, last_stride, sym_pad, 0, scale, shift)
                              : read_conv(w, name, last_stride, sym_pad, 0, none);
            };
            if (bottleneck) {
                // Stride on the 3x3 conv (fb.resnet.torch).
                b.conv1 = read_conv(w, p + ".conv1", 1, 0, 0, relu);
                b.conv2 = read_conv(w, p + ".conv2", stride, 1, 0, relu);
                b.conv3 = last(p + ".conv3", 1, 0);
            } else {
                b.conv1 = read_conv(w, p + ".conv1", stride, 1, 0, relu);
                b.conv2 = last(p + ".conv2", 1, 1);
            }
            if (w.has(p + ".downsample.weight")) b.downsample = read_conv(w, p + ".downsample", stride, 0, 0, none);
            if (affine) b.residual_scale = to_device(scale, backend_->device());
            layers_.back().push_back(std::move(b));
        }
    }
    proj_ = read_conv(w, "trunk.proj", 1, 0, 0, relu);
    embed_ = read_conv(w, "trunk.embed", 1, 0, 0, none);
    mask_fc_ = read_linear(w, "mask.fc");
    score_fc1_ = read_linear(w, "score.fc1");
    score_fc2_ = read_linear(w, "score.fc2");
}

// ---------------------------------------------------------------------------
// layers

Tensor DeepMask::conv(const Conv & c, const Tensor & x, const Tensor & residual,
                      const Tensor & residual_scale) const {
    Tensor in = x;
    if (c.sym_pad) {
        Pad2dParams pp;
        pp.top = pp.left = pp.bottom = pp.right = c.sym_pad;
        pp.mode = PadMode::Symmetric;
        in = backend_->pad2d(x, pp);
    }
    Conv2dParams p;
    p.stride_h = p.stride_w = c.stride;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = c.zero_pad;
    p.dilation_h = p.dilation_w = c.dilation;
    p.activation = c.act;
    if (!residual.defined()) return backend_->conv2d(in, c.weight, c.bias, p);
    FOVEA_CHECK(c.act == Activation::None, ErrorCode::Internal, "a residual conv with its own activation");
    p.activation = Activation::Relu;
    return backend_->conv2d_residual(in, c.weight, c.bias, p, residual, residual_scale);
}

Tensor DeepMask::linear(const Linear & l, const Tensor & x, Activation act) const {
    return backend_->linear(x, l.weight, l.bias, act);
}

Tensor DeepMask::linear_map(const Linear & l, const Tensor & x, Activation act) const {
    Conv2dParams p;
    p.activation = act;
    return backend_->conv2d(x, l.weight_1x1, l.bias, p);
}

Tensor DeepMask::block(const Block & b, const Tensor & x) const {
    const Tensor s = b.downsample.weight.defined() ? conv(b.downsample, x) : x;
    const bool bottleneck = b.conv3.weight.defined();
    const Conv & last = bottleneck ? b.conv3 : b.conv2;
    Tensor m = conv(b.conv1, x);
    if (bottleneck) m = conv(b.conv2, m);
    // The skip connection is added as the last conv stores its output.
    return conv(last, m, s, b.residual_scale);
}

TrunkTaps DeepMask::trunk_taps(const Tensor & x, bool patch) const {
    TrunkTaps t;
    t.conv1 = conv(conv1_, x);
    Pool2dParams pool;
    pool.kernel_h = pool.kernel_w = 3;
    pool.stride_h = pool.stride_w = 2;
    pool.pad_top = pool.pad_left = pool.pad_bottom = pool.pad_right = 1;
    Tensor y = backend_->max_pool2d(t.conv1, pool);
    Tensor * outs[3] = {&t.layer1, &t.layer2, &t.layer3};
    for (size_t l = 0; l < layers_.size(); l++) {
        for (const Block & b : layers_[l]) y = block(b, y);
        *outs[l] = y;
    }
    if (patch && config_.trunk_crop > 0) {
        Pad2dParams crop;
        crop.top = crop.left = crop.bottom = crop.right = -int(config_.trunk_crop);
        t.layer3 = backend_->pad2d(t.layer3, crop);
    }
    return t;
}

Tensor DeepMask::vgg_features(const Tensor & x) const {
    Tensor y = x;
    for (size_t st = 0; st < stages_.size(); st++) {
        if (st > 0) {
            Pool2dParams pool;
            pool.kernel_h = pool.kernel_w = 2;
            pool.stride_h = pool.stride_w = 2;
            pool.ceil_mode = config_.pool_ceil;
            y = backend_->max_pool2d(y, pool);
        }
        for (const Conv & c : stages_[st]) y = conv(c, y);
    }
    return y;
}

void DeepMask::check_input(const Tensor & x, const char * what) const {
    FOVEA_CHECK_INPUT(x.defined() && x.dtype() == DType::F32 && x.ndim() == 4 && x.dim(1) == 3,
                      "DeepMask: " << what << " must be a float32 [N,3,H,W] tensor, got "
                                   << (x.defined() ? shape_str(x.shape()) : std::string("nothing")));
}

// ---------------------------------------------------------------------------
// forward

DeepMaskPatchOutput DeepMask::forward_patch(const Tensor & patches) const { return run_patch(patches, nullptr); }

DeepMaskPatchOutput DeepMask::run_patch(const Tensor & patches, TrunkTaps * keep) const {
    check_input(patches, "patches");
    const int64_t n = patches.dim(0), w = config_.wSz;
    FOVEA_CHECK_INPUT(n >= 1 && patches.dim(2) == w && patches.dim(3) == w,
                      "DeepMask: patches must be [N,3," << w << "," << w << "], got " << shape_str(patches.shape()));
    DeepMaskPatchOutput out;
    const int64_t o = config_.oSz;
    if (config_.is_vgg()) {
        const Tensor f = vgg_features(patches);
        out.embedding = conv(mask_fc_conv_, conv(mask_conv_, f)).reshape({n, config_.embed_dim});
        out.mask_logits = linear(mask_out_, out.embedding, Activation::None).reshape({n, o, o});
        Pool2dParams pool;
        pool.kernel_h = pool.kernel_w = 2;
        pool.stride_h = pool.stride_w = 2;
        const Tensor s = conv(score_fc1_conv_, backend_->max_pool2d(f, pool)).reshape({n, config_.score_fc1});
        out.score_logits =
            linear(score_fc3_, linear(score_fc2_, s, Activation::Relu), Activation::None).reshape({n});
        return out;
    }
    TrunkTaps taps = trunk_taps(patches, true);
    out.embedding = conv(embed_, conv(proj_, taps.layer3)).reshape({n, config_.embed_dim});
    out.mask_logits = mask_head(out.embedding);
    out.score_logits =
        linear(score_fc2_, linear(score_fc1_, out.embedding, Activation::Relu), Activation::None).reshape({n});
    if (keep) *keep = std::move(taps);
    return out;
}

std::pair<int64_t, int64_t> DeepMask::grid_size(int64_t h, int64_t w) const {
    auto side = [&](int64_t n) {
        const int64_t l = config_.is_vgg() ? vgg_stride16_size(n, config_.pool_ceil) : resnet_stride16_size(n);
        return std::max<int64_t>(0, l - (config_.fSz - 1));
    };
    return {side(h), side(w)};
}

DeepMaskDense DeepMask::dense(const Tensor & image, bool keep_taps) const {
    check_input(image, "image");
    const auto grid = grid_size(image.dim(2), image.dim(3));
    FOVEA_CHECK_INPUT(image.dim(0) == 1 && grid.first >= 1 && grid.second >= 1,
                      "DeepMask: image must be [1,3,H,W] with a grid of at least one cell, got "
                          << shape_str(image.shape()) << " (grid " << grid.first << "x" << grid.second << ")");
    DeepMaskDense out;
    Tensor s;
    if (config_.is_vgg()) {
        const Tensor f = vgg_features(image);
        out.embedding = conv(mask_fc_conv_, conv(mask_conv_, f));
        // The 2x2/2 pool at every offset, then the 7x7 Linear dilated 2 (the
        // paper's interleaving): one score per stride-16 cell.
        Pool2dParams pool;
        pool.kernel_h = pool.kernel_w = 2;
        Conv fc1 = score_fc1_conv_;
        fc1.dilation = 2;
        s = conv(fc1, backend_->max_pool2d(f, pool));
        s = linear_map(score_fc3_, linear_map(score_fc2_, s, Activation::Relu), Activation::None);
    } else {
        TrunkTaps taps = trunk_taps(image, false);
        out.embedding = conv(embed_, conv(proj_, taps.layer3));
        s = linear_map(score_fc2_, linear_map(score_fc1_, out.embedding, Activation::Relu), Activation::None);
        if (keep_taps) out.taps = std::move(taps);
    }
    out.score_logits = s.reshape({grid.first, grid.second});
    return out;
}

Tensor DeepMask::embeddings_at(const DeepMaskDense & dense, const std::vector<GridCell> & cells) const {
    const Tensor & e = dense.embedding;
    FOVEA_CHECK_INPUT(e.defined() && e.ndim() == 4 && e.dim(0) == 1 && e.dim(1) == config_.embed_dim,
                      "DeepMask: the dense embedding is not [1," << config_.embed_dim << ",gh,gw]");
    const int64_t gh = e.dim(2), gw = e.dim(3);
    if (cells.empty()) return to_device(Tensor::empty({0, config_.embed_dim}), backend_->device());
    std::vector<Tensor> vectors;
    vectors.reserve(cells.size());
    for (const GridCell & c : cells) {
        FOVEA_CHECK_INPUT(c.row >= 0 && c.row < gh && c.col >= 0 && c.col < gw,
                          "DeepMask: cell (" << c.row << ", " << c.col << ") is outside the " << gh << "x" << gw
                                             << " grid");
        // A crop to the one cell: a backend op, so this works on any device.
        Pad2dParams crop;
        crop.top = -int(c.row);
        crop.left = -int(c.col);
        crop.bottom = -int(gh - 1 - c.row);
        crop.right = -int(gw - 1 - c.col);
        vectors.push_back(backend_->pad2d(e, crop));
    }
    const int64_t k = int64_t(cells.size());
    return (vectors.size() == 1 ? vectors[0] : backend_->concat(vectors, 0)).reshape({k, config_.embed_dim});
}

Tensor DeepMask::mask_head(const Tensor & embeddings) const {
    const int64_t k = embeddings.defined() && embeddings.ndim() == 2 ? embeddings.dim(0) : -1;
    FOVEA_CHECK_INPUT(k >= 0 && embeddings.dim(1) == config_.embed_dim,
                      "DeepMask: embeddings must be [K," << config_.embed_dim << "]");
    const int64_t o = config_.oSz;
    if (k == 0) return to_device(Tensor::empty({0, o, o}), backend_->device());
    const Linear & head = config_.is_vgg() ? mask_out_ : mask_fc_;
    return linear(head, embeddings, Activation::None).reshape({k, o, o});
}

Tensor DeepMask::masks_at(const DeepMaskDense & dense, const std::vector<GridCell> & cells) const {
    return mask_head(embeddings_at(dense, cells));
}

}  // namespace fovea::models
