// pad2d: constant or symmetric padding, and cropping with negative amounts.
// A row of the output is assembled from one source row by an index map, so
// the same loop serves every mode and any pad size (mirroring repeats for
// pads larger than the input, as numpy's 'symmetric' does).
#include <algorithm>
#include <vector>

#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/isa_dispatch.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace {

// Source index of output position i (already shifted by the leading pad),
// or -1 for a constant fill.
int64_t source_index(int64_t i, int64_t n, PadMode mode) {
    if (i >= 0 && i < n) return i;
    if (mode == PadMode::Constant) return -1;
    int64_t period = 2 * n;
    int64_t m = ((i % period) + period) % period;
    return m < n ? m : period - 1 - m;
}

}  // namespace

Tensor pad2d(const Tensor & x, const Pad2dParams & p) {
    Shape out_shape = pad2d_output_shape(x, p);
    check_host(x, "pad2d");
    Tensor y = Tensor::empty(out_shape);
    const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
    const int64_t oh = out_shape[2], ow = out_shape[3];
    std::vector<int64_t> col(ow), row(oh);
    for (int64_t j = 0; j < ow; j++) col[j] = source_index(j - p.left, w, p.mode);
    for (int64_t i = 0; i < oh; i++) row[i] = source_index(i - p.top, h, p.mode);
    // The interior of each row is one contiguous copy; only the borders map.
    const int64_t inner_begin = std::clamp<int64_t>(p.left, 0, ow);
    const int64_t inner_end = std::clamp<int64_t>(p.left + w, 0, ow);
    const float * src = x.f32();
    float * dst = y.f32();
    parallel_for(planes * oh, std::max<int64_t>(1, 16384 / std::max<int64_t>(ow, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; r++) {
            const int64_t plane = r / oh, i = r % oh;
            float * out = dst + r * ow;
            if (row[i] < 0) {
                std::fill(out, out + ow, p.value);
                continue;
            }
            const float * in = src + (plane * h + row[i]) * w;
            for (int64_t j = 0; j < inner_begin; j++) out[j] = col[j] < 0 ? p.value : in[col[j]];
            if (inner_end > inner_begin) std::copy(in + (inner_begin - p.left), in + (inner_end - p.left), out + inner_begin);
            for (int64_t j = inner_end; j < ow; j++) out[j] = col[j] < 0 ? p.value : in[col[j]];
        }
    });
    return y;
}

}  // namespace fovea::cpu
