// The segment() pipeline: RGB pixels -> proposals (DeepMask or SharpMask)
// -> optional classification (MultiPathNet) -> instances with COCO RLE masks.
// One implementation for every backend: it only calls model and Backend ops,
// plus host-side bookkeeping on small arrays (top-k, NMS lists, RLE runs).
//
// Where the data lives (backend on a device, e.g. cuda_backend(N)): the
// weights are uploaded once at load; per run, the image is converted to
// planar float [0, 1] on the host and uploaded once (the pyramid and the
// classifier both read that copy); work image, pyramid, normalisation and
// the dense models run on the device. Downloads: each scale's objectness map
// (gh x gw floats, for the top-k), the top-k's mask logits (K x 160 x 160 per
// scale, pasted and RLE-encoded on the host), and MultiPathNet's class
// probabilities and box deltas (K x classes, for decoding and NMS). Uploads:
// the classifier's ROIs (K x 5 per foveal region). NMS runs on the host
// (the CPU backend's op) on those small arrays. On the CPU backend every
// to_device / to_host is the tensor itself: no copy.
//
// The steps follow the released inference code (shared/spec/
// deepmask-sharpmask.md section 4, shared/spec/multipathnet.md section 4);
// where the released code has a bug or no rule, the choice is stated here and
// tools/reference/pipeline.py implements the same contract independently.
//
//  1. Work image (float, never rounded back to u8). If max_side > 0 and max(H, W) > max_side, the image is
//     shrunk with torch image.scale semantics (area average) to
//     (max(1, floor(H r + 0.5)), max(1, floor(W r + 0.5))), r = max_side /
//     max(H, W) (demo.lua's -maxsize 600). Otherwise the work image is the
//     image. Pixels are u8 / 255 in float.
//  2. Pyramid, per scale s (in the given order): resize the work image with
//     align-corners bilinear, no antialias, to (floor(s h + 0.5),
//     floor(s w + 0.5)) (a scale giving a side < 1 is skipped), pad image_pad
//     pixels of image_pad_value on every side, normalise with the model's
//     mean/std, run the dense model. A scale whose grid has no cell is skipped.
//  3. Top-k: every (scale, row, col) ranked by objectness logit, descending;
//     ties: lower scale index first, then row-major order. The first
//     max_proposals are kept (no NMS, no threshold: the released rule). The
//     cell is decoded correctly (not the released index bug, spec Q1).
//  4. Masks: SharpMask refined 160x160 logits (DeepMask: 56x56) at the cells.
//  5. Paste, in ORIGINAL image pixels (in double, evaluated as written: the
//     floors depend on it): with fy = H / h_work, fx = W / w_work,
//     the window of cell (r, c) at scale s has top-left
//     (floor((16 r - 80) / s * fy), floor((16 c - 80) / s * fx)) and size
//     (floor(160 / s * fy), floor(160 / s * fx)) (iSz = 160, stride 16,
//     image_pad 80 from the config). The logits are resized to that size with
//     torch image.scale (width pass, then height; per axis: align-corners
//     linear when growing, area average when shrinking, copy when equal) and a
//     pixel is set where the logit > ln(t / (1 - t)), t = mask_threshold, and
//     inside the image. Without a work resize this is exactly the spec's rule.
//  6. Boxes from masks: the tight box (COCO toBbox); empty mask -> [0,0,0,0].
//  7. mode Proposals: instances are the proposals with objectness >=
//     score_threshold, in rank order (label "object", category 1, score =
//     objectness = sigmoid(logit)), then, when
//     nms_threshold < 1, greedy class-agnostic NMS on the mask boxes
//     (inclusive pixel boxes, IoU with the +1 rule of nms.c; an empty mask's
//     box overlaps nothing), then the first max_detections.
//  8. mode Instances: proposals with an empty mask or an inclusive box
//     (xmin, ymin, xmax, ymax) with (xmax - xmin)(ymax - ymin) <= 2 are
//     dropped (test_min_proposal_size). MultiPathNet's input is the ORIGINAL
//     image (u8 / 255, not the work image) resized with image.scale to
//     (max(1, floor(H s')), max(1, floor(W s'))),
//     s' = test_scale / min(H, W), or test_max_size / max(H, W) when
//     floor(s' max(H, W) + 0.5) > test_max_size, then normalised with its
//     mean/std; ROIs are the inclusive boxes times s' (0-based). Class boxes
//     are decoded against the unscaled boxes (decode_multipathnet_boxes,
//     clamped to the image). For each class c >= 1: proposals with
//     p[c] >= score_threshold, greedy NMS (+1 rule) at nms_threshold on the
//     class boxes; then all kept (proposal, class) pairs sorted by score
//     (descending; ties by class, then proposal rank), the first
//     max_detections kept. An instance's objectness is its proposal's. Its box is its class box as
//     [x1, y1, x2 - x1, y2 - y1] (the released results format), its mask the
//     proposal's.
//  9. Masks are COCO RLE (column-major runs, pycocotools' compressed string).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "models/deepmask.h"
#include "models/multipathnet.h"
#include "models/sharpmask.h"

namespace fovea::pipeline {

enum class Mode { Proposals, Instances };

struct Options {
    Mode mode = Mode::Instances;
    int64_t max_proposals = 100;
    int64_t max_detections = 100;
    float score_threshold = 0.5f;    // instances: class probability; proposals: objectness
    float nms_threshold = 0.3f;      // >= 1 disables NMS
    float mask_threshold = 0.2f;     // probability
    std::vector<double> scales;      // empty: the model's config "scales"
    int64_t max_side = 600;          // 0: no work resize
};

// Read-only view of 8-bit RGB pixels, row-major HWC.
struct ImageView {
    const uint8_t * data = nullptr;
    int64_t width = 0, height = 0;
};

struct Instance {
    std::string label;
    int64_t category_id = 0;
    int64_t class_index = 0;         // model class (0 in proposals mode)
    float score = 0.0f;
    float objectness = 0.0f;
    float box[4] = {0, 0, 0, 0};     // x, y, w, h in image pixels
    int64_t proposal = 0;            // rank of the proposal the mask came from
    int64_t scale_index = 0, row = 0, col = 0;  // its cell in the pyramid
    std::string rle;                 // COCO compressed RLE counts, size = [height, width]
    int64_t area = 0;                // mask pixels
};

struct Timing {
    std::string stage;
    double ms = 0.0;
};

struct Result {
    int64_t width = 0, height = 0;
    std::vector<Instance> instances;
    std::vector<Timing> timings;
    std::string device;              // "cpu" or "cuda:N"
    int64_t proposals = 0;           // proposals the model produced (before filtering)
};

// Called between steps with the stage name and its fraction done in [0, 1].
using ProgressFn = std::function<void(const char * stage, double fraction)>;

struct RunControl {
    const std::atomic<bool> * cancelled = nullptr;  // Error(Aborted) between steps when set
    ProgressFn progress;
};

// Per-channel (x - mean) / std as batch-norm parameters on the backend's device.
struct InputNorm {
    Tensor scale, bias, mean, var;
};

class Pipeline {
  public:
    // proposals_path: a "sharpmask" or "deepmask" (ResNet trunk) file;
    // classifier_path: a "multipathnet" file, or empty (proposals mode only).
    // Error(Weights) on a bad file, Error(Options) on a wrong architecture.
    static std::shared_ptr<Pipeline> load(const std::string & proposals_path, const std::string & classifier_path,
                                          Backend & backend);

    bool has_classifier() const { return classifier_.has_value(); }
    const models::DeepMaskConfig & proposal_config() const;
    const std::vector<double> & default_scales() const { return scales_; }
    const std::vector<std::string> & class_names() const { return class_names_; }
    // The device the models run on: "cpu" or "cuda:N" (Result::device too).
    std::string device_name() const { return backend_->device().str(); }

    // Thread-safe for concurrent calls (models are read-only).
    Result run(const ImageView & image, const Options & options, const RunControl & control = {}) const;

  private:
    Pipeline(Backend & backend) : backend_(&backend) {}

    Backend * backend_;
    std::optional<models::SharpMask> sharpmask_;
    std::optional<models::DeepMask> deepmask_;  // a deepmask-only file
    std::optional<models::MultiPathNet> classifier_;
    // DeepMask/SharpMask input
    std::vector<double> scales_;
    float mean_[3] = {0, 0, 0}, std_[3] = {1, 1, 1};
    InputNorm norm_;
    int64_t image_pad_ = 80;
    float image_pad_value_ = 0.5f;
    int64_t stride_ = 16, iSz_ = 160;
    // MultiPathNet input
    float cls_mean_[3] = {0, 0, 0}, cls_std_[3] = {1, 1, 1};
    InputNorm cls_norm_;
    int64_t test_scale_ = 600, test_max_size_ = 1000;
    std::vector<std::string> class_names_;
    std::vector<int64_t> category_ids_;  // per class index >= 1
};

}  // namespace fovea::pipeline
