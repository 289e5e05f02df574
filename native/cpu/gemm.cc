// fp32 GEMM and linear on the packed micro-kernel (see gemm_kernels.h), plus
// the blocked, threaded driver that conv2d shares.
#include <algorithm>
#include <atomic>
#include <cmath>

#include "core/error.h"
#include "core/op_shapes.h"
#include "core/thread_pool.h"
#include "cpu/gemm_kernels.h"
#include "cpu/ops.h"

namespace fovea::cpu {

namespace packed {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// What run() has no kernel for: K == 0 leaves only the epilogue of a zero sum.
void epilogue_only(const Problem & pr) {
    const Epilogue & ep = pr.ep;
    for (int64_t b = 0; b < pr.batches; b++) {
        for (int64_t g = 0; g < pr.groups; g++) {
            float * c = pr.c + b * pr.c_bs + g * pr.c_gs;
            const float * add = ep.add ? ep.add + g * pr.add_gs : nullptr;
            for (int64_t i = 0; i < pr.m; i++) {
                for (int64_t j = 0; j < pr.n; j++) {
                    float v = add ? ep.beta * add[i * ep.add_rs + j * ep.add_cs] : 0.0f;
                    if (ep.residual) {
                        const float r = ep.residual[(c - pr.c) + i * pr.ldc + j];
                        v += ep.residual_scale ? ep.residual_scale[g * pr.add_gs + i] * r : r;
                    }
                    if (ep.act == Activation::Relu) v = v > 0.0f ? v : 0.0f;
                    if (ep.act == Activation::Sigmoid) v = 1.0f / (1.0f + std::exp(-v));
                    c[i * pr.ldc + j] = v;
                }
            }
        }
    }
}

// K blocks split K evenly and depend on K and the kernel only, which fixes
// the summation order of every output element.
struct KBlocking {
    int64_t blocks, kc_max;
};

KBlocking k_blocking(const Kernel & kn, int64_t k) {
    const int64_t blocks = ceil_div(k, kn.kc);
    return {blocks, ceil_div(k, blocks)};
}

}  // namespace

int64_t prepacked_b_floats(const Kernel & kn, int64_t k, int64_t n) { return k * round_up(n, kn.nr); }

void prepack_b(const Kernel & kn, const float * b, int64_t rs, int64_t cs, int64_t k, int64_t n, float * dst) {
    const KBlocking kb = k_blocking(kn, k);
    const int64_t n_pad = round_up(n, kn.nr);
    parallel_for(kb.blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) {
            const int64_t k0 = i * kb.kc_max;
            kn.pack_strided(b, rs, cs, k0, std::min(kb.kc_max, k - k0), 0, n, dst + k0 * n_pad);
        }
    });
}

const Kernel & kernel_for(CpuIsa isa) {
    if (isa >= CpuIsa::Avx512) {
        if (const Kernel * k = kernel_avx512()) return *k;
    }
    if (isa >= CpuIsa::Avx2) {
        if (const Kernel * k = kernel_avx2()) return *k;
    }
    return kernel_scalar();
}

void run(const Problem & pr) {
    const int64_t problems = pr.batches * pr.groups;
    if (pr.m <= 0 || pr.n <= 0 || problems <= 0) return;
    if (pr.k <= 0) {
        epilogue_only(pr);
        return;
    }
    FOVEA_CHECK(!pr.a_offsets || !pr.b_offsets, ErrorCode::Internal, "gemm: A through offsets needs a packed B");
    const Kernel & kn = kernel_for(cpu_isa());
    const int mr = kn.mr, nr = kn.nr;
    const int threads = default_thread_pool().size();
    const KBlocking kbl = k_blocking(kn, pr.k);
    const int64_t k_blocks = kbl.blocks, kc_max = kbl.kc_max;

    // Tasks are (problem, column block, row slice). Column blocks are at most
    // kn.nc wide; a task packs each of its B blocks once and runs all its rows
    // over it. With too few column blocks to keep every thread busy (small
    // images), rows are split first: the slices of a column block share its
    // B, packed once up front, and each weight is still read once. Columns
    // are split further only when there are too few rows.
    const int64_t want = threads > 1 ? int64_t(threads) * 4 : 1;
    const int64_t m_panels = ceil_div(pr.m, mr);
    int64_t n_blocks = ceil_div(pr.n, kn.nc);
    int64_t m_splits = 1;
    // B in place or packed beforehand (no packing to share): give every
    // thread its own columns before splitting rows (measured on 2 SMT
    // threads: row slices alone left the 14x14 and 7x7 ResNet layers no
    // faster than one thread).
    const bool in_place = pr.b_offsets != nullptr;
    const bool b_ready = in_place || pr.b_prepacked != nullptr;
    if (b_ready && problems * n_blocks < threads) {
        n_blocks = std::min(ceil_div(pr.n, nr), ceil_div(int64_t(threads), problems));
    }
    if (problems * n_blocks < want) {
        m_splits = std::min(m_panels, ceil_div(want, problems * n_blocks));
        if (problems * n_blocks * m_splits < want) {
            n_blocks = std::min(ceil_div(pr.n, nr), ceil_div(want, problems * m_splits));
        }
    }
    int64_t nc = round_up(ceil_div(pr.n, n_blocks), nr);
    n_blocks = ceil_div(pr.n, nc);
    constexpr int64_t kMaxSharedFloats = int64_t(1) << 24;
    if (!b_ready && m_splits > 1 && problems * n_blocks * k_blocks * kc_max * nc > kMaxSharedFloats) {
        // B too large to hold whole: split columns only, packing per task.
        m_splits = 1;
        n_blocks = std::min(ceil_div(pr.n, nr), std::max(n_blocks, ceil_div(want, problems)));
        nc = round_up(ceil_div(pr.n, n_blocks), nr);
        n_blocks = ceil_div(pr.n, nc);
    }
    // Row slices get whole register panels, as evenly as they divide:
    // slices of ceil(panels / splits) left the last one short (256 rows in
    // 8 slices of 36 gave 2 threads 144 and 112 rows).
    m_splits = std::min(m_splits, m_panels);
    // A few tasks of equal size leave threads idle at the end unless they
    // divide evenly (9 column blocks on 2 threads: one waits a ninth of the
    // time); narrower column blocks can make them.
    const int64_t rows_tasks = problems * m_splits;
    if (threads > 1 && rows_tasks * n_blocks < 8 * int64_t(threads) && (rows_tasks * n_blocks) % threads != 0) {
        for (int64_t more = n_blocks + 1; more <= 2 * n_blocks && more <= ceil_div(pr.n, nr); more++) {
            const int64_t nc_more = round_up(ceil_div(pr.n, more), nr);
            if (ceil_div(pr.n, nc_more) == more && (rows_tasks * more) % threads == 0) {
                n_blocks = more;
                nc = nc_more;
                break;
            }
        }
    }
    const bool shared_b = !b_ready && m_splits > 1;
    const int64_t block_floats = kc_max * nc;

    auto pack_block = [&](int64_t p, int64_t nb, int64_t kb, float * dst) {
        const int64_t k0 = kb * kc_max, n0 = nb * nc;
        pr.pack_b(kn, p, k0, std::min(kc_max, pr.k - k0), n0, std::min(nc, pr.n - n0), dst);
    };
    Tensor b_shared;
    if (shared_b) {
        b_shared = Tensor::empty({problems * n_blocks * k_blocks, block_floats});
        float * bs = b_shared.f32();
        parallel_for(problems * n_blocks * k_blocks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; t++) {
                pack_block(t / (n_blocks * k_blocks), (t / k_blocks) % n_blocks, t % k_blocks, bs + t * block_floats);
            }
        });
    }

    const int64_t tasks = problems * n_blocks * m_splits;
    std::atomic<int64_t> next{0};
    auto worker = [&](int64_t, int64_t) {
        Tensor b_own;
        if (!shared_b && !b_ready) b_own = Tensor::empty({block_floats});
        for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) {
            const int64_t p = t / (n_blocks * m_splits);
            const int64_t nb = (t / m_splits) % n_blocks;
            const int64_t slice = t % m_splits;
            const int64_t m0 = slice * m_panels / m_splits * mr;
            const int64_t m1 = std::min(pr.m, (slice + 1) * m_panels / m_splits * mr);
            const int64_t n0 = nb * nc;
            const int64_t b = p / pr.groups, g = p % pr.groups;
            float * c = pr.c + b * pr.c_bs + g * pr.c_gs;
            const float * a = pr.a + b * pr.a_bs + g * pr.a_gs;
            for (int64_t kb = 0; kb < k_blocks; kb++) {
                const int64_t k0 = kb * kc_max, kc = std::min(kc_max, pr.k - k0);
                const float * bp;
                if (in_place) {
                    bp = pr.b_data + b * pr.b_bs + g * pr.b_gs;
                } else if (pr.b_prepacked) {
                    bp = pr.b_prepacked + g * pr.b_prepacked_gs + k0 * round_up(pr.n, nr) + (n0 / nr) * kc * nr;
                } else if (shared_b) {
                    bp = b_shared.f32() + ((p * n_blocks + nb) * k_blocks + kb) * block_floats;
                } else {
                    pack_block(p, nb, kb, b_own.f32());
                    bp = b_own.f32();
                }
                Block blk;
                blk.mc = m1 - m0;
                blk.nc = std::min(nc, pr.n - n0);
                blk.kc = kc;
                blk.lda = pr.lda;
                if (pr.a_offsets) {
                    blk.a = a;
                    blk.a_offsets = pr.a_offsets + k0;
                    blk.a_rows = pr.a_rows;
                    blk.a_row0 = m0;
                } else {
                    blk.a = pr.a_k_major ? a + k0 * pr.lda + m0 : a + m0 * pr.lda + k0;
                    blk.a_k_major = pr.a_k_major;
                }
                blk.b = bp;
                if (in_place) {
                    blk.b_offsets = pr.b_offsets + k0;
                    blk.b_col0 = n0;
                    blk.b_row_len = pr.b_row_len > 0 ? pr.b_row_len : pr.n;
                    blk.b_row_pitch = pr.b_row_len > 0 ? pr.b_row_pitch : pr.n;
                }
                blk.c = c + m0 * pr.ldc + n0;
                blk.ldc = pr.ldc;
                blk.first = kb == 0;
                blk.last = kb == k_blocks - 1;
                blk.ep = pr.ep;
                if (pr.ep.add) blk.ep.add = pr.ep.add + g * pr.add_gs + m0 * pr.ep.add_rs + n0 * pr.ep.add_cs;
                if (pr.ep.residual) blk.ep.residual = pr.ep.residual + (c - pr.c) + m0 * pr.ldc + n0;
                if (pr.ep.residual_scale) blk.ep.residual_scale = pr.ep.residual_scale + g * pr.add_gs + m0;
                kn.block(blk);
            }
        }
    };
    // One entry per thread; each claims tasks until none are left, which
    // balances uneven tasks better than fixed chunks.
    parallel_for(std::min<int64_t>(threads, tasks), 1, worker);
}

}  // namespace packed

void transpose(const float * src, int64_t src_rs, int64_t rows, int64_t cols, float * dst, int64_t dst_rs) {
    packed::kernel_for(cpu_isa()).transpose(src, src_rs, rows, cols, dst, dst_rs);
}

Tensor gemm(const Tensor & a, const Tensor & b, const Tensor & c, const GemmParams & p) {
    const GemmDims d = gemm_dims(a, b, c, p);
    Tensor y = Tensor::empty({d.m, d.n});
    packed::Problem pr;
    pr.m = d.m;
    pr.n = d.n;
    pr.k = d.k;
    pr.a = a.f32();
    pr.lda = p.trans_a ? d.m : d.k;
    pr.a_k_major = p.trans_a;
    const float * bd = b.f32();
    const int64_t b_rs = p.trans_b ? 1 : d.n;
    const int64_t b_cs = p.trans_b ? d.k : 1;
    pr.pack_b = [bd, b_rs, b_cs](const packed::Kernel & kn, int64_t, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                                 float * dst) { kn.pack_strided(bd, b_rs, b_cs, k0, kc, n0, nc, dst); };
    pr.c = y.f32();
    pr.ldc = d.n;
    pr.ep.alpha = p.alpha;
    pr.ep.beta = p.beta;
    pr.ep.act = p.activation;
    // BLAS convention: beta == 0 means C is not read (so NaN in C is ignored).
    if (c.defined() && p.beta != 0.0f) {
        const int64_t cm = c.ndim() == 2 ? c.dim(0) : 1;
        const int64_t cn = c.ndim() >= 1 ? c.dim(-1) : 1;
        pr.ep.add = c.f32();
        pr.ep.add_rs = cm == 1 ? 0 : cn;
        pr.ep.add_cs = cn == 1 ? 0 : 1;
    }
    packed::run(pr);
    return y;
}

Tensor linear(const Tensor & x, const Tensor & w, const Tensor & bias, Activation act) {
    const Shape out = linear_output_shape(x, w, bias);
    const int64_t batch = out[0], features = out[1], k = x.dim(1);
    // Computed as y^T[M, N] = w[M, K] * x[N, K]^T: the weights are then the
    // in-place A operand and only the (small) input is packed, where
    // y = x * w^T would repack every weight on every call.
    Tensor yt = Tensor::empty({features, batch});
    packed::Problem pr;
    pr.m = features;
    pr.n = batch;
    pr.k = k;
    pr.a = w.f32();
    pr.lda = k;
    const float * xd = x.f32();
    pr.pack_b = [xd, k](const packed::Kernel & kn, int64_t, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        float * dst) { kn.pack_strided(xd, 1, k, k0, kc, n0, nc, dst); };
    pr.c = yt.f32();
    pr.ldc = batch;
    pr.ep.act = act;
    if (bias.defined()) {
        pr.ep.add = bias.f32();
        pr.ep.beta = 1.0f;
        pr.ep.add_rs = 1;
    }
    packed::run(pr);
    if (batch == 1) return yt.reshape(out);  // [M, 1] and [1, M] share a layout
    Tensor y = Tensor::empty(out);
    const float * src = yt.f32();
    float * dst = y.f32();
    constexpr int64_t kRows = 64;
    parallel_for((batch + kRows - 1) / kRows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; t++) {
            const int64_t i0 = t * kRows, rows = std::min(kRows, batch - i0);
            transpose(src + i0, batch, features, rows, dst + i0 * features, features);
        }
    });
    return y;
}

}  // namespace fovea::cpu
