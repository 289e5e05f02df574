#include "pipeline/pipeline.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/device.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "pipeline/masks.h"

namespace fovea::pipeline {

namespace {

using Clock = std::chrono::steady_clock;

// The released DeepMask scales 2^-2.5 .. 2^0.5 (evalPerImage.lua -smin/-smax/-sstep).
std::vector<double> released_scales() {
    std::vector<double> s;
    for (int k = -5; k <= 1; k++) s.push_back(std::pow(2.0, k / 2.0));
    return s;
}

void read_triplet(const models::Config & c, const std::string & key, float * out) {
    const std::vector<double> v = c.numbers(key);
    if (v.size() != 3) c.fail(key, "must have 3 values (R, G, B), got " + std::to_string(v.size()));
    for (int i = 0; i < 3; i++) {
        if (!std::isfinite(v[size_t(i)]) || (key == "std" && !(v[size_t(i)] > 0))) {
            c.fail(key, "values must be finite (std > 0)");
        }
        out[i] = float(v[size_t(i)]);
    }
}

int64_t round_half_up(double v) { return int64_t(std::floor(v + 0.5)); }

// A stage's wall time, added to the result when the stage ends.
class StageTimer {
  public:
    StageTimer(Result & result, const char * stage) : result_(result), stage_(stage), start_(Clock::now()) {}
    ~StageTimer() {
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start_).count();
        for (Timing & t : result_.timings) {
            if (t.stage == stage_) {
                t.ms += ms;
                return;
            }
        }
        result_.timings.push_back({stage_, ms});
    }

  private:
    Result & result_;
    const char * stage_;
    Clock::time_point start_;
};

struct Candidate {
    float logit;
    int32_t scale;
    int64_t cell;  // row * gw + col
};

struct Proposal {
    int32_t scale;
    models::GridCell cell;
    float logit;
    RleMask mask;
};

// [1, 3, h, w] float in [0, 1] from 8-bit RGB HWC.
Tensor planar_unit_image(const ImageView & image) {
    const int64_t h = image.height, w = image.width, n = h * w;
    Tensor t = Tensor::empty({1, 3, h, w});
    float * p = t.f32();
    for (int64_t i = 0; i < n; i++) {
        for (int c = 0; c < 3; c++) p[c * n + i] = float(image.data[i * 3 + c]) / 255.0f;
    }
    return t;
}

// (x - mean) / std per channel, as a batch norm (a backend op) whose
// parameters make_input_norm() put on the backend's device.
Tensor normalise(Backend & be, const Tensor & x, const InputNorm & n) {
    return be.batch_norm(x, n.scale, n.bias, n.mean, n.var, 0.0f);
}

InputNorm make_input_norm(Backend & be, const float * mean, const float * std) {
    std::vector<float> m(mean, mean + 3), var(3);
    for (int c = 0; c < 3; c++) var[size_t(c)] = std[c] * std[c];
    const Device dev = be.device();
    InputNorm n;
    n.scale = to_device(Tensor::full({3}, 1.0f), dev);
    n.bias = to_device(Tensor::zeros({3}), dev);
    n.mean = to_device(Tensor::from_vector({3}, m), dev);
    n.var = to_device(Tensor::from_vector({3}, var), dev);
    return n;
}

void check_cancel(const RunControl & control) {
    if (control.cancelled && control.cancelled->load(std::memory_order_relaxed)) {
        throw Error(ErrorCode::Aborted, "segment() was aborted");
    }
}

void report(const RunControl & control, const char * stage, double fraction) {
    if (control.progress) control.progress(stage, fraction);
}

// Greedy NMS through the CPU backend's op (host-side bookkeeping on small
// host arrays, whatever device ran the models) with nms.c's +1 rule on
// inclusive pixel boxes: in decreasing score, ties in the order of `order`
// (the op's sort is stable). An empty box (x1 < x0: an empty mask) overlaps
// nothing and is kept. Returns the survivors in the order of `order`.
std::vector<size_t> nms_inclusive(const std::vector<std::array<float, 4>> & boxes,
                                  const std::vector<float> & scores, const std::vector<size_t> & order,
                                  float threshold) {
    auto empty = [&](size_t i) { return boxes[i][2] < boxes[i][0]; };
    std::vector<size_t> candidates;
    for (size_t i : order) {
        if (!empty(i)) candidates.push_back(i);
    }
    std::vector<bool> kept(boxes.size(), false);
    if (!candidates.empty()) {
        const int64_t n = int64_t(candidates.size());
        Tensor b = Tensor::empty({n, 4}), s = Tensor::empty({n});
        for (int64_t j = 0; j < n; j++) {
            const size_t i = candidates[size_t(j)];
            std::copy(boxes[i].begin(), boxes[i].end(), b.f32() + 4 * j);
            s.f32()[j] = scores[i];
        }
        NmsParams p;
        p.iou_threshold = threshold;
        p.pixel_offset = 1.0f;
        for (int64_t j : cpu_backend().nms(b, s, p)) kept[candidates[size_t(j)]] = true;
    }
    std::vector<size_t> out;
    for (size_t i : order) {
        if (kept[i] || empty(i)) out.push_back(i);
    }
    return out;
}

}  // namespace

std::shared_ptr<Pipeline> Pipeline::load(const std::string & proposals_path, const std::string & classifier_path,
                                         Backend & backend) {
    std::shared_ptr<Pipeline> p(new Pipeline(backend));
    const models::ModelWeights pw = models::ModelWeights::open(proposals_path);
    const std::string arch = pw.architecture();
    if (arch == "sharpmask") {
        p->sharpmask_.emplace(models::SharpMask::load(pw, backend));
    } else if (arch == "deepmask") {
        p->deepmask_.emplace(models::DeepMask::load(pw, backend));
        FOVEA_CHECK(!p->deepmask_->config().is_vgg(), ErrorCode::Weights,
                    proposals_path << ": the VGG-A DeepMask has no dense inference path in fovea; use a ResNet trunk");
    } else {
        throw Error(ErrorCode::Options, proposals_path + ": a proposal model must be a sharpmask or deepmask file, not " +
                                            arch);
    }
    const models::Config & c = pw.config();
    p->scales_ = c.has("scales") ? c.numbers("scales") : released_scales();
    for (double s : p->scales_) {
        if (!(s > 0) || !std::isfinite(s)) c.fail("scales", "every scale must be a finite number > 0");
    }
    read_triplet(c, "mean", p->mean_);
    read_triplet(c, "std", p->std_);
    if (c.has("image_pad")) p->image_pad_ = c.integer("image_pad");
    if (c.has("image_pad_value")) p->image_pad_value_ = float(c.number("image_pad_value"));
    if (c.has("stride")) p->stride_ = c.integer("stride");
    if (c.has("iSz")) p->iSz_ = c.integer("iSz");
    if (p->image_pad_ < 0 || p->image_pad_ > 4096) c.fail("image_pad", "must be in [0, 4096]");
    if (p->stride_ < 1 || p->stride_ > 1024) c.fail("stride", "must be in [1, 1024]");
    if (p->iSz_ < 1 || p->iSz_ > 4096) c.fail("iSz", "must be in [1, 4096]");
    p->norm_ = make_input_norm(backend, p->mean_, p->std_);

    if (!classifier_path.empty()) {
        const models::ModelWeights cw = models::ModelWeights::open(classifier_path);
        if (cw.architecture() != "multipathnet") {
            throw Error(ErrorCode::Options,
                        classifier_path + ": a classifier must be a multipathnet file, not " + cw.architecture());
        }
        p->classifier_.emplace(cw, backend);
        const models::Config & cc = cw.config();
        read_triplet(cc, "mean", p->cls_mean_);
        read_triplet(cc, "std", p->cls_std_);
        if (cc.has("test_scale")) p->test_scale_ = cc.integer("test_scale");
        if (cc.has("test_max_size")) p->test_max_size_ = cc.integer("test_max_size");
        if (p->test_scale_ < 1 || p->test_scale_ > 16384) cc.fail("test_scale", "must be in [1, 16384]");
        if (p->test_max_size_ < 1 || p->test_max_size_ > 16384) cc.fail("test_max_size", "must be in [1, 16384]");
        p->cls_norm_ = make_input_norm(backend, p->cls_mean_, p->cls_std_);
        const int64_t nc = p->classifier_->config().num_classes;
        if (cc.has("class_names")) {
            p->class_names_ = cc.strings("class_names");
            if (int64_t(p->class_names_.size()) != nc) {
                cc.fail("class_names", "must have num_classes (" + std::to_string(nc) + ") names, got " +
                                           std::to_string(p->class_names_.size()));
            }
        } else {
            for (int64_t i = 0; i < nc; i++) p->class_names_.push_back(i == 0 ? "background" : "class " + std::to_string(i));
        }
        if (cc.has("coco_category_ids")) {
            p->category_ids_ = cc.integers("coco_category_ids");
            if (int64_t(p->category_ids_.size()) != nc - 1) {
                cc.fail("coco_category_ids", "must have num_classes - 1 (" + std::to_string(nc - 1) + ") ids, got " +
                                                 std::to_string(p->category_ids_.size()));
            }
        } else {
            for (int64_t i = 1; i < nc; i++) p->category_ids_.push_back(i);
        }
    }
    return p;
}

const models::DeepMaskConfig & Pipeline::proposal_config() const {
    return sharpmask_ ? sharpmask_->config().deepmask : deepmask_->config();
}

Result Pipeline::run(const ImageView & image, const Options & options, const RunControl & control) const {
    const int64_t H = image.height, W = image.width;
    FOVEA_CHECK_INPUT(image.data != nullptr && H >= 1 && W >= 1 && H <= (1 << 20) && W <= (1 << 20) &&
                          H * W < (int64_t(1) << 32),
                      "segment: image must be 1x1 to 2^20 x 2^20 with fewer than 2^32 pixels, got " << W << "x" << H);
    FOVEA_CHECK_OPTIONS(options.mode == Mode::Proposals || classifier_,
                        "mode 'instances' needs a classifier (a multipathnet model); this pipeline has none");
    FOVEA_CHECK_OPTIONS(options.max_proposals >= 1 && options.max_proposals <= 100000,
                        "maxProposals must be in [1, 100000], got " << options.max_proposals);
    FOVEA_CHECK_OPTIONS(options.max_detections >= 1 && options.max_detections <= 100000,
                        "maxDetections must be in [1, 100000], got " << options.max_detections);
    FOVEA_CHECK_OPTIONS(options.mask_threshold > 0 && options.mask_threshold < 1,
                        "maskThreshold must be in (0, 1), got " << options.mask_threshold);
    FOVEA_CHECK_OPTIONS(std::isfinite(options.score_threshold) && std::isfinite(options.nms_threshold) &&
                            options.nms_threshold >= 0,
                        "scoreThreshold must be finite and nmsThreshold >= 0");
    FOVEA_CHECK_OPTIONS(options.max_side >= 0, "maxSide must be >= 0, got " << options.max_side);
    const std::vector<double> & scales = options.scales.empty() ? scales_ : options.scales;
    FOVEA_CHECK_OPTIONS(scales.size() <= 64, "at most 64 scales, got " << scales.size());
    for (double s : scales) {
        FOVEA_CHECK_OPTIONS(s > 0 && s <= 16, "every scale must be in (0, 16], got " << s);
    }

    Backend & be = *backend_;
    const Device dev = be.device();
    Result result;
    result.width = W;
    result.height = H;
    result.device = dev.str();

    // 1-2. Work image and pyramid; 3. dense model per scale.
    std::vector<models::SharpMaskDense> sm_dense(scales.size());
    std::vector<models::DeepMaskDense> dm_dense(scales.size());
    std::vector<Candidate> candidates;
    int64_t work_h = H, work_w = W;
    const models::DeepMask & dense_model = sharpmask_ ? sharpmask_->deepmask() : *deepmask_;
    // The image in [0, 1], planar, on the device: uploaded once, read by the
    // pyramid and again by the classifier.
    Tensor unit;
    {
        Tensor work;
        {
            StageTimer t(result, "pyramid");
            unit = to_device(planar_unit_image(image), dev);
            work = unit;
            if (options.max_side > 0 && std::max(H, W) > options.max_side) {
                const double r = double(options.max_side) / double(std::max(H, W));
                work_h = std::max<int64_t>(1, round_half_up(double(H) * r));
                work_w = std::max<int64_t>(1, round_half_up(double(W) * r));
                work = be.image_scale(work, work_h, work_w);
            }
        }
        for (size_t si = 0; si < scales.size(); si++) {
            check_cancel(control);
            const double s = scales[si];
            const int64_t hs = round_half_up(s * double(work_h)), ws = round_half_up(s * double(work_w));
            if (hs < 1 || ws < 1) continue;
            const int64_t pad = image_pad_;
            const auto grid = dense_model.grid_size(hs + 2 * pad, ws + 2 * pad);
            if (grid.first < 1 || grid.second < 1) continue;
            Tensor input;
            {
                StageTimer t(result, "pyramid");
                ResizeParams rp;
                rp.out_h = hs;
                rp.out_w = ws;
                rp.coord = ResizeCoord::AlignCorners;
                Tensor scaled = (hs == work_h && ws == work_w) ? work : be.resize_bilinear(work, rp);
                Pad2dParams pp;
                pp.top = pp.left = pp.bottom = pp.right = int(pad);
                pp.value = image_pad_value_;
                input = normalise(be, pad == 0 ? scaled : be.pad2d(scaled, pp), norm_);
            }
            StageTimer t(result, "trunk");
            const Tensor * logits;
            if (sharpmask_) {
                sm_dense[si] = sharpmask_->dense(input);
                logits = &sm_dense[si].deepmask.score_logits;
            } else {
                dm_dense[si] = deepmask_->dense(input, false);
                logits = &dm_dense[si].score_logits;
            }
            // The score map (gh x gw floats) comes to the host for the top-k.
            const Tensor lh = to_host(*logits);
            const float * l = lh.f32();
            for (int64_t i = 0; i < lh.numel(); i++) {
                FOVEA_CHECK_INPUT(!std::isnan(l[i]), "segment: the proposal model produced NaN scores "
                                                     "(are the weights finite?)");
                candidates.push_back({l[i], int32_t(si), i});
            }
            report(control, "trunk", double(si + 1) / double(scales.size()));
        }
    }
    check_cancel(control);

    // 3. Top-k over all scales.
    std::vector<Proposal> proposals;
    {
        StageTimer t(result, "proposals");
        const size_t k = std::min(candidates.size(), size_t(options.max_proposals));
        std::partial_sort(candidates.begin(), candidates.begin() + std::ptrdiff_t(k), candidates.end(),
                          [](const Candidate & a, const Candidate & b) {
                              if (a.logit != b.logit) return a.logit > b.logit;
                              if (a.scale != b.scale) return a.scale < b.scale;
                              return a.cell < b.cell;
                          });
        for (size_t i = 0; i < k; i++) {
            const Candidate & c = candidates[i];
            const Tensor & l = sharpmask_ ? sm_dense[size_t(c.scale)].deepmask.score_logits
                                          : dm_dense[size_t(c.scale)].score_logits;
            const int64_t gw = l.dim(1);
            proposals.push_back({c.scale, {c.cell / gw, c.cell % gw}, c.logit, {}});
        }
        candidates = {};
    }
    result.proposals = int64_t(proposals.size());

    // 4. Masks, per scale (one batch per scale); 5-6. pasted as RLE.
    const float logit_threshold = std::log(options.mask_threshold / (1.0f - options.mask_threshold));
    const double fy = double(H) / double(work_h), fx = double(W) / double(work_w);
    for (size_t si = 0; si < scales.size(); si++) {
        std::vector<size_t> members;
        for (size_t i = 0; i < proposals.size(); i++) {
            if (size_t(proposals[i].scale) == si) members.push_back(i);
        }
        if (members.empty()) continue;
        check_cancel(control);
        std::vector<models::GridCell> cells;
        for (size_t i : members) cells.push_back(proposals[i].cell);
        Tensor masks;
        {
            StageTimer t(result, "refine");
            // The top-k's mask logits come to the host for pasting and RLE.
            masks = to_host(sharpmask_ ? sharpmask_->masks_at(sm_dense[si], cells)
                                       : deepmask_->masks_at(dm_dense[si], cells));
        }
        sm_dense[si] = {};
        dm_dense[si] = {};
        StageTimer t(result, "paste");
        const int64_t n = masks.dim(1);
        const double s = scales[si];
        const float * mp = masks.f32();
        parallel_for(int64_t(members.size()), 1, [&](int64_t lo, int64_t hi) {
            for (int64_t j = lo; j < hi; j++) {
                Proposal & p = proposals[members[size_t(j)]];
                MaskWindow win;
                win.top = int64_t(std::floor(double(stride_ * p.cell.row - image_pad_) / s * fy));
                win.left = int64_t(std::floor(double(stride_ * p.cell.col - image_pad_) / s * fx));
                win.height = int64_t(std::floor(double(iSz_) / s * fy));
                win.width = int64_t(std::floor(double(iSz_) / s * fx));
                p.mask = paste_mask(mp + j * n * n, n, n, win, H, W, logit_threshold);
            }
        });
        report(control, "paste", double(si + 1) / double(scales.size()));
    }
    sm_dense.clear();
    dm_dense.clear();
    if (options.mode == Mode::Proposals) unit = Tensor();
    check_cancel(control);

    auto mask_box = [](const RleMask & m) -> std::array<float, 4> {
        // Inclusive boxes: an empty mask's [0, 0, 0, 0] is (0, 0, -1, -1), which overlaps nothing.
        if (m.area == 0) return {0, 0, -1, -1};
        return {float(m.x0), float(m.y0), float(m.x1), float(m.y1)};
    };
    auto emit = [&](const Proposal & p, int64_t rank, Instance inst) {
        inst.objectness = 1.0f / (1.0f + std::exp(-p.logit));
        inst.proposal = rank;
        inst.scale_index = p.scale;
        inst.row = p.cell.row;
        inst.col = p.cell.col;
        inst.area = p.mask.area;
        inst.rle = rle_to_string(p.mask.counts);
        result.instances.push_back(std::move(inst));
    };

    if (options.mode == Mode::Proposals) {
        StageTimer t(result, "postprocess");
        std::vector<std::array<float, 4>> boxes;
        std::vector<float> objectness;
        std::vector<size_t> order;
        for (size_t i = 0; i < proposals.size(); i++) {
            boxes.push_back(mask_box(proposals[i].mask));
            objectness.push_back(1.0f / (1.0f + std::exp(-proposals[i].logit)));
            if (objectness.back() >= options.score_threshold) order.push_back(i);
        }
        if (options.nms_threshold < 1) order = nms_inclusive(boxes, objectness, order, options.nms_threshold);
        if (order.size() > size_t(options.max_detections)) order.resize(size_t(options.max_detections));
        for (size_t i : order) {
            const RleMask & m = proposals[i].mask;
            Instance inst;
            inst.label = "object";
            inst.category_id = 1;
            inst.score = objectness[i];
            if (m.area > 0) {
                inst.box[0] = float(m.x0);
                inst.box[1] = float(m.y0);
                inst.box[2] = float(m.x1 - m.x0 + 1);
                inst.box[3] = float(m.y1 - m.y0 + 1);
            }
            emit(proposals[i], int64_t(i), std::move(inst));
        }
        return result;
    }

    // 8. Classification.
    std::vector<size_t> kept;
    for (size_t i = 0; i < proposals.size(); i++) {
        const RleMask & m = proposals[i].mask;
        if (m.area > 0 && (m.x1 - m.x0) * (m.y1 - m.y0) > 2) kept.push_back(i);
    }
    const int64_t k = int64_t(kept.size());
    models::MultiPathNetOutput out;
    Tensor boxes = Tensor::empty({k, 4});
    {
        StageTimer t(result, "classify");
        double sc = double(test_scale_) / double(std::min(H, W));
        if (double(round_half_up(sc * double(std::max(H, W)))) > double(test_max_size_)) {
            sc = double(test_max_size_) / double(std::max(H, W));
        }
        const int64_t ch = std::max<int64_t>(1, int64_t(std::floor(double(H) * sc)));
        const int64_t cw = std::max<int64_t>(1, int64_t(std::floor(double(W) * sc)));
        Tensor rois = Tensor::empty({k, 4});
        float * b = boxes.f32();
        float * r = rois.f32();
        for (int64_t i = 0; i < k; i++) {
            const auto box = mask_box(proposals[kept[size_t(i)]].mask);
            for (int j = 0; j < 4; j++) {
                b[i * 4 + j] = box[size_t(j)];
                r[i * 4 + j] = float(double(box[size_t(j)]) * sc);
            }
        }
        if (k > 0) {
            Tensor input = unit;
            if (ch != H || cw != W) input = be.image_scale(input, ch, cw);
            input = normalise(be, input, cls_norm_);
            check_cancel(control);
            out = classifier_->forward(input, rois);
            // Scores and deltas (K x classes) come to the host for decoding and NMS.
            out.cls_prob = to_host(out.cls_prob);
            out.bbox_deltas = to_host(out.bbox_deltas);
        }
    }
    check_cancel(control);
    report(control, "classify", 1.0);

    StageTimer t(result, "postprocess");
    if (k == 0) return result;
    const Tensor class_boxes = models::decode_multipathnet_boxes(boxes, out.bbox_deltas, W, H);
    const int64_t nc = classifier_->config().num_classes;
    const float * prob = out.cls_prob.f32();
    const float * cb = class_boxes.f32();
    struct Detection {
        float score;
        int64_t cls;
        size_t roi;  // index into kept
        std::array<float, 4> box;
    };
    std::vector<Detection> dets;
    for (int64_t c = 1; c < nc; c++) {
        std::vector<std::array<float, 4>> cboxes(static_cast<size_t>(k));
        std::vector<float> cprob(static_cast<size_t>(k));
        std::vector<size_t> order;
        for (int64_t i = 0; i < k; i++) {
            for (int j = 0; j < 4; j++) cboxes[size_t(i)][size_t(j)] = cb[(i * nc + c) * 4 + j];
            cprob[size_t(i)] = prob[i * nc + c];
            if (cprob[size_t(i)] >= options.score_threshold) order.push_back(size_t(i));
        }
        if (options.nms_threshold < 1) order = nms_inclusive(cboxes, cprob, order, options.nms_threshold);
        for (size_t i : order) dets.push_back({cprob[i], c, i, cboxes[i]});
    }
    std::stable_sort(dets.begin(), dets.end(), [](const Detection & a, const Detection & b) {
        if (a.score != b.score) return a.score > b.score;
        if (a.cls != b.cls) return a.cls < b.cls;
        return a.roi < b.roi;
    });
    if (dets.size() > size_t(options.max_detections)) dets.resize(size_t(options.max_detections));
    for (const Detection & d : dets) {
        Instance inst;
        inst.class_index = d.cls;
        inst.label = class_names_[size_t(d.cls)];
        inst.category_id = category_ids_[size_t(d.cls - 1)];
        inst.score = d.score;
        inst.box[0] = d.box[0];
        inst.box[1] = d.box[1];
        inst.box[2] = d.box[2] - d.box[0];
        inst.box[3] = d.box[3] - d.box[1];
        const size_t p = kept[d.roi];
        emit(proposals[p], int64_t(p), std::move(inst));
    }
    return result;
}

}  // namespace fovea::pipeline
