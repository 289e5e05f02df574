// fovea_bench: the native micro-benchmark of the fp32 CPU convolution.
//   1. Measures this CPU's fp32 peak with an FMA loop (one core, then every
//      thread of the pool at once) on the widest ISA available.
//   2. Times every distinct conv layer shape of ResNet-50 and VGG-16 at
//      224x224 and 800x800 input (batch 1) through cpu::conv2d and reports
//      the median time, GFLOP/s (2 * MACs) and the fraction of that peak.
// Links only fovea_core; see bench/README.md for the options.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FOVEA_BENCH_X86 1
#endif

#include "core/cpu_features.h"
#include "core/device.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "cpu/ops.h"
#include "pipeline/pipeline.h"
#ifdef FOVEA_HAVE_CUDA
#include "cuda/api.h"
#endif

using namespace fovea;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU time of the whole process: against wall time x threads it shows how
// much of the machine the run really had (other load, idle workers).
double process_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// ---- peak -----------------------------------------------------------------
// Each loop runs 16 independent FMA chains: more than latency x throughput
// (4 x 2 on current cores), so the FMA units never wait. Returns a value
// derived from the accumulators so the compiler keeps the work.

#ifdef FOVEA_BENCH_X86
__attribute__((target("avx512f,fma"))) float fma_loop_avx512(int64_t iters) {
    __m512 acc[16];
    for (int j = 0; j < 16; j++) acc[j] = _mm512_set1_ps(float(j));
    const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-6f);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = _mm512_fmadd_ps(acc[j], mul, add);
    }
    __m512 s = acc[0];
    for (int j = 1; j < 16; j++) s = _mm512_add_ps(s, acc[j]);
    float out[16];
    _mm512_storeu_ps(out, s);
    return out[0] + out[15];
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) {
    __m256 acc[12];
    for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_ps(float(j));
    const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-6f);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) acc[j] = _mm256_fmadd_ps(acc[j], mul, add);
    }
    __m256 s = acc[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, acc[j]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}
#endif

float fma_loop_scalar(int64_t iters) {
    float acc[16];
    for (int j = 0; j < 16; j++) acc[j] = float(j);
    for (int64_t i = 0; i < iters; i++) {
        for (int j = 0; j < 16; j++) acc[j] = acc[j] * 0.999999f + 1e-6f;
    }
    float s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

// FLOPs of one iteration of the loop for an ISA.
double flops_per_iter(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::Avx512: return 16 * 16 * 2;
        case CpuIsa::Avx2: return 12 * 8 * 2;
        case CpuIsa::Scalar: return 16 * 2;
    }
    return 0;
}

float fma_loop(CpuIsa isa, int64_t iters) {
#ifdef FOVEA_BENCH_X86
    if (isa == CpuIsa::Avx512) return fma_loop_avx512(iters);
    if (isa == CpuIsa::Avx2) return fma_loop_avx2(iters);
#endif
    return fma_loop_scalar(iters);
}

volatile float g_sink;

// GFLOP/s of `threads` threads running the loop together (best of 5: other
// load on the machine can only lower a run).
double measure_peak(CpuIsa isa, int threads) {
    int64_t iters = 1 << 16;
    // Grow the loop until one pass takes ~0.2 s on one thread.
    for (;;) {
        auto t0 = Clock::now();
        g_sink = fma_loop(isa, iters);
        if (seconds_since(t0) > 0.2 || iters > (int64_t(1) << 40)) break;
        iters *= 2;
    }
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        std::vector<std::thread> pool;
        std::vector<float> sinks(static_cast<size_t>(threads));
        auto t0 = Clock::now();
        for (int t = 0; t < threads; t++) pool.emplace_back([&, t] { sinks[size_t(t)] = fma_loop(isa, iters); });
        for (auto & th : pool) th.join();
        double s = seconds_since(t0);
        for (float v : sinks) g_sink = v;
        best = std::max(best, flops_per_iter(isa) * double(iters) * threads / s * 1e-9);
    }
    return best;
}

// ---- conv layers ----------------------------------------------------------

struct Layer {
    std::string net;     // "resnet50"
    int64_t size;        // network input size (square)
    std::string name;    // where it first occurs
    int64_t n, c, h, w, oc, k, stride, pad;  // n: batch (ROIs of MultiPathNet's tower)
    int count;           // occurrences in the network
    std::string tag() const { return net + "/" + std::to_string(size); }
    std::string label() const { return tag() + " " + name; }
    int64_t oh() const { return (h + 2 * pad - k) / stride + 1; }
    int64_t ow() const { return (w + 2 * pad - k) / stride + 1; }
    double gflop() const {
        return 2.0 * double(n) * double(oc) * double(oh()) * double(ow()) * double(c) * double(k * k) * 1e-9;
    }
    // "256x56^2->256x56^2 3/1", with "100x" in front for a batch.
    std::string shape() const {
        char text[80];
        std::snprintf(text, sizeof text, "%s%lldx%lld^2->%lldx%lld^2 %lld/%lld",
                      n > 1 ? (std::to_string(n) + "x").c_str() : "", (long long)c, (long long)h, (long long)oc,
                      (long long)oh(), (long long)k, (long long)stride);
        return text;
    }
};

class LayerList {
  public:
    LayerList(std::string net, int64_t size) : net_(std::move(net)), size_(size) {}
    void add(const std::string & name, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t k, int64_t stride,
             int64_t pad, int64_t n = 1) {
        auto key = std::make_tuple(n, c, h, w, oc, k, stride, pad);
        auto it = index_.find(key);
        if (it != index_.end()) {
            layers_[it->second].count++;
            return;
        }
        index_[key] = layers_.size();
        layers_.push_back({net_, size_, name, n, c, h, w, oc, k, stride, pad, 1});
    }
    const std::vector<Layer> & layers() const { return layers_; }

  private:
    std::string net_;
    int64_t size_;
    std::vector<Layer> layers_;
    std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>, size_t> index_;
};

// The ResNet stem (conv1 7x7/2 to 64 channels, max pool 3x3/2 pad 1);
// returns the side of the map after the pool.
int64_t add_resnet_stem(LayerList & l, int64_t size) {
    l.add("conv1 7x7/2", 3, size, size, 64, 7, 2, 3);
    const int64_t h = (size + 6 - 7) / 2 + 1;
    return (h + 2 - 3) / 2 + 1;
}

// ResNet-50 as in fb.resnet.torch / torchvision (stride on the 3x3 conv of
// each stage's first bottleneck), BatchNorm folded into the convs.
std::vector<Layer> resnet50(int64_t size) {
    LayerList l("resnet50", size);
    int64_t h = add_resnet_stem(l, size);
    int64_t in = 64;
    const int64_t planes[] = {64, 128, 256, 512}, blocks[] = {3, 4, 6, 3};
    for (int s = 0; s < 4; s++) {
        const std::string stage = "layer" + std::to_string(s + 1);
        for (int64_t b = 0; b < blocks[s]; b++) {
            const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
            const int64_t p = planes[s], h2 = (h + 2 - 3) / stride + 1;
            l.add(stage + " 1x1 reduce", in, h, h, p, 1, 1, 0);
            l.add(stage + (stride == 2 ? " 3x3/2" : " 3x3"), p, h, h, p, 3, stride, 1);
            l.add(stage + " 1x1 expand", p, h2, h2, 4 * p, 1, 1, 0);
            if (b == 0) l.add(stage + (stride == 2 ? " downsample 1x1/2" : " downsample 1x1"), in, h, h, 4 * p, 1,
                              stride, 0);
            in = 4 * p;
            h = h2;
        }
    }
    return l.layers();
}

// MultiPathNet's ResNet-18 integral variant (models/multipathnet.cc): the
// trunk (conv1 .. layer3, BatchNorm folded) on the image, then the tower
// (layer4) on the 14x14 ROI-pooled maps of segment()'s default 100
// proposals, one batch.
std::vector<Layer> multipathnet(int64_t size) {
    LayerList l("multipathnet", size);
    int64_t h = add_resnet_stem(l, size);
    int64_t in = 64;
    const int64_t planes[] = {64, 128, 256};
    for (int s = 0; s < 3; s++) {
        const std::string stage = "layer" + std::to_string(s + 1);
        const int64_t p = planes[s], stride = s > 0 ? 2 : 1, h2 = (h + 2 - 3) / stride + 1;
        l.add(stage + (stride == 2 ? " 3x3/2" : " 3x3"), in, h, h, p, 3, stride, 1);
        if (stride == 2) l.add(stage + " downsample 1x1/2", in, h, h, p, 1, 2, 0);
        for (int i = 0; i < 3; i++) l.add(stage + " 3x3", p, h2, h2, p, 3, 1, 1);
        in = p;
        h = h2;
    }
    constexpr int64_t kRois = 100, kPooled = 14;
    l.add("tower 3x3/2", 256, kPooled, kPooled, 512, 3, 2, 1, kRois);
    l.add("tower downsample 1x1/2", 256, kPooled, kPooled, 512, 1, 2, 0, kRois);
    for (int i = 0; i < 3; i++) l.add("tower 3x3", 512, kPooled / 2, kPooled / 2, 512, 3, 1, 1, kRois);
    return l.layers();
}

std::vector<Layer> vgg16(int64_t size) {
    LayerList l("vgg16", size);
    const int64_t cfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
    int64_t in = 3, h = size, block = 1, idx = 1;
    for (int64_t v : cfg) {
        if (v == 0) {
            h /= 2;
            block++;
            idx = 1;
            continue;
        }
        l.add("conv" + std::to_string(block) + "_" + std::to_string(idx++) + " 3x3", in, h, h, v, 3, 1, 1);
        in = v;
    }
    return l.layers();
}

struct Result {
    Layer layer;
    double ms;
    int repeats;
    double gflops;
    double utilisation;  // process CPU time / (wall time x threads) over the timed runs
    cpu::ConvAlgo algo;  // what ran: --algo, or what Auto picked
};

Tensor filled(const Shape & shape, uint64_t seed) {
    Tensor t = Tensor::empty(shape);
    float * p = t.f32();
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < t.numel(); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = float(int64_t(s >> 41) - (int64_t(1) << 22)) / float(1 << 22);
    }
    return t;
}

Result run_layer(const Layer & l, int repeats_opt, int threads, cpu::ConvAlgo algo) {
    const Tensor x = filled({l.n, l.c, l.h, l.w}, 1);
    const Tensor w = filled({l.oc, l.c, l.k, l.k}, 2);
    const Tensor b = filled({l.oc}, 3);
    // As a model's weights are: packed layouts are kept with them.
    w.mark_constant();
    Conv2dParams p;
    p.stride_h = p.stride_w = int(l.stride);
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = int(l.pad);
    p.activation = Activation::Relu;
    if (algo == cpu::ConvAlgo::Winograd && !cpu::conv2d_winograd_applies(w.shape(), p)) algo = cpu::ConvAlgo::Auto;
    if (algo == cpu::ConvAlgo::Auto) algo = cpu::conv2d_auto_algo(x, w, p);
    // Warm-up for at least 0.2 s: pages in the buffers, fills the allocator
    // cache, and gives the scheduler time to spread the pool's threads over
    // the cores (right after other threads ran, two may share one core).
    Tensor y;
    double first = 0;
    const auto warm0 = Clock::now();
    for (int i = 0; i == 0 || seconds_since(warm0) < 0.2; i++) {
        const auto t0 = Clock::now();
        y = cpu::conv2d(x, w, b, p, algo);
        first = seconds_since(t0);
    }
    // Default: as many repeats as fit ~1 s per layer, between 3 and 200; the
    // median over a whole second shrugs off short bursts of other load.
    int repeats = repeats_opt > 0 ? repeats_opt : int(std::clamp(1.0 / std::max(first, 1e-6), 3.0, 200.0));
    std::vector<double> times;
    const double cpu0 = process_cpu_seconds();
    const auto wall0 = Clock::now();
    for (int r = 0; r < repeats; r++) {
        const auto t0 = Clock::now();
        y = cpu::conv2d(x, w, b, p, algo);
        times.push_back(seconds_since(t0));
    }
    const double util = (process_cpu_seconds() - cpu0) / (seconds_since(wall0) * threads);
    std::sort(times.begin(), times.end());
    const double med = times.size() % 2 ? times[times.size() / 2]
                                        : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]);
    return {l, med * 1e3, repeats, l.gflop() / med, util, algo};
}

std::string cpu_model_name() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) {
            size_t colon = line.find(':');
            if (colon != std::string::npos) return line.substr(colon + 2);
        }
    }
    return "unknown";
}

std::string json_escape(const std::string & s) {
    std::string o;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') o += '\\';
        o += ch;
    }
    return o;
}

// "a,b,c" -> {"a", "b", "c"}
std::vector<std::string> split_list(const std::string & s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        const size_t comma = s.find(',', start);
        const size_t end = comma == std::string::npos ? s.size() : comma;
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

// The layer list as the peer benchmark (bench/conv-peer.mjs) reads it.
void print_layer_json(const std::vector<Layer> & layers) {
    std::printf("[\n");
    for (size_t i = 0; i < layers.size(); i++) {
        const Layer & l = layers[i];
        std::printf("  {\"net\": \"%s\", \"size\": %lld, \"name\": \"%s\", \"n\": %lld, \"c\": %lld, \"h\": %lld, "
                    "\"w\": %lld, \"oc\": %lld, \"kh\": %lld, \"kw\": %lld, \"stride\": %lld, \"pad\": %lld, "
                    "\"dilation\": 1, \"groups\": 1, \"oh\": %lld, \"ow\": %lld, \"count\": %d, \"gflop\": %.6f}%s\n",
                    l.net.c_str(), (long long)l.size, json_escape(l.name).c_str(), (long long)l.n, (long long)l.c,
                    (long long)l.h, (long long)l.w, (long long)l.oc, (long long)l.k, (long long)l.k, (long long)l.stride,
                    (long long)l.pad, (long long)l.oh(), (long long)l.ow(), l.count, l.gflop(),
                    i + 1 < layers.size() ? "," : "");
    }
    std::printf("]\n");
}

// Median ms of `timed(n)` (n runs, ms each) after 3 warm-up runs, over
// `repeats_opt` runs when given, else as many as fit `budget_ms` at the
// warm-up's slowest, within [min_repeats, 200]; the runs taken go to *repeats.
double median_ms(const std::function<std::vector<float>(int)> & timed, int repeats_opt, double budget_ms,
                 double min_repeats, int * repeats) {
    const std::vector<float> warm = timed(3);
    const float first = *std::max_element(warm.begin(), warm.end());
    *repeats = repeats_opt > 0 ? repeats_opt : int(std::clamp(budget_ms / std::max(first, 1e-3f), min_repeats, 200.0));
    std::vector<float> ms = timed(*repeats);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

#ifdef FOVEA_HAVE_CUDA
// --device cuda: each layer through the CUDA backend (conv2d + bias + ReLU,
// as on the CPU), timed with CUDA events on the backend's stream after a
// warm-up; median ms and TFLOP/s per layer, in the precision in force
// (FOVEA_CUDA_PRECISION, default tf32 on sm_80+).
int run_cuda(const std::vector<Layer> & layers, int repeats_opt, const std::string & precision_arg) {
    const CudaStatus & status = cuda_status();
    if (!status.available) {
        std::fprintf(stderr, "fovea_bench: CUDA is not available: %s\n", status.reason.c_str());
        return 1;
    }
    try {
        Backend & be = cuda_backend(0);
        if (precision_arg == "fp32") cuda::set_precision(0, cuda::Precision::FP32);
        else if (precision_arg == "tf32") cuda::set_precision(0, cuda::Precision::TF32);
        else if (!precision_arg.empty()) {
            std::fprintf(stderr, "fovea_bench: --precision must be fp32 or tf32\n");
            return 2;
        }
        const CudaDeviceInfo & dev = status.devices[0];
        const cuda::DevicePeak peak = cuda::device_peak(0);
        const bool tf32 = cuda::precision(0) == cuda::Precision::TF32;
        const double peak_tflops = (tf32 ? peak.tf32_flops : peak.fp32_flops) / 1e12;
        std::printf("gpu: %s (sm_%d%d, %d SMs, %.0f MHz), precision %s, peak %.1f TFLOP/s%s\n", dev.name.c_str(),
                    dev.compute_major, dev.compute_minor, dev.multiprocessors, peak.sm_clock_mhz,
                    cuda::precision_name(cuda::precision(0)), peak_tflops, peak_tflops > 0 ? "" : " (rate unknown)");
        std::printf("\n%-16s %-24s %-26s %2s %7s %8s %4s %8s %6s\n", "net", "layer", "in -> out k/s", "#", "GFLOP",
                    "ms(med)", "rep", "TFLOP/s", "%peak");
        std::map<std::string, double> net_ms, net_gflop;
        for (const Layer & l : layers) {
            const Tensor x = to_device(filled({l.n, l.c, l.h, l.w}, 1), Device{DeviceType::CUDA, 0});
            const Tensor w = to_device(filled({l.oc, l.c, l.k, l.k}, 2), Device{DeviceType::CUDA, 0});
            const Tensor b = to_device(filled({l.oc}, 3), Device{DeviceType::CUDA, 0});
            Conv2dParams p;
            p.stride_h = p.stride_w = int(l.stride);
            p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = int(l.pad);
            p.activation = Activation::Relu;
            auto once = [&] { be.conv2d(x, w, b, p); };
            int repeats = 0;
            const double med = median_ms([&](int n) { return cuda::time_on_stream(0, n, once); }, repeats_opt, 500.0,
                                         10.0, &repeats);
            std::printf("%-16s %-24s %-26s %2d %7.3f %8.4f %4d %8.2f %6.1f\n", l.tag().c_str(), l.name.c_str(),
                        l.shape().c_str(), l.count, l.gflop(), med, repeats, l.gflop() / med,
                        peak_tflops > 0 ? 100.0 * l.gflop() / med / peak_tflops : 0.0);
            std::fflush(stdout);
            net_ms[l.tag()] += med * l.count;
            net_gflop[l.tag()] += l.gflop() * l.count;
        }
        std::printf("\nall conv layers of each network (each shape's median x its count):\n");
        for (auto & [net, ms] : net_ms) {
            const double tflops = net_gflop[net] / ms;
            std::printf("  %-14s %9.2f ms  %8.2f TFLOP/s  %5.1f%% of peak\n", net.c_str(), ms, tflops,
                        peak_tflops > 0 ? 100.0 * tflops / peak_tflops : 0.0);
        }
    } catch (const Error & e) {
        std::fprintf(stderr, "fovea_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
#endif

// --ops: every op family besides convolution, on the sizes of a 640x480
// run (a trunk's early 64-channel maps, the pyramid's image, 100 ROIs on
// 256-channel features, 1000 boxes), on --device cpu or cuda: median ms
// (CUDA events on the device, wall clock on the CPU) and GB/s counting the
// bytes each op must read and write once, with the DRAM peak's share on CUDA.
int run_ops(const std::string & device_arg, int repeats_opt) {
    if (device_arg != "cpu" && device_arg != "cuda") {
        std::fprintf(stderr, "fovea_bench: --ops takes --device cpu or cuda\n");
        return 2;
    }
    const bool on_cuda = device_arg == "cuda";
    try {
        Backend & be = on_cuda ? cuda_backend(0) : cpu_backend();
        const Device dev = be.device();
        double dram_peak = 0;
#ifdef FOVEA_HAVE_CUDA
        if (on_cuda) dram_peak = cuda::device_peak(0).dram_bytes_per_s;
#endif
        auto tensor = [&](const Shape & s, uint64_t seed) { return to_device(filled(s, seed), dev); };
        const Tensor x = tensor({1, 64, 240, 320}, 1), y = tensor({1, 64, 240, 320}, 2);
        const Tensor image = tensor({1, 3, 960, 1280}, 3), rows = tensor({4096, 1000}, 4);
        const Tensor feats = tensor({1, 256, 60, 80}, 5), channel = tensor({64}, 6);
        const Tensor variance = to_device(Tensor::full({64}, 1.5f), dev);
        std::vector<float> roi5, roi4, boxes, scores;
        std::vector<int64_t> batch(100, 0);
        uint64_t s = 7;
        auto uniform = [&](float hi) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            return float(s >> 40) / float(1 << 24) * hi;
        };
        for (int i = 0; i < 100; i++) {
            const float x1 = uniform(500), y1 = uniform(350), x2 = x1 + 20 + uniform(120), y2 = y1 + 20 + uniform(120);
            roi5.insert(roi5.end(), {0.0f, x1, y1, x2, y2});
            roi4.insert(roi4.end(), {x1, y1, x2, y2});
        }
        for (int i = 0; i < 1000; i++) {
            const float x1 = uniform(600), y1 = uniform(440);
            boxes.insert(boxes.end(), {x1, y1, x1 + 10 + uniform(100), y1 + 10 + uniform(100)});
            scores.push_back(uniform(1));
        }
        const Tensor rois5 = to_device(Tensor::from_vector({100, 5}, roi5), dev);
        const Tensor rois4 = to_device(Tensor::from_vector({100, 4}, roi4), dev);
        Tensor batch_host = Tensor::empty({100}, DType::I64);
        std::copy(batch.begin(), batch.end(), batch_host.data<int64_t>());
        const Tensor batch_idx = to_device(batch_host, dev);
        const Tensor box_t = to_device(Tensor::from_vector({1000, 4}, boxes), dev);
        const Tensor score_t = to_device(Tensor::from_vector({1000}, scores), dev);

        const double f = 4.0;  // bytes per float
        const double n = double(x.numel());
        Pool2dParams max3;
        max3.kernel_h = max3.kernel_w = 3;
        max3.stride_h = max3.stride_w = 2;
        max3.pad_top = max3.pad_left = max3.pad_bottom = max3.pad_right = 1;
        Pool2dParams avg2;
        avg2.kernel_h = avg2.kernel_w = avg2.stride_h = avg2.stride_w = 2;
        ResizeParams up;
        up.out_h = 480;
        up.out_w = 640;
        Pad2dParams pad1;
        pad1.top = pad1.left = pad1.bottom = pad1.right = 1;
        Pad2dParams sym3 = pad1;
        sym3.top = sym3.left = sym3.bottom = sym3.right = 3;
        sym3.mode = PadMode::Symmetric;
        RoiPoolParams rp;
        rp.spatial_scale = 1.0f / 8;
        rp.round_bins = true;
        RoiAlignParams ra;
        ra.out_h = ra.out_w = 7;
        ra.spatial_scale = 1.0f / 8;
        ra.sampling_ratio = 2;
        NmsParams np;
        struct OpCase {
            std::string name, shape;
            double bytes;  // 0: not a bandwidth-bound op
            std::function<void()> run;
        };
        const std::vector<OpCase> cases{
            {"relu", "64x240x320", 2 * n * f, [&] { be.relu(x); }},
            {"sigmoid", "64x240x320", 2 * n * f, [&] { be.sigmoid(x); }},
            {"add+relu", "64x240x320", 3 * n * f, [&] { be.add(x, y, Activation::Relu); }},
            {"softmax rows", "4096x1000", 2.0 * double(rows.numel()) * f, [&] { be.softmax(rows, 1); }},
            {"pad2d constant 1", "64x240x320", (n + 64.0 * 242 * 322) * f, [&] { be.pad2d(x, pad1); }},
            {"pad2d symmetric 3", "64x240x320", (n + 64.0 * 246 * 326) * f, [&] { be.pad2d(x, sym3); }},
            {"max_pool2d 3x3/2", "64x240x320", (n + n / 4) * f, [&] { be.max_pool2d(x, max3); }},
            {"avg_pool2d 2x2/2", "64x240x320", (n + n / 4) * f, [&] { be.avg_pool2d(x, avg2); }},
            {"resize_bilinear x2", "64x240x320", 5 * n * f, [&] { be.resize_bilinear(x, up); }},
            {"image_scale 1/2", "3x960x1280", 1.25 * double(image.numel()) * f, [&] { be.image_scale(image, 480, 640); }},
            {"upsample_nearest x2", "64x240x320", 5 * n * f, [&] { be.upsample_nearest(x, 2); }},
            {"concat channels", "2 x 64x240x320", 4 * n * f, [&] { be.concat({x, y}, 1); }},
            {"batch_norm", "64x240x320", 2 * n * f, [&] { be.batch_norm(x, channel, channel, channel, variance, 1e-5f); }},
            {"roi_max_pool 7x7", "100 on 256x60x80", 100.0 * 256 * 49 * f, [&] { be.roi_max_pool(feats, rois5, rp); }},
            {"roi_align 7x7", "100 on 256x60x80", 100.0 * 256 * 49 * f, [&] { be.roi_align(feats, rois4, batch_idx, ra); }},
            {"nms", "1000 boxes", 0, [&] { be.nms(box_t, score_t, np); }},
        };
        std::printf("ops on %s%s\n\n%-22s %-18s %9s %9s %5s %8s %6s\n", be.name(),
                    dram_peak > 0 ? (", DRAM peak " + std::to_string(int(dram_peak / 1e9)) + " GB/s").c_str() : "",
                    "op", "shape", "MB moved", "ms(med)", "rep", "GB/s", "%peak");
        for (const OpCase & c : cases) {
            auto timed = [&](int n) {
#ifdef FOVEA_HAVE_CUDA
                if (on_cuda) return cuda::time_on_stream(0, n, c.run);
#endif
                std::vector<float> out;
                for (int r = 0; r < n; r++) {
                    const auto t0 = Clock::now();
                    c.run();
                    out.push_back(float(seconds_since(t0) * 1e3));
                }
                return out;
            };
            int repeats = 0;
            const double med = median_ms(timed, repeats_opt, 300.0, 5.0, &repeats);
            const double gbs = c.bytes > 0 ? c.bytes / (med * 1e-3) / 1e9 : 0;
            char rate[16] = "-", share[16] = "-";
            if (gbs > 0) std::snprintf(rate, sizeof rate, "%.1f", gbs);
            if (gbs > 0 && dram_peak > 0) std::snprintf(share, sizeof share, "%.1f", 100.0 * gbs * 1e9 / dram_peak);
            std::printf("%-22s %-18s %9.1f %9.4f %5d %8s %6s\n", c.name.c_str(), c.shape.c_str(), c.bytes / 1e6, med,
                        repeats, rate, share);
            std::fflush(stdout);
        }
    } catch (const Error & e) {
        std::fprintf(stderr, "fovea_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}

// --pipeline MODEL: Pipeline::run end to end (proposals, or instances with
// --classifier) on a synthetic W x H photo-like image, on each device of
// --device (e.g. cuda,cpu), after two warm-up runs: median wall ms per image
// (a run returns host results, so the device has finished) and the median
// of each stage's time.
int run_pipeline(const std::string & model, const std::string & classifier, const std::string & devices,
                 const std::string & size, int repeats_opt, const std::string & precision_arg) {
    long long ww = 640, hh = 480;
    char trailing = 0;
    if (!size.empty() && std::sscanf(size.c_str(), "%lldx%lld%c", &ww, &hh, &trailing) != 2) {
        std::fprintf(stderr, "fovea_bench: --image must be WxH, got %s\n", size.c_str());
        return 2;
    }
    const int64_t w = ww, h = hh;
    if (w < 1 || h < 1 || w > 16384 || h > 16384) {
        std::fprintf(stderr, "fovea_bench: --image must be 1x1 to 16384x16384\n");
        return 2;
    }
    // Smooth colour gradients with a few bright discs: something for the
    // proposal model to score, and the same bytes on every machine.
    std::vector<uint8_t> pixels(size_t(w * h * 3));
    for (int64_t y = 0; y < h; y++) {
        for (int64_t x = 0; x < w; x++) {
            uint8_t * p = &pixels[size_t((y * w + x) * 3)];
            p[0] = uint8_t(40 + (150 * x) / w);
            p[1] = uint8_t(60 + (120 * y) / h);
            p[2] = uint8_t(90 + ((x + y) * 7) % 50);
            for (int k = 0; k < 4; k++) {
                const int64_t cx = w * (k + 1) / 5, cy = h * (k % 2 ? 1 : 2) / 3, r = std::max<int64_t>(2, w / 10);
                if ((x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r) p[k % 3] = uint8_t(230 - 30 * k);
            }
        }
    }
    pipeline::Options opt;
    opt.mode = classifier.empty() ? pipeline::Mode::Proposals : pipeline::Mode::Instances;
    std::printf("pipeline: %s%s%s, %s, image %lldx%lld\n", model.c_str(), classifier.empty() ? "" : " + ",
                classifier.c_str(), classifier.empty() ? "proposals" : "instances", (long long)w, (long long)h);
    int status = 0;
    for (const std::string & d : split_list(devices)) {
        try {
            const Device dev = parse_device(d);
            Backend & be = dev.type == DeviceType::CPU ? cpu_backend() : cuda_backend(dev.index);
            std::string precision = "fp32";
#ifdef FOVEA_HAVE_CUDA
            if (dev.type == DeviceType::CUDA) {
                if (precision_arg == "fp32") cuda::set_precision(dev.index, cuda::Precision::FP32);
                else if (precision_arg == "tf32") cuda::set_precision(dev.index, cuda::Precision::TF32);
                precision = cuda::precision_name(cuda::precision(dev.index));
            }
#else
            (void)precision_arg;
#endif
            const auto p = pipeline::Pipeline::load(model, classifier, be);
            const pipeline::ImageView img{pixels.data(), w, h};
            for (int i = 0; i < 2; i++) p->run(img, opt);
            const int repeats = repeats_opt > 0 ? repeats_opt : 5;
            std::vector<double> total;
            std::map<std::string, std::vector<double>> stages;
            size_t instances = 0;
            for (int i = 0; i < repeats; i++) {
                const auto t0 = std::chrono::steady_clock::now();
                const pipeline::Result r = p->run(img, opt);
                total.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
                for (const pipeline::Timing & t : r.timings) stages[t.stage].push_back(t.ms);
                instances = r.instances.size();
            }
            auto median = [](std::vector<double> v) {
                std::sort(v.begin(), v.end());
                return v[v.size() / 2];
            };
            std::printf("  %-8s %-5s %9.2f ms/image (median of %d), %zu instances;", p->device_name().c_str(),
                        precision.c_str(), median(total), repeats, instances);
            for (auto & [stage, ms] : stages) std::printf(" %s %.2f", stage.c_str(), median(ms));
            std::printf("\n");
            std::fflush(stdout);
        } catch (const Error & e) {
            std::fprintf(stderr, "fovea_bench: pipeline on %s: %s\n", d.c_str(), e.what());
            status = 1;
        }
    }
    return status;
}

void usage() {
    std::printf(
        "usage: fovea_bench [options]\n"
        "  --net LIST     networks, comma separated: resnet50, vgg16, multipathnet (its ResNet-18 trunk, and its\n"
        "                 tower on 100 ROIs in one batch) (default resnet50,vgg16)\n"
        "  --size LIST    input sizes, comma separated (default 224,800)\n"
        "  --filter S     only layers whose \"net/size layer\" label contains S (e.g. resnet50/224, 3x3)\n"
        "  --repeats N    timed runs per layer after >= 0.2 s of warm-up (default: ~1 s per layer, 3..200)\n"
        "  --threads N    worker threads, including the caller (sets FOVEA_NUM_THREADS; default: all)\n"
        "  --isa I        scalar | avx2 | avx512 (default: the best this CPU has)\n"
        "  --algo A       auto | shifted | im2col | im2col-merged | channels-last | winograd: how conv2d maps onto the\n"
        "                 GEMM (default auto; winograd only where it applies, auto elsewhere)\n"
        "  --json FILE    also write the results as JSON\n"
        "  --no-peak      skip the FMA peak measurement (fractions of peak are then omitted)\n"
        "  --list-json    print the selected layers as JSON (for bench/conv-peer.mjs) and exit\n"
        "  --device D     cpu (default) | cuda: time the layers on CUDA device 0 instead (CUDA builds)\n"
        "  --precision P  with --device cuda: fp32 | tf32 (default: FOVEA_CUDA_PRECISION, else tf32 on sm_80+)\n"
        "  --pipeline M   time Pipeline::run of proposal model file M end to end instead, on each device of\n"
        "                 --device (a list: cuda,cpu); --classifier F adds MultiPathNet (instances mode);\n"
        "                 --image WxH (default 640x480); --repeats N (default 5)\n"
        "  --ops          time every op family besides convolution on --device cpu | cuda: ms, GB/s and, on CUDA,\n"
        "                 the share of the DRAM peak\n");
}

}  // namespace

int main(int argc, char ** argv) {
    std::string filter, json_path, nets = "resnet50,vgg16", sizes = "224,800";
    int repeats = 0, threads = 0;
    bool peak = true, list_json = false, ops = false;
    std::string isa_arg, algo_arg = "auto", command = argv[0];
    std::string device_arg = "cpu", precision_arg, pipeline_model, classifier_arg, image_arg;
    for (int i = 1; i < argc; i++) command += std::string(" ") + argv[i];
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&](const char * opt) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "fovea_bench: %s needs a value\n", opt);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--filter") filter = value("--filter");
        else if (a == "--repeats") repeats = std::atoi(value("--repeats").c_str());
        else if (a == "--threads") threads = std::atoi(value("--threads").c_str());
        else if (a == "--json") json_path = value("--json");
        else if (a == "--isa") isa_arg = value("--isa");
        else if (a == "--algo") algo_arg = value("--algo");
        else if (a == "--no-peak") peak = false;
        else if (a == "--list-json") list_json = true;
        else if (a == "--net") nets = value("--net");
        else if (a == "--size") sizes = value("--size");
        else if (a == "--device") device_arg = value("--device");
        else if (a == "--precision") precision_arg = value("--precision");
        else if (a == "--pipeline") pipeline_model = value("--pipeline");
        else if (a == "--classifier") classifier_arg = value("--classifier");
        else if (a == "--image") image_arg = value("--image");
        else if (a == "--ops") ops = true;
        else if (a == "--help" || a == "-h") {
            usage();
            return 0;
        } else {
            std::fprintf(stderr, "fovea_bench: unknown option %s\n", a.c_str());
            usage();
            return 2;
        }
    }
    if (repeats < 0 || threads < 0) {
        std::fprintf(stderr, "fovea_bench: --repeats and --threads must be positive\n");
        return 2;
    }
    if (ops) return run_ops(device_arg, repeats);
    if (!pipeline_model.empty()) {
        return run_pipeline(pipeline_model, classifier_arg, device_arg, image_arg, repeats, precision_arg);
    }
    std::vector<Layer> layers;
    for (const std::string & size_text : split_list(sizes)) {
        const int64_t size = std::atoll(size_text.c_str());
        if (size < 32 || size > 4096) {
            std::fprintf(stderr, "fovea_bench: --size must list sizes in [32, 4096], got %s\n", size_text.c_str());
            return 2;
        }
        for (const std::string & net : split_list(nets)) {
            std::vector<Layer> net_layers;
            if (net == "resnet50") net_layers = resnet50(size);
            else if (net == "vgg16") net_layers = vgg16(size);
            else if (net == "multipathnet") net_layers = multipathnet(size);
            else {
                std::fprintf(stderr, "fovea_bench: unknown network %s (resnet50, vgg16, multipathnet)\n", net.c_str());
                return 2;
            }
            for (const Layer & l : net_layers) {
                if (filter.empty() || l.label().find(filter) != std::string::npos) layers.push_back(l);
            }
        }
    }
    if (list_json) {
        print_layer_json(layers);
        return 0;
    }
    if (device_arg == "cuda") {
#ifdef FOVEA_HAVE_CUDA
        return run_cuda(layers, repeats, precision_arg);
#else
        std::fprintf(stderr, "fovea_bench: this build has no CUDA backend (%s)\n", cuda_status().reason.c_str());
        return 1;
#endif
    }
    if (device_arg != "cpu") {
        std::fprintf(stderr, "fovea_bench: --device must be cpu or cuda\n");
        return 2;
    }
    // The pool reads FOVEA_NUM_THREADS when first used, which is below.
    if (threads > 0) setenv("FOVEA_NUM_THREADS", std::to_string(threads).c_str(), 1);
    if (!isa_arg.empty()) {
        CpuIsa want;
        if (isa_arg == "scalar") want = CpuIsa::Scalar;
        else if (isa_arg == "avx2") want = CpuIsa::Avx2;
        else if (isa_arg == "avx512") want = CpuIsa::Avx512;
        else {
            std::fprintf(stderr, "fovea_bench: --isa must be scalar, avx2 or avx512\n");
            return 2;
        }
        set_cpu_isa(want);
        if (cpu_isa() != want) std::fprintf(stderr, "fovea_bench: %s not supported here, using %s\n",
                                            isa_arg.c_str(), cpu_isa_name(cpu_isa()));
    }
    cpu::ConvAlgo algo = cpu::ConvAlgo::Auto;
    bool algo_known = false;
    for (cpu::ConvAlgo a : {cpu::ConvAlgo::Auto, cpu::ConvAlgo::Shifted, cpu::ConvAlgo::Im2col,
                            cpu::ConvAlgo::Im2colMerged, cpu::ConvAlgo::ChannelsLast, cpu::ConvAlgo::Winograd}) {
        if (algo_arg == cpu::conv_algo_name(a)) {
            algo = a;
            algo_known = true;
        }
    }
    if (!algo_known) {
        std::fprintf(stderr,
                     "fovea_bench: --algo must be auto, shifted, im2col, im2col-merged, channels-last or winograd\n");
        return 2;
    }
    const int pool_threads = default_thread_pool().size();
    const CpuIsa isa = cpu_isa();
    // Peak on the widest ISA the CPU has, whatever --isa asks the convs to use.
    const CpuIsa saved = cpu_isa();
    set_cpu_isa(CpuIsa::Avx512);
    const CpuIsa widest = cpu_isa();
    set_cpu_isa(saved);

    const std::string model = cpu_model_name();
    std::printf("cpu: %s (%u hardware threads; %s)\n", model.c_str(), std::thread::hardware_concurrency(),
                cpu_features_string().c_str());
    std::printf("conv isa: %s, algo: %s, threads: %d\n", cpu_isa_name(isa), algo_arg.c_str(), pool_threads);

    double peak1 = 0, peak_all = 0;
    if (peak) {
        peak1 = measure_peak(widest, 1);
        peak_all = peak1;
        // Cores shared with other work measure low: retry a few times while
        // all threads together do not reach 90% of threads x one thread.
        for (int attempt = 0; pool_threads > 1 && attempt < 5; attempt++) {
            peak_all = std::max(peak_all, measure_peak(widest, pool_threads));
            if (peak_all >= 0.9 * peak1 * pool_threads) break;
        }
        std::printf("fp32 FMA peak (%s): %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d threads\n",
                    cpu_isa_name(widest), peak1, peak_all, pool_threads);
        if (peak_all < 0.9 * peak1 * pool_threads) {
            std::printf("warning: %d threads reach only %.0f%% of %d x one thread: other work is using the cores, "
                        "timings below are not reliable\n",
                        pool_threads, 100.0 * peak_all / (peak1 * pool_threads), pool_threads);
        }
    }

    std::printf("\n%-16s %-24s %-26s %2s %7s %8s %3s %7s %6s %5s  %s\n", "net", "layer", "in -> out k/s", "#",
                "GFLOP", "ms(med)", "rep", "GFLOP/s", "%peak", "util", "algo");
    std::vector<Result> results;
    std::map<std::string, double> net_ms, net_gflop;
    for (const Layer & l : layers) {
        const std::string label = l.label();
        Result r;
        try {
            r = run_layer(l, repeats, pool_threads, algo);
        } catch (const Error & e) {
            std::fprintf(stderr, "fovea_bench: %s: %s\n", label.c_str(), e.what());
            return 1;
        }
        char frac[16] = "-";
        if (peak_all > 0) std::snprintf(frac, sizeof frac, "%.1f", 100.0 * r.gflops / peak_all);
        std::printf("%-16s %-24s %-26s %2d %7.3f %8.3f %3d %7.1f %6s %4.0f%%  %s\n", l.tag().c_str(), l.name.c_str(),
                    l.shape().c_str(), l.count, l.gflop(), r.ms, r.repeats, r.gflops, frac, 100.0 * r.utilisation,
                    cpu::conv_algo_name(r.algo));
        std::fflush(stdout);
        net_ms[l.tag()] += r.ms * l.count;
        net_gflop[l.tag()] += l.gflop() * l.count;
        results.push_back(r);
    }
    std::printf("\nall conv layers of each network (each shape's median x its count):\n");
    for (auto & [net, ms] : net_ms) {
        std::printf("  %-14s %9.1f ms  %8.1f GFLOP/s\n", net.c_str(), ms, net_gflop[net] / ms * 1e3);
    }
    // Measured again so a reader can see whether the machine stayed as quiet
    // as when the fractions above were computed.
    double peak_after = 0;
    if (peak && !results.empty()) {
        peak_after = measure_peak(widest, pool_threads);
        std::printf("fp32 FMA peak on %d threads re-measured after the run: %.1f GFLOP/s\n", pool_threads,
                    peak_after);
        if (peak_after > 1.05 * peak_all) {
            std::printf("note: higher than before the run; --json fractions use %.1f GFLOP/s\n", peak_after);
        }
    }
    const double peak_best = std::max(peak_all, peak_after);

    if (!json_path.empty()) {
        std::ofstream f(json_path);
        if (!f) {
            std::fprintf(stderr, "fovea_bench: cannot write %s\n", json_path.c_str());
            return 1;
        }
        f << "{\n  \"cpu\": \"" << json_escape(model) << "\",\n  \"features\": \"" << cpu_features_string()
          << "\",\n  \"isa\": \"" << cpu_isa_name(isa) << "\",\n  \"threads\": " << pool_threads
          << ",\n  \"peak_isa\": \"" << cpu_isa_name(widest) << "\",\n  \"peak_gflops_1_thread\": " << peak1
          << ",\n  \"peak_gflops_all_threads\": " << peak_all
          << ",\n  \"peak_gflops_all_threads_after\": " << peak_after << ",\n  \"command\": \""
          << json_escape(command) << "\",\n  \"layers\": [\n";
        for (size_t i = 0; i < results.size(); i++) {
            const Result & r = results[i];
            const Layer & l = r.layer;
            f << "    {\"net\": \"" << l.net << "\", \"size\": " << l.size << ", \"layer\": \"" << json_escape(l.name)
              << "\", \"n\": " << l.n << ", \"c\": " << l.c << ", \"h\": " << l.h << ", \"w\": " << l.w
              << ", \"oc\": " << l.oc << ", \"oh\": " << l.oh()
              << ", \"ow\": " << l.ow() << ", \"k\": " << l.k << ", \"stride\": " << l.stride << ", \"pad\": " << l.pad
              << ", \"count\": " << l.count << ", \"gflop\": " << l.gflop() << ", \"ms\": " << r.ms
              << ", \"repeats\": " << r.repeats << ", \"gflops\": " << r.gflops
              << ", \"fraction_of_peak\": " << (peak_best > 0 ? r.gflops / peak_best : 0.0)
              << ", \"cpu_utilisation\": " << r.utilisation << ", \"algo\": \"" << cpu::conv_algo_name(r.algo)
              << "\"}"
              << (i + 1 < results.size() ? ",\n" : "\n");
        }
        f << "  ]\n}\n";
    }
    return 0;
}
