// Tests of native/core: tensor, allocator, thread pool, errors, CPU features.
#include <atomic>
#include <thread>

#include "core/allocator.h"
#include "core/cpu_features.h"
#include "core/device.h"
#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "test/harness.h"

using namespace fovea;

FOVEA_TEST(tensor_shape_and_reshape) {
    Tensor t = Tensor::zeros({2, 3, 4});
    EXPECT_EQ(t.numel(), 24);
    EXPECT_EQ(t.dim(-1), 4);
    EXPECT_EQ(t.nbytes(), size_t(96));
    Tensor r = t.reshape({6, 4});
    EXPECT_TRUE(r.raw() == t.raw());
    EXPECT_THROWS_CODE(t.reshape({5, 5}), ErrorCode::Input);
    EXPECT_THROWS_CODE(Tensor::empty({-1, 2}), ErrorCode::Input);
    EXPECT_THROWS_CODE(Tensor::empty({int64_t(1) << 40, int64_t(1) << 30}), ErrorCode::Input);
    EXPECT_THROWS_CODE(Tensor::empty({int64_t(1) << 45}), ErrorCode::OutOfMemory);
}

FOVEA_TEST(tensor_clone_is_deep) {
    Tensor a = Tensor::from_vector({3}, {1, 2, 3});
    Tensor b = a.clone();
    b.f32()[0] = 7;
    EXPECT_EQ(a.f32()[0], 1.0f);
    EXPECT_THROWS_CODE(Tensor::from_vector({2}, {1, 2, 3}), ErrorCode::Input);
}

FOVEA_TEST(tensor_derived_data_is_kept_per_view_and_freed_with_the_storage) {
    Tensor whole = Tensor::zeros({8});
    Tensor first = whole.reshape({2, 4});
    int made = 0;
    auto make = [&]() {
        made++;
        return std::shared_ptr<const void>(std::make_shared<int>(made));
    };
    // Mutable buffers never carry derived data: it could go stale.
    EXPECT_TRUE(!whole.is_constant());
    EXPECT_THROWS_CODE(whole.derived("packed", make), ErrorCode::Internal);
    whole.mark_constant();
    EXPECT_TRUE(first.is_constant());
    std::weak_ptr<const void> kept;
    {
        const std::shared_ptr<const void> a = whole.derived("packed", make);
        EXPECT_TRUE(whole.derived("packed", make) == a);  // made once
        EXPECT_TRUE(whole.derived("other", make) != a);
        EXPECT_TRUE(first.derived("packed", make) != a);  // another shape of the same buffer
        EXPECT_EQ(made, 3);
        kept = a;
    }
    EXPECT_TRUE(!kept.expired());
    whole = Tensor();
    EXPECT_TRUE(!kept.expired());  // `first` still holds the storage
    first = Tensor();
    EXPECT_TRUE(kept.expired());
}

FOVEA_TEST(allocator_reuses_blocks) {
    CachingAllocator alloc(1 << 20);
    void * a = alloc.allocate(10000);
    alloc.release(a);
    void * b = alloc.allocate(9000);  // same size class as 10000
    EXPECT_TRUE(a == b);
    EXPECT_EQ(alloc.stats().cache_hits, uint64_t(1));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % CachingAllocator::kAlignment, uintptr_t(0));
    alloc.release(b);
    EXPECT_TRUE(alloc.stats().bytes_in_use == 0);
    alloc.empty_cache();
    EXPECT_TRUE(alloc.stats().bytes_cached == 0);
}

FOVEA_TEST(allocator_size_classes_bound_waste) {
    for (size_t n : {size_t(1), size_t(63), size_t(4097), size_t(100000), size_t(1) << 30}) {
        size_t c = CachingAllocator::size_class(n);
        EXPECT_TRUE(c >= n);
        EXPECT_TRUE(c <= n + n / 2 + 64);
    }
}

FOVEA_TEST(allocator_cache_is_bounded) {
    CachingAllocator alloc(8192);
    void * a = alloc.allocate(100000);
    alloc.release(a);  // larger than the cache: freed, not kept
    EXPECT_TRUE(alloc.stats().bytes_cached == 0);
    EXPECT_THROWS_CODE(alloc.allocate(size_t(1) << 50), ErrorCode::OutOfMemory);
}

FOVEA_TEST(thread_pool_covers_range_once) {
    ThreadPool pool(4);
    std::vector<std::atomic<int>> hits(10007);
    pool.parallel_for(10007, 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; i++) hits[i]++;
    });
    for (auto & h : hits) EXPECT_EQ(h.load(), 1);
}

FOVEA_TEST(thread_pool_nested_and_concurrent_callers) {
    ThreadPool pool(3);
    std::atomic<int64_t> total{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 4; c++) {
        callers.emplace_back([&] {
            pool.parallel_for(100, 1, [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; i++) {
                    pool.parallel_for(10, 1, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
                }
            });
        });
    }
    for (auto & t : callers) t.join();
    EXPECT_EQ(total.load(), int64_t(4 * 100 * 10));
}

FOVEA_TEST(thread_pool_rethrows_on_caller) {
    ThreadPool pool(2);
    EXPECT_THROWS_CODE(pool.parallel_for(1000, 1,
                                         [&](int64_t b, int64_t) {
                                             if (b >= 500) throw_error(ErrorCode::Input, "boom");
                                         }),
                       ErrorCode::Input);
    // The pool stays usable after a failure.
    std::atomic<int> n{0};
    pool.parallel_for(10, 1, [&](int64_t b, int64_t e) { n += int(e - b); });
    EXPECT_EQ(n.load(), 10);
}

FOVEA_TEST(error_codes_have_stable_names) {
    EXPECT_EQ(std::string(error_code_name(ErrorCode::Input)), std::string("ERR_INPUT"));
    EXPECT_EQ(std::string(error_code_name(ErrorCode::OutOfMemory)), std::string("ERR_OUT_OF_MEMORY"));
    EXPECT_EQ(std::string(error_code_name(ErrorCode::Aborted)), std::string("ERR_ABORTED"));
}

FOVEA_TEST(cpu_isa_override_is_clamped) {
    CpuIsa before = cpu_isa();
    set_cpu_isa(CpuIsa::Scalar);
    EXPECT_TRUE(cpu_isa() == CpuIsa::Scalar);
    set_cpu_isa(CpuIsa::Avx512);
    const CpuFeatures & f = cpu_features();
    if (!f.avx512f) EXPECT_TRUE(cpu_isa() != CpuIsa::Avx512);
    set_cpu_isa(before);
}

FOVEA_TEST(parse_device_specs) {
    EXPECT_TRUE(parse_device("cpu").type == DeviceType::CPU);
    EXPECT_EQ(parse_device("cuda:3").index, 3);
    EXPECT_THROWS_CODE(parse_device("gpu"), ErrorCode::Options);
    EXPECT_THROWS_CODE(parse_device("cuda:-1"), ErrorCode::Options);
    EXPECT_THROWS_CODE(parse_device("cuda:x"), ErrorCode::Options);
    // Never throws, whatever the machine has.
    const CudaStatus & s = cuda_status();
    EXPECT_TRUE(s.available || !s.reason.empty());
}

FOVEA_TEST(fold_batch_norm_matches_formula) {
    Tensor w = Tensor::from_vector({2, 1, 1, 1}, {2, 3});
    Tensor b = Tensor::from_vector({2}, {1, -1});
    Tensor scale = Tensor::from_vector({2}, {0.5f, 2});
    Tensor shift = Tensor::from_vector({2}, {0.1f, 0.2f});
    Tensor mean = Tensor::from_vector({2}, {1, 2});
    Tensor var = Tensor::from_vector({2}, {4, 1});
    FoldedConv f = fold_batch_norm(w, b, scale, shift, mean, var, 0.0f);
    EXPECT_NEAR(f.weight.f32()[0], 2 * 0.5 / 2, 1e-6);
    EXPECT_NEAR(f.bias.f32()[0], (1 - 1) * 0.25 + 0.1, 1e-6);
    EXPECT_NEAR(f.weight.f32()[1], 3 * 2.0, 1e-6);
    EXPECT_NEAR(f.bias.f32()[1], (-1 - 2) * 2.0 + 0.2, 1e-6);
    EXPECT_THROWS_CODE(fold_batch_norm(w, b, scale, shift, mean, Tensor::from_vector({3}, {1, 1, 1}), 0.0f),
                       ErrorCode::Input);
}

FOVEA_TEST(shape_checks_reject_bad_conv) {
    Tensor x = Tensor::zeros({1, 3, 8, 8});
    Tensor w = Tensor::zeros({4, 3, 3, 3});
    Conv2dParams p;
    EXPECT_EQ(conv2d_output_shape(x, w, Tensor(), p)[2], int64_t(6));
    p.stride_h = 0;
    EXPECT_THROWS_CODE(conv2d_output_shape(x, w, Tensor(), p), ErrorCode::Options);
    p = Conv2dParams();
    EXPECT_THROWS_CODE(conv2d_output_shape(x, Tensor::zeros({4, 2, 3, 3}), Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(conv2d_output_shape(Tensor::zeros({1, 3, 2, 2}), w, Tensor(), p), ErrorCode::Input);
    EXPECT_THROWS_CODE(conv2d_output_shape(x, w, Tensor::zeros({5}), p), ErrorCode::Input);
}

FOVEA_TEST(cuda_architectures_cover_compute_capabilities) {
    // CMake's default set here: SASS for 8.0 and 9.0, PTX for 9.0.
    const std::vector<std::string> built{"sm_80", "sm_90"};
    EXPECT_TRUE(cuda_architectures_cover(built, 8, 0));
    EXPECT_TRUE(cuda_architectures_cover(built, 8, 6));   // sm_80 SASS on an RTX 30
    EXPECT_TRUE(cuda_architectures_cover(built, 8, 9));   // and an RTX 40
    EXPECT_TRUE(cuda_architectures_cover(built, 9, 0));
    EXPECT_TRUE(cuda_architectures_cover(built, 12, 0));  // compute_90 PTX compiled by the driver
    EXPECT_TRUE(!cuda_architectures_cover(built, 7, 5));  // a T4: nothing runs there
    // The prebuilt CUDA variant: SASS only for 8.0, SASS and PTX for 9.0.
    const std::vector<std::string> variant{"sm_80-real", "sm_90"};
    EXPECT_TRUE(cuda_architectures_cover(variant, 8, 6));
    EXPECT_TRUE(cuda_architectures_cover(variant, 10, 0));
    EXPECT_TRUE(!cuda_architectures_cover({"sm_80-real"}, 9, 0));    // SASS does not cross majors
    EXPECT_TRUE(!cuda_architectures_cover({"sm_90-virtual"}, 8, 9));  // PTX runs on newer only
    EXPECT_TRUE(cuda_architectures_cover({"sm_90-virtual"}, 9, 0));
    EXPECT_TRUE(cuda_architectures_cover({"sm_90a"}, 9, 0));         // arch-specific: 9.0 only
    EXPECT_TRUE(!cuda_architectures_cover({"sm_90a"}, 10, 0));
    EXPECT_TRUE(!cuda_architectures_cover({"sm_86-real"}, 8, 0));    // SASS needs minor >= its own
    EXPECT_TRUE(cuda_architectures_cover({"sm_100"}, 10, 0));
    EXPECT_TRUE(!cuda_architectures_cover({}, 9, 0));
    EXPECT_TRUE(!cuda_architectures_cover({"sm_", "sm_9", "bogus"}, 9, 0));
}
