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
#include "ssm/core/unroll.hpp"

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
/// One tile: y (MR, ≤ 16·NV columns) (+)= a (MR rows of `lda` pairs, as bf16 values in
/// order) · b, with `b` the block packed as b[(p·NV + v)·16 + c] = the pair p of feature
/// 16v + c. `cols` columns are stored.
template <int MR, int NV>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_tile(const std::uint16_t* a, index lda,
                                                                      const std::uint32_t* b, index pairs,
                                                                      float* y, index ldy, index cols,
                                                                      bool accumulate) noexcept {
    // The loops over r and v are unrolled, so that the MR·NV accumulators live in registers.
    __m512 acc[MR][NV];
SSM_UNROLL(8)
    for (int r = 0; r < MR; ++r)
SSM_UNROLL(4)
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    for (index p = 0; p < pairs; ++p) {
        __m512bh bv[NV];
SSM_UNROLL(4)
        for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + (p * NV + v) * 16);
SSM_UNROLL(8)
        for (int r = 0; r < MR; ++r) {
            // The pair (2p, 2p+1) of row r in every lane (an unaligned 32-bit load).
            const __m512bh av = (__m512bh)_mm512_broadcastd_epi32(_mm_loadu_si32(a + 2 * (r * lda + p)));
SSM_UNROLL(4)
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
        }
    }
SSM_UNROLL(4)
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
void bf16_block(const std::uint16_t* a, index lda, index rows, const std::uint32_t* b, index pairs, float* y,
                index ldy, index cols, bool accumulate) noexcept {
    index r = 0;
    for (; r + kBf16TileRows <= rows; r += kBf16TileRows)
        bf16_tile<kBf16TileRows, NV>(a + 2 * r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate);
    switch (rows - r) {
        case 5: bf16_tile<5, NV>(a + 2 * r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 4: bf16_tile<4, NV>(a + 2 * r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 3: bf16_tile<3, NV>(a + 2 * r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 2: bf16_tile<2, NV>(a + 2 * r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        case 1: bf16_tile<1, NV>(a + 2 * r * lda, lda, b, pairs, y + r * ldy, ldy, cols, accumulate); break;
        default: break;
    }
}
#endif

}  // namespace detail

/// A bf16 weight W (N, K) in the unit's layout: blocks of 64 features, each holding for
/// every pair of inputs p the features' pairs side by side, block b at b·pairs·64, with
/// packed[(p·nv + v)·16 + c] = the pair p of feature 64b + 16v + c (nv = the block's
/// vectors of 16 features, zeros past N and past K). Made once per weight and kept
/// (`WeightMatrix::bf16_packed`), since repacking per call would cost as much as a
/// quarter of a prefill GEMM.
class PackedBf16 {
public:
    PackedBf16() = default;
    PackedBf16(const std::uint16_t* W, index ldw, index N, index K) : N_(N), K_(K), pairs_((K + 1) / 2) {
        require(N >= 0 && K >= 0 && ldw >= K, "PackedBf16: bad sizes N ", N, ", K ", K);
        const index blocks = (N + detail::kBf16BlockCols - 1) / detail::kBf16BlockCols;
        data_.resize(static_cast<std::size_t>(blocks * pairs_ * detail::kBf16BlockCols));
        parallel_for(blocks, 1, [&](index begin, index end) {
            for (index blk = begin; blk < end; ++blk) {
                const index n0 = blk * detail::kBf16BlockCols;
                const index nv = (std::min<index>(detail::kBf16BlockCols, N - n0) + 15) / 16;
                std::uint32_t* out = data_.data() + blk * pairs_ * detail::kBf16BlockCols;
                for (index v = 0; v < nv; ++v)
                    for (index c = 0; c < 16; ++c) {
                        const index n = n0 + 16 * v + c;
                        std::uint32_t* dst = out + v * 16 + c;
                        const std::uint16_t* w = n < N ? W + n * ldw : nullptr;
                        for (index p = 0; p < pairs_; ++p)
                            dst[p * nv * 16] =
                                w ? detail::bf16_pair(w[2 * p], 2 * p + 1 < K ? w[2 * p + 1] : std::uint16_t{0}) : 0u;
                    }
            }
        });
    }

    [[nodiscard]] index rows() const noexcept { return N_; }
    [[nodiscard]] index cols() const noexcept { return K_; }
    [[nodiscard]] index pairs() const noexcept { return pairs_; }
    [[nodiscard]] const std::uint32_t* block(index b) const noexcept {
        return data_.data() + b * pairs_ * detail::kBf16BlockCols;
    }
    [[nodiscard]] std::size_t bytes() const noexcept { return data_.size() * sizeof(std::uint32_t); }

private:
    index N_ = 0, K_ = 0, pairs_ = 0;
    std::vector<std::uint32_t> data_;
};

namespace detail {

#if SSM_X86_DISPATCH
/// One row of X to bf16, in order (so that each 32-bit lane is the pair (x[2p], x[2p+1])),
/// 32 values an instruction, rounded to nearest even (vcvtne2ps2bf16, which reads a
/// subnormal float as zero), a zero after an odd K.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void row_to_bf16(const float* x, index K,
                                                                               std::uint16_t* out) noexcept {
    index k = 0;
    for (; k + 32 <= K; k += 32) {
        const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
        _mm512_storeu_si512(out + k, (__m512i)h);
    }
    for (; k < K; ++k) out[k] = f32_to_bf16(x[k]);
    if (K % 2 != 0) out[K] = 0;
}
#endif

}  // namespace detail

/// Y (M, N; row stride ldy) (+)= X (M, K; ldx) · Wᵀ with W packed (`PackedBf16`), bf16
/// products and float32 sums (X rounded to bf16 first). Needs `gemm_bf16_available()`;
/// split over the library's threads by blocks of 64 output features.
inline void gemm_bf16(const float* X, index ldx, index M, const PackedBf16& W, float* Y, index ldy, bool accumulate) {
    require(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512-BF16 unit (or the dispatch was held below it)");
    const index N = W.rows(), K = W.cols();
    require(M >= 0 && ldx >= K && ldy >= N, "gemm_bf16: bad sizes M ", M, ", N ", N, ", K ", K, " (ldx ", ldx,
            ", ldy ", ldy, ")");
#if SSM_X86_DISPATCH
    if (M == 0 || N == 0) return;
    const index pairs = W.pairs();
    // X as bf16 (rows of 2·pairs values), converted once, shared by every block.
    thread_local std::vector<std::uint16_t> xb_store;
    xb_store.resize(static_cast<std::size_t>(M * 2 * pairs));
    std::uint16_t* const xb = xb_store.data();
    parallel_for(M, 16, [&, xb](index begin, index end) {
        for (index r = begin; r < end; ++r) detail::row_to_bf16(X + r * ldx, K, xb + 2 * r * pairs);
    });
    const index blocks = (N + detail::kBf16BlockCols - 1) / detail::kBf16BlockCols;
    parallel_for(blocks, 1, [&, xb](index begin, index end) {
        for (index blk = begin; blk < end; ++blk) {
            const index n0 = blk * detail::kBf16BlockCols;
            const index cols = std::min<index>(detail::kBf16BlockCols, N - n0);
            const std::uint32_t* b = W.block(blk);
            float* y = Y + n0;
            switch ((cols + 15) / 16) {
                case 4: detail::bf16_block<4>(xb, pairs, M, b, pairs, y, ldy, cols, accumulate); break;
                case 3: detail::bf16_block<3>(xb, pairs, M, b, pairs, y, ldy, cols, accumulate); break;
                case 2: detail::bf16_block<2>(xb, pairs, M, b, pairs, y, ldy, cols, accumulate); break;
                default: detail::bf16_block<1>(xb, pairs, M, b, pairs, y, ldy, cols, accumulate); break;
            }
        }
    });
#else
    (void)X, (void)Y, (void)accumulate;
#endif
}

/// The same with W (N, K; ldw) as bf16 bits, packed for this call.
inline void gemm_bf16(const float* X, index ldx, index M, index K, const std::uint16_t* W, index ldw, index N,
                      float* Y, index ldy, bool accumulate) {
    require(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512-BF16 unit (or the dispatch was held below it)");
    gemm_bf16(X, ldx, M, PackedBf16(W, ldw, N, K), Y, ldy, accumulate);
}

}  // namespace ssm
