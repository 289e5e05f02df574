// Minimal self-registering test harness for the standalone native test
// executable (no third-party test framework, so it builds on any machine with
// a C++17 compiler, including the GPU machine that has no Node and no apt).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace fovea::test {

struct TestCase {
    std::string name;
    std::function<void()> fn;
};

std::vector<TestCase> & registry();

struct Registrar {
    Registrar(const char * name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Thrown by a test that cannot run here (no CUDA device, say): reported as
// "skip NAME: reason", neither passed nor failed.
struct Skip : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Conv parameters with the same stride, padding and dilation on both axes.
Conv2dParams conv_params(int stride, int pad, int dilation = 1, int groups = 1,
                         Activation act = Activation::None);

// Deterministic inputs: the same seed gives the same tensor on every machine.
Tensor random_tensor(const Shape & shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
// Normalised mean squared error sum((a-b)^2) / sum(b^2), as ggml's test-backend-ops.
double nmse(const Tensor & actual, const Tensor & expected);
double max_abs_diff(const Tensor & actual, const Tensor & expected);

}  // namespace fovea::test

#define FOVEA_TEST_CONCAT_(a, b) a##b
#define FOVEA_TEST_CONCAT(a, b) FOVEA_TEST_CONCAT_(a, b)
#define FOVEA_TEST(name)                                                                          \
    static void name();                                                                           \
    static ::fovea::test::Registrar FOVEA_TEST_CONCAT(name, _registrar)(#name, name);             \
    static void name()

#define EXPECT_TRUE(cond)                                                                         \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            std::ostringstream os_;                                                               \
            os_ << __FILE__ << ":" << __LINE__ << ": expected " #cond;                            \
            throw ::fovea::test::Failure(os_.str());                                              \
        }                                                                                         \
    } while (0)

#define EXPECT_EQ(a, b)                                                                           \
    do {                                                                                          \
        auto va_ = (a);                                                                           \
        auto vb_ = (b);                                                                           \
        if (!(va_ == vb_)) {                                                                      \
            std::ostringstream os_;                                                               \
            os_ << __FILE__ << ":" << __LINE__ << ": " #a " == " #b " failed: " << va_ << " vs " << vb_; \
            throw ::fovea::test::Failure(os_.str());                                              \
        }                                                                                         \
    } while (0)

#define EXPECT_NEAR(a, b, tol)                                                                    \
    do {                                                                                          \
        double va_ = (a);                                                                         \
        double vb_ = (b);                                                                         \
        if (!(std::fabs(va_ - vb_) <= (tol))) {                                                   \
            std::ostringstream os_;                                                               \
            os_ << __FILE__ << ":" << __LINE__ << ": |" #a " - " #b "| <= " #tol " failed: " << va_ << " vs " << vb_; \
            throw ::fovea::test::Failure(os_.str());                                              \
        }                                                                                         \
    } while (0)

// The expression must throw fovea::Error with the given code.
#define EXPECT_THROWS_CODE(expr, error_code)                                                      \
    do {                                                                                          \
        bool threw_ = false;                                                                      \
        try {                                                                                     \
            (void)(expr);                                                                         \
        } catch (const ::fovea::Error & e_) {                                                     \
            threw_ = true;                                                                        \
            if (e_.code() != (error_code)) {                                                      \
                std::ostringstream os_;                                                           \
                os_ << __FILE__ << ":" << __LINE__ << ": " #expr " threw " << ::fovea::error_code_name(e_.code()) \
                    << " (" << e_.what() << "), expected " << ::fovea::error_code_name(error_code); \
                throw ::fovea::test::Failure(os_.str());                                          \
            }                                                                                     \
        }                                                                                         \
        if (!threw_) {                                                                            \
            std::ostringstream os_;                                                               \
            os_ << __FILE__ << ":" << __LINE__ << ": " #expr " did not throw";                    \
            throw ::fovea::test::Failure(os_.str());                                              \
        }                                                                                         \
    } while (0)
