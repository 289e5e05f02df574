// Greedy non-maximum suppression, as native/cpu/nms.cc, in the torchvision
// layout: the boxes (in decreasing score order) are compared pairwise on the
// device into a bitmask, one bit per (box, later box) that it suppresses,
// and the greedy pass over that mask runs on the host. The order itself is a
// stable sort on the host (ties keep index order, ONNX Runtime's rule): the
// scores are needed there anyway for the threshold, and the kept indices are
// host data.
#include <algorithm>
#include <numeric>
#include <vector>

#include "core/op_shapes.h"
#include "cuda/context.h"

namespace fovea::cuda {

namespace {

constexpr int kBlock = 64;  // boxes per mask word

struct Box {
    float x_min, y_min, x_max, y_max, area;
};

// std::min / std::max, whose NaN behaviour fminf / fmaxf do not share.
__device__ __forceinline__ float std_min(float a, float b) { return b < a ? b : a; }
__device__ __forceinline__ float std_max(float a, float b) { return a < b ? b : a; }

// Box j of the sorted order, normalised as the CPU does.
__global__ void nms_boxes_kernel(const float * __restrict__ boxes, const int64_t * __restrict__ order,
                                 Box * __restrict__ out, int64_t n, bool center, float offset) {
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
        const float * v = boxes + order[j] * 4;
        Box b;
        if (center) {
            // (cx, cy, w, h); a negative size stays degenerate, as in ONNX.
            b = {v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2, 0.0f};
        } else {
            // Either corner may come first.
            b = {std_min(v[0], v[2]), std_min(v[1], v[3]), std_max(v[0], v[2]), std_max(v[1], v[3]), 0.0f};
        }
        b.area = __fmul_rn(b.x_max - b.x_min + offset, b.y_max - b.y_min + offset);
        out[j] = b;
    }
}

// The CPU's suppresses(); products rounded on their own (no fused
// multiply-add) so both backends decide every pair alike.
__device__ __forceinline__ bool suppresses(const Box & a, const Box & b, float offset, float iou_threshold) {
    const float iw = std_min(a.x_max, b.x_max) - std_max(a.x_min, b.x_min) + offset;
    if (!(iw > 0.0f)) return false;
    const float ih = std_min(a.y_max, b.y_max) - std_max(a.y_min, b.y_min) + offset;
    if (!(ih > 0.0f)) return false;
    const float inter = __fmul_rn(iw, ih);
    if (!(a.area > 0.0f) || !(b.area > 0.0f)) return false;
    const float uni = a.area + b.area - inter;
    if (!(uni > 0.0f)) return false;
    return inter / uni > iou_threshold;
}

// mask[i * words + w] bit t: box i suppresses box w * 64 + t (> i).
// Block (row block, column block), one thread per row box.
__global__ void nms_mask_kernel(const Box * __restrict__ boxes, unsigned long long * __restrict__ mask, int64_t n,
                                int64_t words, float offset, float iou_threshold) {
    const int64_t row0 = int64_t(blockIdx.y) * kBlock, col0 = int64_t(blockIdx.x) * kBlock;
    if (col0 + kBlock <= row0) {
        // Only later boxes matter; the word is written anyway so that the
        // whole mask copied to the host is initialised.
        if (row0 + threadIdx.x < n) mask[(row0 + threadIdx.x) * words + blockIdx.x] = 0;
        return;
    }
    __shared__ Box cols[kBlock];
    const int64_t col_count = n - col0 < kBlock ? n - col0 : kBlock;
    if (int64_t(threadIdx.x) < col_count) cols[threadIdx.x] = boxes[col0 + threadIdx.x];
    __syncthreads();
    const int64_t i = row0 + threadIdx.x;
    if (i >= n) return;
    const Box a = boxes[i];
    unsigned long long bits = 0;
    for (int64_t t = 0; t < col_count; t++) {
        if (col0 + t > i && suppresses(a, cols[t], offset, iou_threshold)) bits |= 1ull << t;
    }
    mask[i * words + blockIdx.x] = bits;
}

}  // namespace

std::vector<int64_t> nms(Context & ctx, const Tensor & boxes, const Tensor & scores, const NmsParams & p) {
    check_nms(boxes, scores, p);
    check_on_device(ctx, boxes, "nms");
    check_on_device(ctx, scores, "nms");
    const int64_t n = boxes.dim(0);
    std::vector<float> s(static_cast<size_t>(n));
    ctx.download(scores, s.data());
    std::vector<int64_t> order;
    for (int64_t i = 0; i < n; i++) {
        if (s[size_t(i)] > p.score_threshold) order.push_back(i);  // strictly greater; NaN never passes
    }
    std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[size_t(i)] > s[size_t(j)]; });
    const size_t limit = p.max_output < 0 ? order.size() : size_t(p.max_output);
    std::vector<int64_t> keep;
    const int64_t m = int64_t(order.size());
    if (m == 0 || limit == 0) return keep;
    const int64_t words = (m + kBlock - 1) / kBlock;
    FOVEA_CHECK(words <= 65535, ErrorCode::Input, "nms: " << m << " boxes are more than the CUDA backend's limit of "
                                                          << 65535 * kBlock);
    const Tensor d_order = ctx.upload(order.data(), {m}, DType::I64);
    Tensor d_boxes = ctx.empty({m, int64_t(sizeof(Box) / sizeof(float))});
    nms_boxes_kernel<<<grid_for(m, 256), 256, 0, ctx.stream>>>(boxes.f32(), d_order.data<int64_t>(),
                                                              reinterpret_cast<Box *>(d_boxes.f32()), m,
                                                              p.center_point_box, p.pixel_offset);
    check_launch("nms");
    Tensor d_mask = ctx.empty({m, words}, DType::I64);
    nms_mask_kernel<<<dim3(unsigned(words), unsigned(words)), kBlock, 0, ctx.stream>>>(
        reinterpret_cast<const Box *>(d_boxes.f32()), reinterpret_cast<unsigned long long *>(d_mask.raw()), m,
        words, p.pixel_offset, p.iou_threshold);
    check_launch("nms");
    std::vector<unsigned long long> mask(size_t(m * words));
    ctx.download(d_mask, mask.data());
    std::vector<unsigned long long> removed(size_t(words), 0);
    for (int64_t i = 0; i < m && keep.size() < limit; i++) {
        if (removed[size_t(i / kBlock)] >> (i % kBlock) & 1) continue;
        keep.push_back(order[size_t(i)]);
        const unsigned long long * row = &mask[size_t(i * words)];
        for (int64_t w = i / kBlock; w < words; w++) removed[size_t(w)] |= row[w];
    }
    return keep;
}

}  // namespace fovea::cuda
