// Greedy non-maximum suppression for one class, as ONNX NonMaxSuppression
// (ONNX Runtime's SuppressByIOU), with an optional +1 pixel convention for
// the Torch7 / MultiPathNet nms.c.
#include <algorithm>
#include <numeric>

#include "core/op_shapes.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

struct Box {
    float x_min, y_min, x_max, y_max, area;
};

// True when b suppresses a (or the reverse: the test is symmetric). With
// pixel_offset 1 a box from x1 to x2 covers x2 - x1 + 1 pixels. Degenerate
// boxes (no positive area) never suppress nor get suppressed, as in ONNX.
bool suppresses(const Box & a, const Box & b, float offset, float iou_threshold) {
    float iw = std::min(a.x_max, b.x_max) - std::max(a.x_min, b.x_min) + offset;
    if (!(iw > 0.0f)) return false;
    float ih = std::min(a.y_max, b.y_max) - std::max(a.y_min, b.y_min) + offset;
    if (!(ih > 0.0f)) return false;
    float inter = iw * ih;
    if (!(a.area > 0.0f) || !(b.area > 0.0f)) return false;
    float uni = a.area + b.area - inter;
    if (!(uni > 0.0f)) return false;
    return inter / uni > iou_threshold;
}

}  // namespace

std::vector<int64_t> nms(const Tensor & boxes, const Tensor & scores, const NmsParams & p) {
    check_nms(boxes, scores, p);
    check_host(boxes, "nms");
    check_host(scores, "nms");
    const int64_t n = boxes.dim(0);
    const float * b = boxes.f32();
    const float * s = scores.f32();
    std::vector<int64_t> order;
    for (int64_t i = 0; i < n; i++) {
        if (s[i] > p.score_threshold) order.push_back(i);  // strictly greater; NaN scores never pass
    }
    // Decreasing score; equal scores keep index order (ONNX Runtime's rule).
    std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] > s[j]; });
    std::vector<int64_t> keep;
    std::vector<Box> kept;
    const size_t limit = p.max_output < 0 ? order.size() : size_t(p.max_output);
    for (int64_t i : order) {
        if (keep.size() >= limit) break;
        const float * v = b + i * 4;
        Box box;
        if (p.center_point_box) {
            // (cx, cy, w, h); a negative size stays degenerate, as in ONNX.
            box = {v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2, 0.0f};
        } else {
            // Either corner may come first.
            box = {std::min(v[0], v[2]), std::min(v[1], v[3]), std::max(v[0], v[2]), std::max(v[1], v[3]), 0.0f};
        }
        box.area = (box.x_max - box.x_min + p.pixel_offset) * (box.y_max - box.y_min + p.pixel_offset);
        bool suppressed = std::any_of(kept.begin(), kept.end(), [&](const Box & k) {
            return suppresses(box, k, p.pixel_offset, p.iou_threshold);
        });
        if (suppressed) continue;
        keep.push_back(i);
        kept.push_back(box);
    }
    return keep;
}

}  // namespace fovea::cpu
