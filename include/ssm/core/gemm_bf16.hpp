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
//
// Where the dispatch is `CpuIsa::Amx` (asked for: `SSM_CPU_ISA=amx`), the same packed
// blocks feed AMX's tiles instead: `tdpbf16ps` multiplies a 16-row tile of X (32 bf16 values
// a row) by a tile of 16 pairs of 16 features, 8 192 multiply-adds an instruction. The block
// layout above is already the tile's: pair p of 16 consecutive features is 64 bytes, and
// consecutive pairs sit 64·nv bytes apart, which is the tile load's row stride. Depth is
// padded to whole tiles (16 pairs) with zeros, rows of X to 16.
//
// The same unit serves float32 weights when the caller asks for bf16 products
// (`set_matmul_precision(MatmulPrecision::Bf16Products)`, what PyTorch's
// `set_float32_matmul_precision("medium")` allows): `gemm_bf16` over two `GemmOperand`s rounds
// both operands per call, whatever their strides, so `Linear`'s three training products
// (y = x·Wᵀ, dx = dy·W, dW += dyᵀ·x) run on it from float32 masters.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ssm/core/cpu.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/unroll.hpp"

#if SSM_X86_DISPATCH
#include <immintrin.h>
#endif


namespace ssm {

/// Whether `gemm_bf16` can run here: the CPU has AVX512-BF16 and the dispatch (`cpu_isa()`,
/// `SSM_CPU_ISA`, `use_cpu_isa`) has not been held below it (on AMX's tiles where the
/// dispatch is `CpuIsa::Amx`).
[[nodiscard]] inline bool gemm_bf16_available() noexcept {
#if SSM_X86_DISPATCH
    return cpu_isa() >= CpuIsa::Avx512Bf16;
#else
    return false;
#endif
}

/// How `Linear` multiplies by a float32 weight when the rows are many (prefill and the three
/// products of training): in float32 (the default), or with both operands rounded to bf16 and
/// float32 sums on the CPU's bf16 unit — about twice the multiply-adds a cycle, at bf16's
/// precision (8 significant bits) in each product. Where the CPU has no unit, or the
/// dispatch is held below it, the products stay float32 (`bf16_products()` says which).
enum class MatmulPrecision : int {
    Float32 = 0,
    Bf16Products = 1,
};

namespace detail {
inline std::atomic<int>& matmul_precision_choice() noexcept {
    static std::atomic<int> choice{0};
    return choice;
}
}  // namespace detail

/// Sets `MatmulPrecision` for the whole process (the programs' `--bf16-products`).
inline void set_matmul_precision(MatmulPrecision p) noexcept {
    detail::matmul_precision_choice().store(static_cast<int>(p), std::memory_order_relaxed);
}

[[nodiscard]] inline MatmulPrecision matmul_precision() noexcept {
    return static_cast<MatmulPrecision>(detail::matmul_precision_choice().load(std::memory_order_relaxed));
}

/// Whether float32 products run on the bf16 unit now: bf16 products asked for, and the unit
/// available (`gemm_bf16_available()`).
[[nodiscard]] inline bool bf16_products() noexcept {
    return matmul_precision() == MatmulPrecision::Bf16Products && gemm_bf16_available();
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

/// Rows of X against one packed block of `cols` ≤ 64 features: `bf16_block` for its 1–4
/// vectors of 16.
inline void bf16_block_cols(const std::uint16_t* a, index lda, index rows, const std::uint32_t* b, index pairs,
                            float* y, index ldy, index cols, bool accumulate) noexcept {
#if SSM_X86_DISPATCH
    switch ((cols + 15) / 16) {
        case 4: bf16_block<4>(a, lda, rows, b, pairs, y, ldy, cols, accumulate); break;
        case 3: bf16_block<3>(a, lda, rows, b, pairs, y, ldy, cols, accumulate); break;
        case 2: bf16_block<2>(a, lda, rows, b, pairs, y, ldy, cols, accumulate); break;
        default: bf16_block<1>(a, lda, rows, b, pairs, y, ldy, cols, accumulate); break;
    }
#else
    (void)a, (void)lda, (void)rows, (void)b, (void)pairs, (void)y, (void)ldy, (void)cols, (void)accumulate;
#endif
}

// A function that runs the tile instructions (the attribute lets a compiler emit them in a
// build for any x86-64 CPU; nothing else on other targets).
#if SSM_X86_DISPATCH
#define SSM_AMX_TARGET [[gnu::target("amx-tile,amx-bf16")]]
#else
#define SSM_AMX_TARGET
#endif

inline constexpr index kAmxTilePairs = 16;  // pairs of the depth a tile holds (32 bf16 values)
inline constexpr index kAmxTileRows = 16;   // rows of X a tile holds

/// `pairs` rounded up to whole tiles.
[[nodiscard]] constexpr index amx_padded_pairs(index pairs) noexcept {
    return (pairs + kAmxTilePairs - 1) / kAmxTilePairs * kAmxTilePairs;
}

/// `rows` of X rounded up to whole tiles.
[[nodiscard]] constexpr index amx_padded_rows(index rows) noexcept {
    return (rows + kAmxTileRows - 1) / kAmxTileRows * kAmxTileRows;
}

/// Up to 32 rows × 32 features of the product over the whole padded depth, in tiles: NA
/// tiles of 16 rows of X (row r of the tile at a + 2·r·lda, `lda` in pairs), NB tiles of 16
/// features of a packed block of `nv` vectors (b points at the first feature's pair 0), the
/// float32 sums stored to c (32 × 32, row stride 32). `Tiles` supplies the instructions —
/// `AmxTiles` the CPU's, a test an emulation — on tile registers 0–3 (the sums, C[i][j] in
/// 2i + j), 4–5 (X) and 6–7 (W), each configured 16 rows × 64 bytes.
template <class Tiles, int NA, int NB>
SSM_AMX_TARGET void amx_tile_block(const std::uint16_t* a, index lda, const std::uint32_t* b, index nv,
                                   index padded_pairs, float* c) noexcept {
    Tiles::template zero<0>();
    if constexpr (NB > 1) Tiles::template zero<1>();
    if constexpr (NA > 1) Tiles::template zero<2>();
    if constexpr (NA > 1 && NB > 1) Tiles::template zero<3>();
    const index a_stride = 4 * lda;  // bytes from one row of X to the next
    const index b_stride = 64 * nv;  // bytes from one pair of the block to the next
    for (index p0 = 0; p0 < padded_pairs; p0 += kAmxTilePairs) {
        Tiles::template load<4>(a + 2 * p0, a_stride);
        if constexpr (NA > 1) Tiles::template load<5>(a + 2 * (kAmxTileRows * lda + p0), a_stride);
        Tiles::template load<6>(b + p0 * nv * 16, b_stride);
        if constexpr (NB > 1) Tiles::template load<7>(b + p0 * nv * 16 + 16, b_stride);
        Tiles::template dot<0, 4, 6>();
        if constexpr (NB > 1) Tiles::template dot<1, 4, 7>();
        if constexpr (NA > 1) Tiles::template dot<2, 5, 6>();
        if constexpr (NA > 1 && NB > 1) Tiles::template dot<3, 5, 7>();
    }
    constexpr index ldc = 32 * sizeof(float);
    Tiles::template store<0>(c, ldc);
    if constexpr (NB > 1) Tiles::template store<1>(c + 16, ldc);
    if constexpr (NA > 1) Tiles::template store<2>(c + 16 * 32, ldc);
    if constexpr (NA > 1 && NB > 1) Tiles::template store<3>(c + 16 * 32 + 16, ldc);
}

/// Rows of X against one packed block of `cols` ≤ 64 features on the tiles: y (rows, cols;
/// ldy) (+)= X · Wᵀ. X is read 16 rows at a time, so rows up to `rows` rounded to 16 must be
/// readable (the callers pad them with zeros); the depth is `padded_pairs`, a multiple of
/// 16, with zeros past the true one in both operands. Between `Tiles::begin()` and `end()`.
template <class Tiles>
void amx_block(const std::uint16_t* a, index lda, index rows, const std::uint32_t* b, index padded_pairs, float* y,
               index ldy, index cols, bool accumulate) noexcept {
    const index nv = (cols + 15) / 16;
    alignas(64) float c[32 * 32];
    for (index r0 = 0; r0 < rows; r0 += 2 * kAmxTileRows) {
        const index nr = std::min<index>(2 * kAmxTileRows, rows - r0);
        const std::uint16_t* ar = a + 2 * r0 * lda;
        for (index v0 = 0; v0 < nv; v0 += 2) {
            const bool two_a = nr > kAmxTileRows, two_b = nv - v0 > 1;
            const std::uint32_t* bv = b + 16 * v0;
            if (two_a && two_b)
                amx_tile_block<Tiles, 2, 2>(ar, lda, bv, nv, padded_pairs, c);
            else if (two_a)
                amx_tile_block<Tiles, 2, 1>(ar, lda, bv, nv, padded_pairs, c);
            else if (two_b)
                amx_tile_block<Tiles, 1, 2>(ar, lda, bv, nv, padded_pairs, c);
            else
                amx_tile_block<Tiles, 1, 1>(ar, lda, bv, nv, padded_pairs, c);
            const index c0 = 16 * v0, nc = std::min<index>(32, cols - c0);
            for (index r = 0; r < nr; ++r) {
                float* dst = y + (r0 + r) * ldy + c0;
                const float* src = c + r * 32;
                if (accumulate)
                    for (index j = 0; j < nc; ++j) dst[j] += src[j];
                else
                    for (index j = 0; j < nc; ++j) dst[j] = src[j];
            }
        }
    }
}

#if SSM_AMX_DISPATCH
/// ldtilecfg's 64-byte operand (palette 1: eight tiles of at most 16 rows × 64 bytes).
struct alignas(64) AmxTileConfig {
    std::uint8_t palette_id = 1;
    std::uint8_t start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};  // bytes a row, per tile
    std::uint8_t rows[16] = {};    // rows, per tile
};
static_assert(sizeof(AmxTileConfig) == 64);

/// The CPU's tile instructions for `amx_tile_block` (the tile numbers are spelled out: the
/// compilers' macros take them as literal tokens). The configuration is a thread's own
/// state, so each thread that multiplies calls `begin()` first and `end()` (tilerelease,
/// which returns the tiles to their initial state) after.
struct AmxTiles {
    SSM_AMX_TARGET static void begin() noexcept {
        AmxTileConfig config;
        for (int t = 0; t < 8; ++t) {
            config.colsb[t] = 64;
            config.rows[t] = kAmxTileRows;
        }
        // ldtilecfg through an operand that is the whole 64-byte object: GCC 12's
        // _tile_loadconfig names only its first 8 bytes to the compiler, which then drops the
        // stores of the rows and widths as dead (seen in its -O2 output).
        __asm__ volatile("ldtilecfg %0" ::"m"(config));
    }
    SSM_AMX_TARGET static void end() noexcept { _tile_release(); }

    template <int T>
    SSM_AMX_TARGET static void zero() noexcept {
        static_assert(T >= 0 && T < 4);
        if constexpr (T == 0) _tile_zero(0);
        else if constexpr (T == 1) _tile_zero(1);
        else if constexpr (T == 2) _tile_zero(2);
        else _tile_zero(3);
    }
    template <int T>
    SSM_AMX_TARGET static void load(const void* p, index stride) noexcept {
        static_assert(T >= 4 && T < 8);
        // GCC's tileloadd names only the address, not the memory behind it, to the compiler:
        // every store before it must be done first.
        __asm__ volatile("" ::: "memory");
        if constexpr (T == 4) _tile_loadd(4, p, stride);
        else if constexpr (T == 5) _tile_loadd(5, p, stride);
        else if constexpr (T == 6) _tile_loadd(6, p, stride);
        else _tile_loadd(7, p, stride);
    }
    template <int T>
    SSM_AMX_TARGET static void store(void* p, index stride) noexcept {
        static_assert(T >= 0 && T < 4);
        if constexpr (T == 0) _tile_stored(0, p, stride);
        else if constexpr (T == 1) _tile_stored(1, p, stride);
        else if constexpr (T == 2) _tile_stored(2, p, stride);
        else _tile_stored(3, p, stride);
    }
    /// Tile C += tile A · tile B: bf16 products, float32 sums (tdpbf16ps).
    template <int C, int A, int B>
    SSM_AMX_TARGET static void dot() noexcept {
        static_assert(C == 2 * (A - 4) + (B - 6), "amx_tile_block's tile numbering");
        if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
        else if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
        else if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
        else _tile_dpbf16ps(3, 5, 7);
    }
};
#endif

}  // namespace detail

/// A bf16 weight W (N, K) in the unit's layout: blocks of 64 features, each holding for
/// every pair of inputs p the features' pairs side by side, block b at b·P·64 with P the
/// pairs rounded up to AMX's 16 (`padded_pairs`), and packed[(p·nv + v)·16 + c] = the pair p
/// of feature 64b + 16v + c (nv = the block's vectors of 16 features, zeros past N, past K
/// and up to P). Made once per weight and kept (`WeightMatrix::bf16_packed`), since
/// repacking per call would cost as much as a quarter of a prefill GEMM.
class PackedBf16 {
public:
    PackedBf16() = default;
    PackedBf16(const std::uint16_t* W, index ldw, index N, index K)
        : N_(N), K_(K), pairs_((K + 1) / 2), padded_pairs_(detail::amx_padded_pairs((K + 1) / 2)) {
        require(N >= 0 && K >= 0 && ldw >= K, "PackedBf16: bad sizes N ", N, ", K ", K);
        const index blocks = (N + detail::kBf16BlockCols - 1) / detail::kBf16BlockCols;
        data_.resize(static_cast<std::size_t>(blocks * padded_pairs_ * detail::kBf16BlockCols));
        parallel_for(blocks, 1, [&](index begin, index end) {
            for (index blk = begin; blk < end; ++blk) {
                const index n0 = blk * detail::kBf16BlockCols;
                const index nv = (std::min<index>(detail::kBf16BlockCols, N - n0) + 15) / 16;
                std::uint32_t* out = data_.data() + blk * padded_pairs_ * detail::kBf16BlockCols;
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
    [[nodiscard]] index padded_pairs() const noexcept { return padded_pairs_; }
    [[nodiscard]] const std::uint32_t* block(index b) const noexcept {
        return data_.data() + b * padded_pairs_ * detail::kBf16BlockCols;
    }
    [[nodiscard]] std::size_t bytes() const noexcept { return data_.size() * sizeof(std::uint32_t); }

private:
    index N_ = 0, K_ = 0, pairs_ = 0, padded_pairs_ = 0;
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

namespace detail {

/// The tag for `gemm_bf16_packed` / `gemm_bf16_operands` that runs the vdpbf16ps register
/// tiles (`bf16_block_cols`) instead of a tile policy (`AmxTiles`, or a test's emulation).
struct NoTiles {};

#if SSM_X86_DISPATCH
/// `gemm_bf16` over a packed W, on the vdpbf16ps kernels (`Tiles` = `NoTiles`) or on tiles.
template <class Tiles>
void gemm_bf16_packed(const float* X, index ldx, index M, const PackedBf16& W, float* Y, index ldy, bool accumulate) {
    constexpr bool tiles = !std::is_same_v<Tiles, NoTiles>;
    const index N = W.rows(), K = W.cols();
    if (M == 0 || N == 0) return;
    const index pairs = W.pairs();
    // X as bf16 (rows of 2·lda values), converted once, shared by every block; for the tiles
    // the rows are padded with zeros to the packed depth, and their count to 16.
    const index lda = tiles ? W.padded_pairs() : pairs;
    const index stored_rows = tiles ? amx_padded_rows(M) : M;
    thread_local std::vector<std::uint16_t> xb_store;
    xb_store.resize(static_cast<std::size_t>(stored_rows * 2 * lda));
    std::uint16_t* const xb = xb_store.data();
    parallel_for(stored_rows, 16, [&, xb](index begin, index end) {
        for (index r = begin; r < end; ++r) {
            std::uint16_t* row = xb + 2 * r * lda;
            if (r < M) row_to_bf16(X + r * ldx, K, row);
            std::fill(row + (r < M ? K + K % 2 : 0), row + 2 * lda, std::uint16_t{0});
        }
    });
    const index blocks = (N + kBf16BlockCols - 1) / kBf16BlockCols;
    parallel_for(blocks, 1, [&, xb](index begin, index end) {
        if constexpr (tiles) {
            Tiles::begin();
        }
        for (index blk = begin; blk < end; ++blk) {
            const index n0 = blk * kBf16BlockCols;
            const index cols = std::min<index>(kBf16BlockCols, N - n0);
            if constexpr (tiles) {
                amx_block<Tiles>(xb, lda, M, W.block(blk), W.padded_pairs(), Y + n0, ldy, cols, accumulate);
            } else {
                bf16_block_cols(xb, lda, M, W.block(blk), pairs, Y + n0, ldy, cols, accumulate);
            }
        }
        if constexpr (tiles) {
            Tiles::end();
        }
    });
}
#endif

}  // namespace detail

/// Y (M, N; row stride ldy) (+)= X (M, K; ldx) · Wᵀ with W packed (`PackedBf16`), bf16
/// products and float32 sums (X rounded to bf16 first). Needs `gemm_bf16_available()`;
/// split over the library's threads by blocks of 64 output features; on AMX's tiles where
/// the dispatch is `CpuIsa::Amx`.
inline void gemm_bf16(const float* X, index ldx, index M, const PackedBf16& W, float* Y, index ldy, bool accumulate) {
    require(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512-BF16 unit (or the dispatch was held below it)");
    const index N = W.rows(), K = W.cols();
    require(M >= 0 && ldx >= K && ldy >= N, "gemm_bf16: bad sizes M ", M, ", N ", N, ", K ", K, " (ldx ", ldx,
            ", ldy ", ldy, ")");
#if SSM_AMX_DISPATCH
    if (cpu_isa() == CpuIsa::Amx) {
        detail::gemm_bf16_packed<detail::AmxTiles>(X, ldx, M, W, Y, ldy, accumulate);
        return;
    }
#endif
#if SSM_X86_DISPATCH
    detail::gemm_bf16_packed<detail::NoTiles>(X, ldx, M, W, Y, ldy, accumulate);
#else
    (void)X, (void)Y, (void)accumulate;
#endif
}

namespace detail {

inline constexpr index kBf16TaskRows = 768;  // rows of the product per task (as gemm_f32's)

#if SSM_X86_DISPATCH
/// Rows [m0, m0 + rows) of A (K values each) to bf16, row r at out + r·2·pairs (a zero after
/// an odd K). A row that is a column of a row-major matrix (Aᵀ, row stride 1) is read 16
/// rows at a time: each k then reads 16 neighbours and rounds them in one instruction.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void operand_rows_to_bf16(
    const GemmOperand& A, index m0, index rows, index K, index pairs, std::uint16_t* out) noexcept {
    const index ld = 2 * pairs;
    if (A.col_stride == 1) {
        for (index r = 0; r < rows; ++r) row_to_bf16(A.data + (m0 + r) * A.row_stride, K, out + r * ld);
        return;
    }
    alignas(32) std::uint16_t lane[16];
    for (index r0 = 0; r0 < rows; r0 += 16) {
        const index n = std::min<index>(16, rows - r0);
        const float* base = A.data + (m0 + r0) * A.row_stride;
        std::uint16_t* dst = out + r0 * ld;
        if (A.row_stride == 1 && n == 16) {
            for (index k = 0; k < K; ++k) {
                _mm256_store_si256(reinterpret_cast<__m256i*>(lane),
                                   (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(base + k * A.col_stride)));
                for (index r = 0; r < 16; ++r) dst[r * ld + k] = lane[r];
            }
        } else {
            for (index k = 0; k < K; ++k)
                for (index r = 0; r < n; ++r) dst[r * ld + k] = f32_to_bf16(base[r * A.row_stride + k * A.col_stride]);
        }
        if (K % 2 != 0)
            for (index r = 0; r < n; ++r) dst[r * ld + K] = 0;
    }
}

/// Columns [n0, n0 + 16·nv) of B (K × N) rounded to bf16 in the unit's layout (a block of
/// `PackedBf16`): out[(p·nv + v)·16 + c] = the pair (B(2p, n), B(2p+1, n)) of column
/// n = n0 + 16v + c, zeros past N and past K. `column` is scratch for 2·pairs values.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void pack_bf16_operand(
    const GemmOperand& B, index K, index N, index n0, index nv, index pairs, std::uint32_t* out,
    std::uint16_t* column) noexcept {
    if (B.col_stride == 1 && n0 + 16 * nv <= N) {
        // Rows of B contiguous along n: two rows' 16 values rounded by one instruction, then
        // interleaved into 16 pairs by one permutation.
        alignas(64) static constexpr std::uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                                      21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                                      11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
        const __m512i order = _mm512_load_si512(kInterleave);
        for (index p = 0; p < pairs; ++p) {
            const float* lo = B.data + 2 * p * B.row_stride + n0;
            const bool odd_end = 2 * p + 1 >= K;
            for (index v = 0; v < nv; ++v) {
                const __m512 a = _mm512_loadu_ps(lo + 16 * v);
                const __m512 b = odd_end ? _mm512_setzero_ps() : _mm512_loadu_ps(lo + B.row_stride + 16 * v);
                const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // values 0–15: row 2p, 16–31: row 2p+1
                _mm512_storeu_si512(out + (p * nv + v) * 16, _mm512_permutexvar_epi16(order, h));
            }
        }
        return;
    }
    for (index v = 0; v < nv; ++v)
        for (index c = 0; c < 16; ++c) {
            const index n = n0 + 16 * v + c;
            std::uint32_t* dst = out + v * 16 + c;
            if (n >= N) {
                for (index p = 0; p < pairs; ++p) dst[p * nv * 16] = 0u;
                continue;
            }
            const float* src = B.data + n * B.col_stride;
            if (B.row_stride == 1) {
                row_to_bf16(src, K, column);  // a column of B contiguous along k (B = Wᵀ)
            } else {
                for (index k = 0; k < K; ++k) column[k] = f32_to_bf16(src[k * B.row_stride]);
                if (K % 2 != 0) column[K] = 0;
            }
            for (index p = 0; p < pairs; ++p) dst[p * nv * 16] = bf16_pair(column[2 * p], column[2 * p + 1]);
        }
}
#endif

}  // namespace detail

namespace detail {

#if SSM_X86_DISPATCH
/// `gemm_bf16` over two float32 operands, on the vdpbf16ps kernels (`Tiles` = `NoTiles`) or
/// on tiles.
template <class Tiles>
void gemm_bf16_operands(const GemmOperand& A, const GemmOperand& B, index M, index N, index K, float* C, index ldc,
                        bool accumulate) {
    constexpr bool tiles = !std::is_same_v<Tiles, NoTiles>;
    const index pairs = (K + 1) / 2;
    const index blocks = (N + kBf16BlockCols - 1) / kBf16BlockCols;
    // For the tiles both operands are padded with zeros to whole tiles of depth (P pairs),
    // and A's rows to a multiple of 16 (the 768-row tasks are whole tiles already).
    const index P = tiles ? amx_padded_pairs(pairs) : pairs;
    const index stored_rows = tiles ? amx_padded_rows(M) : M;
    thread_local std::vector<std::uint16_t> a_store;
    thread_local std::vector<std::uint32_t> b_store;
    a_store.resize(static_cast<std::size_t>(stored_rows * 2 * P));
    b_store.resize(static_cast<std::size_t>(blocks * P * kBf16BlockCols));
    std::uint16_t* const a = a_store.data();
    std::uint32_t* const b = b_store.data();
    parallel_for((stored_rows + 15) / 16, 4, [&, a](index begin, index end) {
        const index m0 = begin * 16, m1 = std::min(stored_rows, end * 16);
        const index real = std::max<index>(0, std::min(M, m1) - m0);
        if (real > 0) operand_rows_to_bf16(A, m0, real, K, P, a + m0 * 2 * P);
        if constexpr (tiles) {
            for (index r = m0; r < m1; ++r) {  // the padding: past K in each row, whole rows past M
                std::uint16_t* row = a + r * 2 * P;
                std::fill(row + (r < M ? K + K % 2 : 0), row + 2 * P, std::uint16_t{0});
            }
        }
    });
    parallel_for(blocks, 1, [&, b](index begin, index end) {
        thread_local std::vector<std::uint16_t> column;
        column.resize(static_cast<std::size_t>(2 * pairs));
        for (index blk = begin; blk < end; ++blk) {
            const index n0 = blk * kBf16BlockCols, nv = (std::min<index>(kBf16BlockCols, N - n0) + 15) / 16;
            std::uint32_t* out = b + blk * P * kBf16BlockCols;
            pack_bf16_operand(B, K, N, n0, nv, pairs, out, column.data());
            std::fill(out + pairs * nv * 16, out + P * nv * 16, 0u);  // the tiles' zero depth
        }
    });
    const index row_tasks = (M + kBf16TaskRows - 1) / kBf16TaskRows;
    parallel_for(blocks * row_tasks, 1, [&, a, b](index begin, index end) {
        if constexpr (tiles) {
            Tiles::begin();
        }
        for (index task = begin; task < end; ++task) {
            const index blk = task / row_tasks, m0 = task % row_tasks * kBf16TaskRows;
            const index rows = std::min(kBf16TaskRows, M - m0);
            const index n0 = blk * kBf16BlockCols, cols = std::min<index>(kBf16BlockCols, N - n0);
            if constexpr (tiles) {
                amx_block<Tiles>(a + m0 * 2 * P, P, rows, b + blk * P * kBf16BlockCols, P, C + m0 * ldc + n0, ldc,
                                 cols, accumulate);
            } else {
                bf16_block_cols(a + m0 * 2 * P, P, rows, b + blk * P * kBf16BlockCols, pairs, C + m0 * ldc + n0,
                                ldc, cols, accumulate);
            }
        }
        if constexpr (tiles) {
            Tiles::end();
        }
    });
}
#endif

}  // namespace detail

/// C (M, N; row stride ldc) (+)= A (M, K) · B (K, N) for float32 operands read through their
/// strides (`GemmOperand`, as `gemm_f32`), with both rounded to bf16 (to nearest even) and the
/// products summed in float32 on the bf16 unit: `Linear`'s products under
/// `MatmulPrecision::Bf16Products`. Both operands are rounded once per call (M·K + K·N
/// values against M·N·K multiply-adds); the work is split over the library's threads by
/// blocks of 64 columns and 768 rows, and each element is summed in one fixed order, so the
/// result does not depend on the number of threads. Needs `gemm_bf16_available()`; on AMX's
/// tiles where the dispatch is `CpuIsa::Amx`.
inline void gemm_bf16(const GemmOperand& A, const GemmOperand& B, index M, index N, index K, float* C, index ldc,
                      bool accumulate) {
    require(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512-BF16 unit (or the dispatch was held below it)");
    if (!detail::gemm_operands_prepare("gemm_bf16", A, B, M, N, K, C, ldc, accumulate)) return;
#if SSM_AMX_DISPATCH
    if (cpu_isa() == CpuIsa::Amx) {
        detail::gemm_bf16_operands<detail::AmxTiles>(A, B, M, N, K, C, ldc, accumulate);
        return;
    }
#endif
#if SSM_X86_DISPATCH
    detail::gemm_bf16_operands<detail::NoTiles>(A, B, M, N, K, C, ldc, accumulate);
#endif
}

/// The same with W (N, K; ldw) as bf16 bits, packed for this call.
inline void gemm_bf16(const float* X, index ldx, index M, index K, const std::uint16_t* W, index ldw, index N,
                      float* Y, index ldy, bool accumulate) {
    require(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512-BF16 unit (or the dispatch was held below it)");
    gemm_bf16(X, ldx, M, PackedBf16(W, ldw, N, K), Y, ldy, accumulate);
}

}  // namespace ssm
