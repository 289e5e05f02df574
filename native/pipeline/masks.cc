#include "pipeline/masks.h"

#include <algorithm>

#include "core/error.h"
#include "cpu/ops.h"

namespace fovea::pipeline {

namespace {

// Appends `n` pixels of value `bit` to the runs.
struct RunWriter {
    std::vector<uint32_t> & counts;
    uint8_t current = 0;
    uint64_t run = 0;

    void push(uint8_t bit, uint64_t n) {
        if (n == 0) return;
        if (bit != current) {
            counts.push_back(uint32_t(run));
            current = bit;
            run = 0;
        }
        run += n;
    }
    void finish() { counts.push_back(uint32_t(run)); }
};

}  // namespace

RleMask paste_mask(const float * logits, int64_t n_h, int64_t n_w, const MaskWindow & window, int64_t image_h,
                   int64_t image_w, float logit_threshold) {
    FOVEA_CHECK_INPUT(image_h >= 1 && image_w >= 1 && image_h * image_w < (int64_t(1) << 32),
                      "paste_mask: image " << image_w << "x" << image_h << " is empty or too large");
    RleMask out;
    const int64_t r0 = std::max<int64_t>(0, window.top), r1 = std::min(image_h, window.top + window.height);
    const int64_t c0 = std::max<int64_t>(0, window.left), c1 = std::min(image_w, window.left + window.width);
    RunWriter runs{out.counts};
    if (window.height < 1 || window.width < 1 || r0 >= r1 || c0 >= c1) {
        runs.push(0, uint64_t(image_h * image_w));
        runs.finish();
        return out;
    }
    const cpu::ImageScaleAxis ay(n_h, window.height), ax(n_w, window.width);
    const int64_t rows = r1 - r0, cols = c1 - c0;
    std::vector<float> tmp(size_t(n_h * cols)), region(size_t(rows * cols));
    cpu::image_scale_plane(logits, n_h, n_w, ay, ax, r0 - window.top, r1 - window.top, c0 - window.left,
                           c1 - window.left, region.data(), tmp.data());
    // Thresholded row-major (a vector loop), then walked column-major, one
    // run at a time, as COCO RLE orders pixels.
    std::vector<uint8_t> bits(region.size());
    for (size_t i = 0; i < bits.size(); i++) bits[i] = region[i] > logit_threshold ? 1 : 0;
    runs.push(0, uint64_t(c0 * image_h));
    for (int64_t c = 0; c < cols; c++) {
        runs.push(0, uint64_t(r0));
        const uint8_t * column = bits.data() + c;
        for (int64_t r = 0; r < rows;) {
            const uint8_t bit = column[r * cols];
            const int64_t start = r;
            while (r < rows && column[r * cols] == bit) r++;
            runs.push(bit, uint64_t(r - start));
            if (bit) {
                const int64_t x = c0 + c, y0 = r0 + start, y1 = r0 + r - 1;
                if (out.area == 0) {
                    out.x0 = out.x1 = x;
                    out.y0 = y0;
                    out.y1 = y1;
                }
                out.x0 = std::min(out.x0, x);
                out.x1 = std::max(out.x1, x);
                out.y0 = std::min(out.y0, y0);
                out.y1 = std::max(out.y1, y1);
                out.area += r - start;
            }
        }
        runs.push(0, uint64_t(image_h - r1));
    }
    runs.push(0, uint64_t((image_w - c1) * image_h));
    runs.finish();
    return out;
}

std::string rle_to_string(const std::vector<uint32_t> & counts) {
    // Each count (after the first two, as a difference from the count two
    // before) in 5-bit groups, low first, + 48; bit 0x20 = more groups follow.
    std::string s;
    for (size_t i = 0; i < counts.size(); i++) {
        int64_t x = int64_t(counts[i]);
        if (i > 2) x -= int64_t(counts[i - 2]);
        bool more = true;
        while (more) {
            char c = char(x & 0x1f);
            x >>= 5;
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            s.push_back(char(c + 48));
        }
    }
    return s;
}

}  // namespace fovea::pipeline
