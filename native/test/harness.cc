#include "test/harness.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>

namespace fovea::test {

std::vector<TestCase> & registry() {
    static std::vector<TestCase> cases;
    return cases;
}

Tensor random_tensor(const Shape & shape, uint64_t seed, float lo, float hi) {
    Tensor t = Tensor::empty(shape);
    float * p = t.f32();
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < t.numel(); i++) {
        // xorshift64*: fast, portable, good enough for test data.
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t r = s * 0x2545F4914F6CDD1Dull;
        float u = static_cast<float>(r >> 40) / static_cast<float>(1ull << 24);
        p[i] = lo + (hi - lo) * u;
    }
    return t;
}

static void check_comparable(const Tensor & a, const Tensor & b) {
    if (a.shape() != b.shape()) {
        throw Failure("shape mismatch: " + shape_str(a.shape()) + " vs " + shape_str(b.shape()));
    }
}

double nmse(const Tensor & actual, const Tensor & expected) {
    check_comparable(actual, expected);
    const float * a = actual.f32();
    const float * b = expected.f32();
    double num = 0, den = 0;
    for (int64_t i = 0; i < actual.numel(); i++) {
        double d = double(a[i]) - double(b[i]);
        num += d * d;
        den += double(b[i]) * double(b[i]);
    }
    if (den == 0) return num;
    return num / den;
}

double max_abs_diff(const Tensor & actual, const Tensor & expected) {
    check_comparable(actual, expected);
    const float * a = actual.f32();
    const float * b = expected.f32();
    double m = 0;
    for (int64_t i = 0; i < actual.numel(); i++) {
        double d = std::fabs(double(a[i]) - double(b[i]));
        if (!(d <= m)) m = d;  // NaN propagates as a failure
    }
    return m;
}

Conv2dParams conv_params(int stride, int pad, int dilation, int groups, Activation act) {
    Conv2dParams p;
    p.stride_h = p.stride_w = stride;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
    p.dilation_h = p.dilation_w = dilation;
    p.groups = groups;
    p.activation = act;
    return p;
}

}  // namespace fovea::test

// Arguments select tests by substring: a test runs when its name contains one
// of the plain arguments (or there is none) and none of the '-' ones, e.g.
// `fovea_tests cuda_ -cuda_out_of_memory`.
static bool selected(const std::string & name, int argc, char ** argv) {
    bool any_positive = false, matched = false;
    for (int i = 1; i < argc; i++) {
        const bool exclude = argv[i][0] == '-';
        if (std::strstr(name.c_str(), argv[i] + (exclude ? 1 : 0)) != nullptr) {
            if (exclude) return false;
            matched = true;
        }
        any_positive |= !exclude;
    }
    return matched || !any_positive;
}

int main(int argc, char ** argv) {
    using namespace fovea::test;
    int passed = 0, skipped = 0, failed = 0;
    for (auto & tc : registry()) {
        if (!selected(tc.name, argc, argv)) continue;
        auto t0 = std::chrono::steady_clock::now();
        try {
            tc.fn();
            double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            std::printf("ok   %s (%.1f ms)\n", tc.name.c_str(), ms);
            passed++;
        } catch (const Skip & e) {
            std::printf("skip %s: %s\n", tc.name.c_str(), e.what());
            skipped++;
        } catch (const std::exception & e) {
            std::printf("FAIL %s: %s\n", tc.name.c_str(), e.what());
            failed++;
        }
        std::fflush(stdout);
    }
    std::printf("%d passed, %d skipped, %d failed\n", passed, skipped, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
