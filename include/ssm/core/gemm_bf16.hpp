// ssm/core/gemm_bf16.hpp — Y (+)= X · Wᵀ with bfloat16 products and float32 sums on the
// CPU's bf16 dot-product unit (AVX512-BF16's vdpbf16ps: 32 multiply-adds an instruction,
// twice the float32 FMA's 16): the prefill path of a `Linear` whose weight is kept in bf16,
// on CPUs that have the unit (chosen at run time, `cpu_isa()`).
//
// X (M, K) float32 is rounded to bf16 once per call (to nearest even, as `f32_to_bf16`);
// W (N, K) is bf16 as stored. Each block of 64 output features is repacked per call into
// the unit's layout — for every pair of inputs (2p, 2p+1), the 64 features' two values side
// by side — which costs N·K moves against M·N·K multiply-adds; then tiles of 6 rows × 64
// features keep 24 accumulators in registers along all of K. The sums are float32, so the
// result is the exact product of the rounded operands up to float32 summation error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssm/core/cpu.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"

#if SSM_X86_DISPATCH
#include <immintrin.h>
#endif

namespace ssm {

/// Whether `gemm_bf16` can run here: the CPU has AVX512-BF16 and the dispatch (`cpu_isa()`,
/// `SSM_CPU_ISA`, `use_cpu_isa`) has not been held below it.
[[nodiscard]] inline bool gemm_bf16_available() noexcept {
#if SSM_X86_DISPATCH
    return cpu_isa() == CpuIsa::Avx512Bf16;
#else
    return false;
#endif
}

namespace detail {

inline constexpr int kBf16TileRows = 6;      // rows of X per register tile
inline constexpr int kBf16BlockCols = 64;    // output features per packed block (4 vectors)

/// Two bf16 values as one 32-bit lane, the first in the low half (what vdpbf16ps pairs).
[[nodiscard]] inline std::uint32_t bf16_pair(std::uint16_t lo, std::uint16_t hi) noexcept {
    return static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
}

#if SSM_X86_DISPATCH
/// One tile: y (MR, ≤ 16·NV columns) (+)= a (MR, pairs) · b, with `b` the block packed as
/// b[(p·NV + v)·16 + c] = the pair p of feature 16v + c. `cols` columns are stored.
template <int MR, int NV>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_tile(const std::uint32_t* a, index lda,
                                                                      const std::uint32_t* b, index pairs,
                                                                      float* y, index ldy, index cols,
                                                                      bool accumulate) noexcept {
    // The loops over r and v are unrolled, so that the MR·NV accumulators live in registers.
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    for (index p = 0; p < pairs; ++p) {
        __m512bh bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + (p * NV + v) * 16);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
        const index left = cols - 16 * v;
        if (left <= 0) break;
        const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
        for (int r = 0; r < MR; ++r) {
            float* dst = y + r * ldy + 16 * v;
            __m512 out = acc[r][v];
            if (accumulate) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, dst));
            _mm512_mask_storeu_ps(dst, m, out);
        }
    }
}

/// All rows of X against one packed block of NV vectors.
template <int NV>
void bf16_block(const std::uint32_t* a, index lda, index rows, const std::uint32_t* b, index pairs, float* y,
                index ldy, index cols, bool accumulate) noexcept {
    index r = 0;
    for (; r + kBf16TileRows <= rows; r += kBf16TileRows)
        bf16_tile<kBf16TileRows, NV>(a + r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate);
    switch (rows - r) {
        case 5: bf16_tile<5, NV>(a + r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 4: bf16_tile<4, NV>(a + r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 3: bf16_tile<3, NV>(a + r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 2: bf16_tile<2, NV>(a + r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 1: bf16_tile<1, NV>(a + r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        default: break;
    }
}
#endif

}  // namespace detail

/// Y (M, N; row stride ldy) (+)= X (M, K; ldx) · Wᵀ, W (N, K; ldw) bf16 bits, with bf16
/// products and float32 sums (X rounded to bf16 first). Needs `gemm_bf16_available()`;
/// split over the library's threads by blocks of 64 output features.
inline void gemm_bf16(const float* X, index ldx, index M, index K, const std::uint16_t* W, index ldw, index N,
                      float* Y, index ldy, bool accumulate) {
    require(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512-BF16 unit (or the dispatch was held below it)");
    require(M >= 0 && N >= 0 && K >= 0 && ldx >= K && ldw >= K && ldy >= N, "gemm_bf16: bad sizes M ", M, ", N ",
            N, ", K ", K);
#if SSM_X86_DISPATCH
    if (M == 0 || N == 0) return;
    const index pairs = (K + 1) / 2;
    // X as bf16 pairs (K padded with a zero to even), converted once, shared by every block.
    thread_local std::vector<std::uint32_t> xb_store;
    xb_store.resize(static_cast<std::size_t>(M * pairs));
    std::uint32_t* const xb = xb_store.data();
    parallel_for(M, 16, [&, xb](index begin, index end) {
        for (index r = begin; r < end; ++r) {
            const float* x = X + r * ldx;
            std::uint32_t* out = xb + r * pairs;
            for (index p = 0; p < pairs; ++p) {
                const std::uint16_t lo = f32_to_bf16(x[2 * p]);
                const std::uint16_t hi = 2 * p + 1 < K ? f32_to_bf16(x[2 * p + 1]) : std::uint16_t{0};
                out[p] = detail::bf16_pair(lo, hi);
            }
        }
    });
    const index blocks = (N + detail::kBf16BlockCols - 1) / detail::kBf16BlockCols;
    parallel_for(blocks, 1, [&, xb](index begin, index end) {
        thread_local std::vector<std::uint32_t> packed;
        packed.resize(static_cast<std::size_t>(pairs * detail::kBf16BlockCols));
        for (index blk = begin; blk < end; ++blk) {
            const index n0 = blk * detail::kBf16BlockCols;
            const index cols = std::min<index>(detail::kBf16BlockCols, N - n0);
            const int nv = static_cast<int>((cols + 15) / 16);
            // Pack: packed[(p·nv + v)·16 + c] = pair p of feature n0 + 16v + c (zero past N).
            for (int v = 0; v < nv; ++v)
                for (index c = 0; c < 16; ++c) {
                    const index n = n0 + 16 * v + c;
                    std::uint32_t* dst = packed.data() + v * 16 + c;
                    if (n >= N) {
                        for (index p = 0; p < pairs; ++p) dst[p * nv * 16] = 0;
                        continue;
                    }
                    const std::uint16_t* w = W + n * ldw;
                    for (index p = 0; p < pairs; ++p)
                        dst[p * nv * 16] = detail::bf16_pair(w[2 * p], 2 * p + 1 < K ? w[2 * p + 1] : std::uint16_t{0});
                }
            float* y = Y + n0;
            switch (nv) {
                case 4: detail::bf16_block<4>(xb, pairs, M, packed.data(), pairs, y, ldy, cols, accumulate); break;
                case 3: detail::bf16_block<3>(xb, pairs, M, packed.data(), pairs, y, ldy, cols, accumulate); break;
                case 2: detail::bf16_block<2>(xb, pairs, M, packed.data(), pairs, y, ldy, cols, accumulate); break;
                default: detail::bf16_block<1>(xb, pairs, M, packed.data(), pairs, y, ldy, cols, accumulate); break;
            }
        }
    });
#else
    (void)X, (void)W, (void)Y, (void)accumulate;
#endif
}

}  // namespace ssm
