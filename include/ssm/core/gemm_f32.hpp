// ssm/core/gemm_f32.hpp — C (+)= A · B in float32 with AVX2 + FMA register tiles: the GEMM
// under `Linear` (prefill and training: y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x) on CPUs whose best
// instruction set is AVX2 (chosen at run time, `cpu_isa()`); elsewhere Eigen's GEMM runs.
// `gemm_f32_serial` and `serial_product` run the same kernel on the calling thread, for the
// small products inside the library's own parallel loops: attention's blocks (QKᵀ, PV and
// their backward), exact top-k's score tiles, the chunked SSD scan's products.
//
// The layout is GotoBLAS's: B is packed per call into panels of 16 columns, each column
// block stored k-major (16 values of one k side by side; a transposed B, whose columns are
// contiguous, by 8 × 8 transposes in registers), so that a tile of 6 rows × 16 columns keeps
// 12 accumulators in registers and meets, per k, two vector loads of B and six broadcasts of
// A (12 FMAs). The depth runs in blocks of 256 (a 16 × 256 micro-panel is 16 KiB, resident in
// L1 while 16 row tiles pass over it), rows in blocks of 96. A is read in place through its
// row stride; a transposed A (dyᵀ in dW) is copied a 96 × 256 block at a time into rows by
// the same 8 × 8 transposes, since in place each k step of a tile would read a new cache
// line for every row. Each element of C is summed in one fixed order (k ascending),
// whatever the number of threads: the result never depends on the split.
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ssm/core/cpu.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/unroll.hpp"

#if SSM_X86_DISPATCH
#include <immintrin.h>
#endif

namespace ssm {

/// Whether `gemm_f32` runs here: the dispatch (`cpu_isa()`, `SSM_CPU_ISA`, `use_cpu_isa`)
/// is AVX2 + FMA. On AVX-512 CPUs Eigen's own AVX-512 GEMM is kept unless AVX2 is forced.
[[nodiscard]] inline bool gemm_f32_available() noexcept {
#if SSM_X86_DISPATCH
    return cpu_isa() == CpuIsa::Avx2;
#else
    return false;
#endif
}

/// An operand of `gemm_f32`: element (i, j) at data[i·row_stride + j·col_stride].
struct GemmOperand {
    const float* data = nullptr;
    index row_stride = 0;
    index col_stride = 1;

    /// A row-major matrix with row stride `ld`.
    [[nodiscard]] static GemmOperand rows(const float* p, index ld) noexcept { return {p, ld, 1}; }
    /// The transpose of a row-major matrix with row stride `ld`.
    [[nodiscard]] static GemmOperand transposed(const float* p, index ld) noexcept { return {p, 1, ld}; }
};

namespace detail {

inline constexpr int kF32TileRows = 6;        // rows of C per register tile
inline constexpr int kF32TileCols = 16;       // columns of C per register tile (two vectors)
inline constexpr index kF32Depth = 256;       // k per block: a 16 × 256 micro-panel is 16 KiB
inline constexpr index kF32RowBlock = 96;     // rows of A per block (16 tiles), 96 KiB at k 256
inline constexpr index kF32TaskRows = 768;    // rows of C per task (B's panel is packed per task)

#if SSM_X86_DISPATCH
/// One tile: c (MR rows, `cols` ≤ 16 columns stored) (+)= a (MR rows of `kc`, element (r, k) at
/// a[r·ars + k·aks]) · b (kc × 16, b[k·16 + j]). The products are summed from zero; with
/// `load` the sum is then added to c (c + Σ, not c + t₁ + t₂ + …: a gradient accumulated
/// twice over the same inputs is exactly doubled, as with Eigen's GEMM).
template <int MR>
__attribute__((target("avx2,fma"))) void f32_tile(const float* a, index ars, index aks, const float* b, index kc,
                                                  float* c, index ldc, index cols, bool load) noexcept {
    __m256 acc[MR][2];
    float edge[MR][kF32TileCols];
    const bool full = cols == kF32TileCols;
    if (load && !full)
        for (int r = 0; r < MR; ++r) {
            std::memset(edge[r], 0, sizeof edge[r]);
            std::memcpy(edge[r], c + r * ldc, sizeof(float) * static_cast<std::size_t>(cols));
        }
SSM_UNROLL(6)
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
SSM_UNROLL(4)
    for (index k = 0; k < kc; ++k) {
        const __m256 b0 = _mm256_loadu_ps(b + k * kF32TileCols);
        const __m256 b1 = _mm256_loadu_ps(b + k * kF32TileCols + 8);
        const float* ak = a + k * aks;
SSM_UNROLL(6)
        for (int r = 0; r < MR; ++r) {
            const __m256 av = _mm256_broadcast_ss(ak + r * ars);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
SSM_UNROLL(6)
    for (int r = 0; r < MR; ++r) {
        float* dst = full ? c + r * ldc : edge[r];
        if (load) {
            acc[r][0] = _mm256_add_ps(_mm256_loadu_ps(dst), acc[r][0]);
            acc[r][1] = _mm256_add_ps(_mm256_loadu_ps(dst + 8), acc[r][1]);
        }
        _mm256_storeu_ps(dst, acc[r][0]);
        _mm256_storeu_ps(dst + 8, acc[r][1]);
    }
    if (!full)
        for (int r = 0; r < MR; ++r)
            std::memcpy(c + r * ldc, edge[r], sizeof(float) * static_cast<std::size_t>(cols));
}

/// Rows [0, rows) of a row block against one micro-panel.
inline void f32_rows(const float* a, index ars, index aks, index rows, const float* b, index kc, float* c, index ldc,
                     index cols, bool load) noexcept {
    index r = 0;
    for (; r + kF32TileRows <= rows; r += kF32TileRows)
        f32_tile<kF32TileRows>(a + r * ars, ars, aks, b, kc, c + r * ldc, ldc, cols, load);
    const float* ar = a + r * ars;
    float* cr = c + r * ldc;
    switch (rows - r) {
        case 5: f32_tile<5>(ar, ars, aks, b, kc, cr, ldc, cols, load); break;
        case 4: f32_tile<4>(ar, ars, aks, b, kc, cr, ldc, cols, load); break;
        case 3: f32_tile<3>(ar, ars, aks, b, kc, cr, ldc, cols, load); break;
        case 2: f32_tile<2>(ar, ars, aks, b, kc, cr, ldc, cols, load); break;
        case 1: f32_tile<1>(ar, ars, aks, b, kc, cr, ldc, cols, load); break;
        default: break;
    }
}

/// Eight runs of eight contiguous values (run c at src + c·cs) transposed into rows of `ld`:
/// dst[i·ld + c] = src[c·cs + i] — one 8 × 8 transpose in registers. Packs eight columns of a
/// transposed B into a micro-panel (ld 16), and eight rows of a transposed A (ld its depth).
__attribute__((target("avx2,fma"))) inline void pack_f32_transposed8(const float* src, index cs, float* dst,
                                                                    index ld) noexcept {
    __m256 r[8], t[8];
SSM_UNROLL(8)
    for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(src + c * cs);
SSM_UNROLL(4)
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // r[0..3]: k pairs of columns 0–3, r[4..7]: of columns 4–7, in each 128-bit half
    r[0] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(1, 0, 1, 0));
    r[1] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(3, 2, 3, 2));
    r[2] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(1, 0, 1, 0));
    r[3] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(3, 2, 3, 2));
    r[4] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(1, 0, 1, 0));
    r[5] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(3, 2, 3, 2));
    r[6] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(1, 0, 1, 0));
    r[7] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(3, 2, 3, 2));
SSM_UNROLL(4)
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + k * ld, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * ld, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
    }
}
#endif

/// Columns [n0, n0 + n) of B (K × N) packed as micro-panels of 16 columns, k-major:
/// out[(j·K + k)·16 + c] = B(k, n0 + 16j + c), zeros past the n columns.
#if SSM_X86_DISPATCH
__attribute__((target("avx2,fma")))  // runs only under the AVX2 dispatch; inlines the transposes
#endif
inline void pack_f32_panel(const GemmOperand& B, index K, index n0, index n, float* out) noexcept {
    const index panels = (n + kF32TileCols - 1) / kF32TileCols;
    for (index j = 0; j < panels; ++j) {
        const index c0 = n0 + j * kF32TileCols, cols = std::min<index>(kF32TileCols, n0 + n - c0);
        float* dst = out + j * K * kF32TileCols;
        if (B.col_stride == 1 && cols == kF32TileCols) {  // 16 contiguous values a row
            for (index k = 0; k < K; ++k)
                std::memcpy(dst + k * kF32TileCols, B.data + k * B.row_stride + c0, sizeof(float) * kF32TileCols);
            continue;
        }
#if SSM_X86_DISPATCH
        if (B.row_stride == 1 && cols == kF32TileCols) {  // a transposed operand: its columns are contiguous
            const float* src = B.data + c0 * B.col_stride;
            index k = 0;
            for (; k + 8 <= K; k += 8) {
                pack_f32_transposed8(src + k, B.col_stride, dst + k * kF32TileCols, kF32TileCols);
                pack_f32_transposed8(src + 8 * B.col_stride + k, B.col_stride, dst + k * kF32TileCols + 8,
                                     kF32TileCols);
            }
            for (; k < K; ++k)
                for (index c = 0; c < kF32TileCols; ++c) dst[k * kF32TileCols + c] = src[c * B.col_stride + k];
            continue;
        }
#endif
        for (index c = 0; c < kF32TileCols; ++c) {
            if (c >= cols) {
                for (index k = 0; k < K; ++k) dst[k * kF32TileCols + c] = 0.0f;
                continue;
            }
            const float* src = B.data + (c0 + c) * B.col_stride;
            for (index k = 0; k < K; ++k) dst[k * kF32TileCols + c] = src[k * B.row_stride];
        }
    }
}

/// Rows [m0, m0 + rows) × depth [k0, k0 + kc) of a transposed A (row stride 1: a row's
/// values lie a column stride apart, a cache line apiece) copied row-major into out (row r at
/// out + r·kc), so that the tiles read it as they read A's own rows.
#if SSM_X86_DISPATCH
__attribute__((target("avx2,fma")))  // runs only under the AVX2 dispatch; inlines the transposes
#endif
inline void pack_f32_rows(const GemmOperand& A, index m0, index rows, index k0, index kc, float* out) noexcept {
    const index cs = A.col_stride;
    const float* src = A.data + m0 + k0 * cs;
    index r = 0;
#if SSM_X86_DISPATCH
    for (; r + 8 <= rows; r += 8) {
        index k = 0;
        for (; k + 8 <= kc; k += 8) pack_f32_transposed8(src + k * cs + r, cs, out + r * kc + k, kc);
        for (; k < kc; ++k)
            for (index i = 0; i < 8; ++i) out[(r + i) * kc + k] = src[k * cs + r + i];
    }
#endif
    for (; r < rows; ++r)
        for (index k = 0; k < kc; ++k) out[r * kc + k] = src[k * cs + r];
}

/// Whether A is a transposed matrix (row stride 1), which `gemm_f32_block` copies a row block
/// at a time (`pack_f32_rows`) instead of reading it in place.
[[nodiscard]] inline bool f32_packs_rows(const GemmOperand& A) noexcept { return A.row_stride == 1 && A.col_stride != 1; }

/// Rows [m_begin, m_end) × columns [n0, n0 + n) of C (+)= A · B on the calling thread,
/// packing that block of B into `panel_store` once.
inline void gemm_f32_block(const GemmOperand& A, const GemmOperand& B, index N, index K, float* C, index ldc,
                           bool accumulate, index n0, index n, index m_begin, index m_end,
                           std::vector<float>& panel_store) {
#if SSM_X86_DISPATCH
    const index panels = (n + kF32TileCols - 1) / kF32TileCols;
    panel_store.resize(static_cast<std::size_t>(panels * K * kF32TileCols));
    float* const panel = panel_store.data();
    pack_f32_panel(B, K, n0, n, panel);
    // A transposed A (dyᵀ in dW += dyᵀ·x) is copied a row block at a time into rows of its own:
    // read in place, each of a tile's k steps would touch a new cache line per row.
    const bool pack_a = f32_packs_rows(A);
    thread_local std::vector<float> a_store;
    if (pack_a) a_store.resize(static_cast<std::size_t>(kF32RowBlock * std::min(kF32Depth, K)));
    for (index k0 = 0; k0 < K; k0 += kF32Depth) {
        const index kc = std::min(kF32Depth, K - k0);
        const bool load = accumulate || k0 > 0;
        for (index m0 = m_begin; m0 < m_end; m0 += kF32RowBlock) {
            const index rows = std::min(kF32RowBlock, m_end - m0);
            const float* a = A.data + m0 * A.row_stride + k0 * A.col_stride;
            index ars = A.row_stride, aks = A.col_stride;
            if (pack_a) {
                pack_f32_rows(A, m0, rows, k0, kc, a_store.data());
                a = a_store.data(), ars = kc, aks = 1;
            }
            for (index j = 0; j < panels; ++j) {
                const index c0 = n0 + j * kF32TileCols;
                f32_rows(a, ars, aks, rows, panel + (j * K + k0) * kF32TileCols, kc, C + m0 * ldc + c0, ldc,
                         std::min<index>(kF32TileCols, N - c0), load);
            }
        }
    }
#else
    (void)A, (void)B, (void)N, (void)K, (void)C, (void)ldc, (void)accumulate, (void)n0, (void)n, (void)m_begin,
        (void)m_end, (void)panel_store;
#endif
}

/// The checks of a GEMM over two `GemmOperand`s (`name` in the messages: gemm_f32, gemm_bf16);
/// false when there is nothing to multiply (C is then zeroed for K = 0 unless accumulating).
inline bool gemm_operands_prepare(const char* name, const GemmOperand& A, const GemmOperand& B, index M, index N,
                                  index K, float* C, index ldc, bool accumulate) {
    require(M >= 0 && N >= 0 && K >= 0 && ldc >= N, name, ": bad sizes M ", M, ", N ", N, ", K ", K, " (ldc ", ldc,
            ")");
    if (M == 0 || N == 0) return false;
    require(C != nullptr && (K == 0 || (A.data && B.data)), name, ": a null operand (M ", M, ", N ", N, ", K ", K,
            ")");
    if (K == 0) {
        if (!accumulate)
            for (index r = 0; r < M; ++r) std::fill(C + r * ldc, C + r * ldc + N, 0.0f);
        return false;
    }
    return true;
}

/// The checks both entry points make; false when there is nothing to multiply.
inline bool gemm_f32_prepare(const GemmOperand& A, const GemmOperand& B, index M, index N, index K, float* C,
                             index ldc, bool accumulate) {
    require(gemm_f32_available(), "gemm_f32: the dispatch is not AVX2 + FMA on this CPU");
    return gemm_operands_prepare("gemm_f32", A, B, M, N, K, C, ldc, accumulate);
}

}  // namespace detail

/// C (M, N; row stride ldc) (+)= A (M, K) · B (K, N), float32, with `accumulate` adding to
/// C instead of overwriting it. A and B are read through their strides (`GemmOperand`), so
/// x·Wᵀ for a PyTorch weight W (N, K) is `gemm_f32(rows(x), transposed(W), ...)`. Needs
/// `gemm_f32_available()`; split over the library's threads by blocks of C's columns (and of
/// 768 rows), each packing its block of B once.
inline void gemm_f32(const GemmOperand& A, const GemmOperand& B, index M, index N, index K, float* C, index ldc,
                     bool accumulate) {
    using namespace detail;
    if (!gemm_f32_prepare(A, B, M, N, K, C, ldc, accumulate)) return;
    // Column blocks of 16 to 256, narrow enough to give every thread four or more of them —
    // or one, for a transposed A with rows enough for two row tasks a thread: it is copied once
    // per column block, so the fewer blocks the better.
    const index threads = std::max<index>(1, num_threads());
    const index per_thread = f32_packs_rows(A) && M >= 2 * kF32TaskRows * threads ? 1 : 4;
    const index want = (N + per_thread * threads - 1) / (per_thread * threads);
    const index block_cols =
        std::clamp<index>((want + kF32TileCols - 1) / kF32TileCols * kF32TileCols, kF32TileCols, 256);
    const index col_blocks = (N + block_cols - 1) / block_cols;
    const index row_tasks = (M + kF32TaskRows - 1) / kF32TaskRows;
    parallel_for(col_blocks * row_tasks, 1, [&](index begin, index end) {
        thread_local std::vector<float> panel_store;
        for (index task = begin; task < end; ++task) {
            const index n0 = task / row_tasks * block_cols, m_begin = task % row_tasks * kF32TaskRows;
            gemm_f32_block(A, B, N, K, C, ldc, accumulate, n0, std::min(block_cols, N - n0), m_begin,
                           std::min(M, m_begin + kF32TaskRows), panel_store);
        }
    });
}

/// `gemm_f32` on the calling thread alone, for products inside the library's own parallel
/// loops (one attention block, one tile of scores). The same sums in the same order: its
/// result is `gemm_f32`'s, bit for bit.
inline void gemm_f32_serial(const GemmOperand& A, const GemmOperand& B, index M, index N, index K, float* C,
                            index ldc, bool accumulate) {
    using namespace detail;
    if (!gemm_f32_prepare(A, B, M, N, K, C, ldc, accumulate)) return;
    thread_local std::vector<float> panel_store;
    for (index n0 = 0; n0 < N; n0 += 256)  // each block of B packed once, for all of A's rows
        gemm_f32_block(A, B, N, K, C, ldc, accumulate, n0, std::min<index>(256, N - n0), 0, M, panel_store);
}

/// dst (+)= op(a) · op(b) on the calling thread, for row-major Eigen blocks (matrices or
/// strided maps) and op the transpose where `ta` / `tb` say so: `gemm_f32_serial` where the
/// dispatch is AVX2, Eigen's product elsewhere. For the products inside the library's own
/// parallel loops (attention blocks, tiles of retrieval scores).
template <class Dst, class A, class B>
void serial_product(Dst&& dst, const A& a, bool ta, const B& b, bool tb, bool accumulate) {
    static_assert(std::remove_cvref_t<Dst>::IsRowMajor && A::IsRowMajor && B::IsRowMajor,
                  "serial_product: row-major operands");
    static_assert(std::remove_cvref_t<Dst>::InnerStrideAtCompileTime == 1 && A::InnerStrideAtCompileTime == 1 &&
                      B::InnerStrideAtCompileTime == 1,
                  "serial_product: operands whose rows are contiguous (an outer stride only)");
    const index M = dst.rows(), N = dst.cols(), K = ta ? a.rows() : a.cols();
    require((ta ? a.cols() : a.rows()) == M && (tb ? b.rows() : b.cols()) == N && (tb ? b.cols() : b.rows()) == K,
            "serial_product: shapes (", M, ", ", N, ") = (", a.rows(), ", ", a.cols(), ")", ta ? "ᵀ" : "", " · (",
            b.rows(), ", ", b.cols(), ")", tb ? "ᵀ" : "");
    if (gemm_f32_available()) {
        const auto operand = [](const float* p, index ld, bool t) {
            return t ? GemmOperand::transposed(p, ld) : GemmOperand::rows(p, ld);
        };
        gemm_f32_serial(operand(a.data(), a.outerStride(), ta), operand(b.data(), b.outerStride(), tb), M, N, K,
                        dst.data(), dst.outerStride(), accumulate);
        return;
    }
    const auto run = [&](const auto& lhs, const auto& rhs) {
        if (accumulate)
            dst.noalias() += lhs * rhs;
        else
            dst.noalias() = lhs * rhs;
    };
    if (ta) {
        if (tb)
            run(a.transpose(), b.transpose());
        else
            run(a.transpose(), b);
    } else {
        if (tb)
            run(a, b.transpose());
        else
            run(a, b);
    }
}

}  // namespace ssm
