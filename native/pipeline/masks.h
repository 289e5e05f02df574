// Binary masks of the pipeline: mask logits pasted into image coordinates,
// kept as COCO run-length encodings (never as full bitmaps, which for a
// 4000x3000 photo and 100 proposals would be 1.2 GB).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fovea::pipeline {

// Where a mask's logit map lands in the image: its window in image pixels
// (may extend past the image on any side).
struct MaskWindow {
    int64_t top = 0, left = 0;
    int64_t height = 0, width = 0;
};

// A binary image mask as COCO RLE: runs of 0s and 1s alternating, starting
// with 0s, in column-major order over an image_h x image_w image.
struct RleMask {
    std::vector<uint32_t> counts;
    int64_t area = 0;
    // Tight inclusive box of the set pixels; meaningless when area == 0.
    int64_t x0 = 0, y0 = 0, x1 = -1, y1 = -1;
};

// Resizes `logits` (n_h x n_w) to the window with torch image.scale, keeps
// the pixels inside the image with logit > logit_threshold.
RleMask paste_mask(const float * logits, int64_t n_h, int64_t n_w, const MaskWindow & window, int64_t image_h,
                   int64_t image_w, float logit_threshold);

// pycocotools' compressed RLE string (rleToString in maskApi.c).
std::string rle_to_string(const std::vector<uint32_t> & counts);

}  // namespace fovea::pipeline
