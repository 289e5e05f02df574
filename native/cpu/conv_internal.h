// What conv.cc shares with the conv algorithms in files of their own
// (conv_winograd.cc): the problem's sizes and the channels-last layout of
// input and output.
#pragma once

#include <cstdint>

#include "core/ops.h"
#include "core/tensor.h"

namespace fovea::cpu::conv_detail {

struct ConvDims {
    int64_t n, groups, cg, ocg, h, w, oh, ow;
    int64_t k;  // Cg * KH * KW
};

// Floats from one pixel to the next in a channels-last copy of `channels`.
int64_t channels_last_pitch(int64_t channels);

// x zero-padded by p's padding, channels last: [n][hp][wp][pitch] with
// pitch = channels_last_pitch(channels); the floats past the channels of
// each pixel are uninitialised.
Tensor channels_last_input(const Tensor & x, const ConvDims & d, const Conv2dParams & p);

// y = yt ([n][OH*OW][OC]) transposed into NCHW; with a residual (in y's
// layout), y = act(yt + residual_scale * residual), else yt is final.
void channels_last_output(const Tensor & yt, const ConvDims & d, Activation act, const Tensor & residual,
                          const Tensor & residual_scale, Tensor & y);

// How conv_winograd would tile a layer of stride 1 or 2: its tiles over the
// batch, its points (one GEMM each), and the products per output it needs
// with the outputs past the image that the tiling computes (the direct
// convolution needs 9).
struct WinogradPlan {
    int64_t tiles, points;
    double products_per_output;
};
WinogradPlan winograd_plan(const ConvDims & d, int64_t stride);

// conv2d by Winograd's minimal filtering (conv_winograd.cc);
// conv2d_winograd_applies() must hold.
Tensor conv_winograd(const Tensor & x, const Tensor & w, const Tensor & bias, const Conv2dParams & p,
                     const ConvDims & d, const Tensor & residual, const Tensor & residual_scale, Tensor y);

}  // namespace fovea::cpu::conv_detail
