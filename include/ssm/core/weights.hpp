// ssm/core/weights.hpp — a weight matrix stored as float32 or as bfloat16.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "ssm/core/cpu.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/gemm_bf16.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"

#if SSM_X86_DISPATCH
#include <immintrin.h>
#endif


namespace ssm {

namespace detail {

[[nodiscard]] inline float widen(float v) noexcept { return v; }
[[nodiscard]] inline float widen(std::uint16_t bf16) noexcept { return bf16_to_f32(bf16); }

#if defined(__GNUC__) || defined(__clang__)
// 16 floats: GCC and Clang map the type to AVX-512, two AVX2 or four SSE registers.
using f32x16 = float __attribute__((vector_size(64)));
using u32x16 = std::uint32_t __attribute__((vector_size(64)));
using u16x16 = std::uint16_t __attribute__((vector_size(32)));

// Vectors are passed by reference only: by value, a 64-byte vector's calling convention
// depends on whether AVX-512 is enabled (GCC's -Wpsabi).
inline void load16(f32x16& v, const float* p) noexcept { std::memcpy(&v, p, sizeof v); }
inline void load16(f32x16& v, const std::uint16_t* p) noexcept {  // bf16, widened
    u16x16 h;
    std::memcpy(&h, p, sizeof h);
    const u32x16 bits = __builtin_convertvector(h, u32x16) << 16;
    std::memcpy(&v, &bits, sizeof v);
}

/// The sum of the 16 lanes, as a tree of vector halvings (not 15 scalar adds in a row).
[[nodiscard]] inline float sum16(const f32x16& a) noexcept {
    using f32x8 = float __attribute__((vector_size(32)));
    using f32x4 = float __attribute__((vector_size(16)));
    const f32x8 s8 = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
                     __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    const f32x4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
#endif

}  // namespace detail

namespace detail {

#if SSM_X86_DISPATCH
/// acc[k][r] = 0 for the K partial sums of each of R rows.
template <int K, int R>
__attribute__((target("avx2,fma"), always_inline)) inline void zero_sums_avx2(__m256 (&acc)[K][R]) noexcept {
SSM_UNROLL(8)
    for (int k = 0; k < K; ++k)
SSM_UNROLL(8)
        for (int r = 0; r < R; ++r) acc[k][r] = _mm256_setzero_ps();
}

/// sum[r] += every lane of acc[0][r] + … + acc[K−1][r]: the K partial sums of each of R rows.
template <int K, int R>
__attribute__((target("avx2,fma"), always_inline)) inline void add_sums_avx2(const __m256 (&acc)[K][R],
                                                                              float* sum) noexcept {
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) {
        __m256 a = acc[0][r];
SSM_UNROLL(8)
        for (int k = 1; k < K; ++k) a = _mm256_add_ps(a, acc[k][r]);
        const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        sum[r] += (h[0] + h[2]) + (h[1] + h[3]);
    }
}

/// 8 weights as floats: float32 loaded, bfloat16 zero-extended and shifted into the high half.
__attribute__((target("avx2,fma"))) inline __m256 load8_avx2(const float* p) noexcept { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) inline __m256 load8_avx2(const std::uint16_t* p) noexcept {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

/// AVX2 + FMA: eight 8-lane sums in registers whatever R is (8/R chunks of 8 per row), so
/// the multiply-add latency is hidden and nothing spills — a 16-lane vector type would be
/// split in two on this instruction set and GCC moves its accumulators through the stack,
/// which halves the speed of a bfloat16 row. Adds the first `8·(n/8)` products of each row
/// to sum[r] and returns how many it took; the rest are the caller's.
template <int R, class T>
__attribute__((target("avx2,fma"))) index dot_rows_avx2(const T* w, const float* x, index ldx, index n,
                                                       float* sum) noexcept {
    constexpr int kChunks = R >= 8 ? 1 : 8 / R;
    constexpr index kStep = 8 * kChunks;
    constexpr index kPrefetchBytes = 4096;
    __m256 acc[kChunks][R];
    zero_sums_avx2(acc);
    const index main_end = n - n % kStep;
    index i = 0;
    for (; i < main_end; i += kStep) {
        // As in the portable loop: with several input rows, ask for the weight row ahead.
        if constexpr (R > 1) _mm_prefetch(reinterpret_cast<const char*>(w + i) + kPrefetchBytes, _MM_HINT_NTA);
SSM_UNROLL(8)
        for (int c = 0; c < kChunks; ++c) {
            const __m256 wv = load8_avx2(w + i + 8 * c);
SSM_UNROLL(8)
            for (int r = 0; r < R; ++r) acc[c][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * ldx + i + 8 * c), acc[c][r]);
        }
    }
    for (; i + 8 <= n; i += 8) {  // whole chunks of 8 left over (a short row: dt_proj's 48)
        const __m256 wv = load8_avx2(w + i);
SSM_UNROLL(8)
        for (int r = 0; r < R; ++r) acc[0][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * ldx + i), acc[0][r]);
    }
    add_sums_avx2(acc, sum);
    return i;
}

/// How far ahead of the row being read the AVX-512 decoding kernels ask for weights: 4 KiB
/// (into the next rows near a row's end; a prefetch past the end never faults). Without
/// it, decoding's bf16 and int8 projections read 13–14 GB/s on the Xeon of
/// docs/benchmarks.md, whose memory reads 24–29 GB/s; with it, 18–20 and 18–25 from run to
/// run. 1 and 2 KiB ahead were slower there, 8 KiB no faster.
inline constexpr index kDecodePrefetchBytes = 4096;

/// How far ahead the AVX2 int8 kernels ask for weights on an AVX2 CPU (measured best on the
/// Zen 3 of docs/benchmarks.md). On an AVX-512 CPU `dot_rows_q8` runs the AVX2 kernel with
/// `kDecodePrefetchBytes` (4 KiB), measured faster on the Xeon there.
inline constexpr index kAvx2PrefetchBytes = 2048;

/// Asks for every 64-byte line of the `Bytes` a kernel step reads, `Ahead` bytes past `p`,
/// the step's start. The rows of a matrix are contiguous, so near a row's end that is the
/// next rows' start; a prefetch past the end never faults. The decoding kernels call it once
/// a step.
template <index Bytes, index Ahead = kDecodePrefetchBytes>
[[gnu::always_inline]] inline void prefetch_ahead(const void* p) noexcept {
    const char* ahead = static_cast<const char*>(p) + Ahead;
SSM_UNROLL(8)
    for (index line = 0; line < (Bytes + 63) / 64; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
}

/// 16 weights as floats: float32 loaded, bfloat16 zero-extended and shifted into the high
/// half — one `vpmovzxwd` from memory and one shift. (GCC, which prefers 256-bit vectors on
/// these CPUs, splits the portable loop's 16-lane widening into five instructions, four of
/// them shuffles.)
__attribute__((target("avx512f,avx512bw"))) inline __m512 load16_avx512(const float* p) noexcept {
    return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f,avx512bw"))) inline __m512 load16_avx512(const std::uint16_t* p) noexcept {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
}

/// AVX-512: the structure of `dot_rows_avx2` on 16-lane registers (4/R chunks of 16 a step,
/// so at least four sums are in flight), with the weight row asked for 4 KiB ahead. Same
/// contract: adds the first `16·(n/16)` products of each row to sum[r] and returns how many
/// it took.
template <int R, class T>
__attribute__((target("avx512f,avx512bw"))) index dot_rows_avx512(const T* w, const float* x, index ldx, index n,
                                                                  float* sum) noexcept {
    constexpr int kChunks = R >= 4 ? 1 : 4 / R;
    constexpr index kStep = 16 * kChunks;
    __m512 acc[kChunks][R];
SSM_UNROLL(8)
    for (int c = 0; c < kChunks; ++c)
SSM_UNROLL(8)
        for (int r = 0; r < R; ++r) acc[c][r] = _mm512_setzero_ps();
    const index main_end = n - n % kStep;
    index i = 0;
    for (; i < main_end; i += kStep) {
        prefetch_ahead<kStep * static_cast<index>(sizeof(T))>(w + i);
SSM_UNROLL(8)
        for (int c = 0; c < kChunks; ++c) {
            const __m512 wv = load16_avx512(w + i + 16 * c);
SSM_UNROLL(8)
            for (int r = 0; r < R; ++r)
                acc[c][r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * ldx + i + 16 * c), acc[c][r]);
        }
    }
    for (; i + 16 <= n; i += 16) {  // whole chunks of 16 left over (a short row: dt_proj's 48)
        const __m512 wv = load16_avx512(w + i);
SSM_UNROLL(8)
        for (int r = 0; r < R; ++r) acc[0][r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * ldx + i), acc[0][r]);
    }
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) {
        __m512 a = acc[0][r];
SSM_UNROLL(8)
        for (int c = 1; c < kChunks; ++c) a = _mm512_add_ps(a, acc[c][r]);
        sum[r] += _mm512_reduce_add_ps(a);
    }
    return i;
}
#endif

/// Portable: GCC and Clang vectorise it as far as the compiler's flags allow (16-lane
/// vectors: one AVX-512 register each when the compiler targets AVX-512). Same contract as
/// `dot_rows_avx2`.
template <int R, class T>
inline index dot_rows_vector(const T* w, const float* x, index ldx, index n, float* sum) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    constexpr index kStep = 16 * (R >= 4 ? 1 : 4 / R);  // ≥ 4 independent sums per step
    constexpr int kChunks = static_cast<int>(kStep / 16);
    constexpr index kPrefetchBytes = 4096;
    const index vector_end = n - n % kStep;
    f32x16 acc[kChunks][R] = {};
    for (index i = 0; i < vector_end; i += kStep) {
        // Several rows make each weight byte take longer, and the input rows' own streams
        // crowd the hardware prefetcher: ask for the weight row 4 KiB ahead (into the next
        // row at its end), or the loop waits on memory at a fraction of its bandwidth.
        if constexpr (R > 1) __builtin_prefetch(reinterpret_cast<const char*>(w + i) + kPrefetchBytes, 0, 0);
        for (int c = 0; c < kChunks; ++c) {
            f32x16 wv, xv;
            load16(wv, w + i + 16 * c);
            for (int r = 0; r < R; ++r) {
                load16(xv, x + r * ldx + i + 16 * c);
                acc[c][r] += wv * xv;
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        f32x16 a = acc[0][r];
        for (int c = 1; c < kChunks; ++c) a += acc[c][r];
        sum[r] += sum16(a);
    }
    return vector_end;
#else
    (void)w, (void)x, (void)ldx, (void)n, (void)sum;
    return 0;
#endif
}

}  // namespace detail

/// out[r] = Σᵢ w[i] · x[r·ldx + i] for R input rows at once, with `w` float32 or bfloat16
/// (widened as it is read, no buffer): each chunk of the weight row is loaded once and
/// meets all R rows, and there are enough independent sums to hide the multiply-add
/// latency. What decoding does with every weight row. The kernel follows `cpu_isa()`:
/// AVX-512 (weights asked for ahead), AVX2 + FMA, or the portable loop (scalar without
/// GCC/Clang), whatever the build's own target.
template <int R, class T>
inline void dot_rows(const T* w, const float* x, index ldx, index n, float* out) noexcept {
    float sum[R] = {};
    index done = 0;  // [0, done) summed by a vector kernel, the rest one by one
#if SSM_X86_DISPATCH
    switch (cpu_isa()) {
        case CpuIsa::Amx:
        case CpuIsa::Avx512Bf16:
        case CpuIsa::Avx512: done = detail::dot_rows_avx512<R>(w, x, ldx, n, sum); break;
        case CpuIsa::Avx2: done = detail::dot_rows_avx2<R>(w, x, ldx, n, sum); break;
        default: done = detail::dot_rows_vector<R>(w, x, ldx, n, sum); break;
    }
#else
    done = detail::dot_rows_vector<R>(w, x, ldx, n, sum);
#endif
    for (index i = done; i < n; ++i) {
        const float wv = detail::widen(w[i]);
        for (int r = 0; r < R; ++r) sum[r] += wv * x[r * ldx + i];
    }
    for (int r = 0; r < R; ++r) out[r] = sum[r];
}

/// How a weight matrix is stored: float32, bfloat16 (half the bytes, 8 significant bits),
/// or 8-bit integers with one float32 scale per block of `kInt8Block` values along a row
/// (symmetric, as llama.cpp's Q8_0: 1.125 bytes a weight, error at most half a step of
/// the block's largest magnitude / 127). `Int8Activations` stores the same int8 blocks and
/// also rounds the activations to int8 blocks where decoding multiplies them (a few rows:
/// `dot_rows_q8`), so each block's products are exact integer sums, as in llama.cpp's
/// Q8_0 × Q8_0 products: faster on CPUs that widen int8 slowly, at the accuracy cost
/// docs/benchmarks.md measures. Prefill (many rows) keeps float32 activations.
enum class WeightFormat { F32, BF16, Int8, Int8Activations };

/// Values per int8 block (one scale each).
inline constexpr index kInt8Block = 32;

namespace detail {

// The int8 kernels over the `full` whole blocks of a row, adding each row's sum to sum[r]:
// one per instruction set, picked at run time by `dot_rows_int8`.

/// Portable: GCC and Clang vectorise it as far as the compiler's flags allow.
template <int R>
inline void dot_rows_int8_generic(const std::int8_t* q, const float* scale, const float* x, index ldx, index full,
                                  float* sum) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    using i8x16 = std::int8_t __attribute__((vector_size(16)));
    f32x16 acc[R] = {};
    for (index b = 0; b < full; ++b) {
        const std::int8_t* qb = q + b * kInt8Block;
        i8x16 q0, q1;
        std::memcpy(&q0, qb, sizeof q0);
        std::memcpy(&q1, qb + 16, sizeof q1);
        const f32x16 w0 = __builtin_convertvector(q0, f32x16);
        const f32x16 w1 = __builtin_convertvector(q1, f32x16);
        const float s = scale[b];
        for (int r = 0; r < R; ++r) {
            f32x16 x0, x1;
            load16(x0, x + r * ldx + b * kInt8Block);
            load16(x1, x + r * ldx + b * kInt8Block + 16);
            acc[r] += (w0 * x0 + w1 * x1) * s;
        }
    }
    for (int r = 0; r < R; ++r) sum[r] += sum16(acc[r]);
#else
    for (index b = 0; b < full; ++b)
        for (int r = 0; r < R; ++r) {
            float block = 0.0f;
            for (index i = b * kInt8Block; i < (b + 1) * kInt8Block; ++i) block += static_cast<float>(q[i]) * x[r * ldx + i];
            sum[r] += block * scale[b];
        }
#endif
}

#if SSM_X86_DISPATCH
/// One block of 32 int8 weights against R rows: acc[r] += (Σ w·x) · scale.
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void int8_block_avx2(const std::int8_t* qb, const float* s,
                                                                                const float* x, index ldx,
                                                                                __m256* acc) noexcept {
    __m256 w[4];
SSM_UNROLL(8)
    for (int j = 0; j < 4; ++j)
        w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qb + 8 * j))));
    const __m256 scale = _mm256_broadcast_ss(s);
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) {
        const float* xr = x + r * ldx;
        const __m256 t = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xr + 8), _mm256_mul_ps(w[0], _mm256_loadu_ps(xr)));
        const __m256 u = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xr + 24), _mm256_mul_ps(w[2], _mm256_loadu_ps(xr + 16)));
        acc[r] = _mm256_fmadd_ps(_mm256_add_ps(t, u), scale, acc[r]);
    }
}

/// AVX2 + FMA: sign-extends and converts 8 int8 values at a time (without AVX-512 a compiler
/// widens an int8 vector one element at a time, a tenth of the speed the memory allows).
/// Each step takes 4/R blocks (at least one), each with its own sums per row, so at least
/// four sums are in flight; their indices are constants once the loops are unrolled, so the
/// sums stay in registers (indexed by a block's parity, they went through the stack). The
/// weights are asked for 2 KiB ahead (`kAvx2PrefetchBytes`), as in `dot_rows_q8_avx2`.
template <int R>
__attribute__((target("avx2,fma"))) void dot_rows_int8_avx2(const std::int8_t* q, const float* scale,
                                                            const float* x, index ldx, index full,
                                                            float* sum) noexcept {
    constexpr int kBlocks = R >= 4 ? 1 : 4 / R;
    __m256 acc[kBlocks][R];
    zero_sums_avx2(acc);
    index b = 0;
    for (; b + kBlocks <= full; b += kBlocks) {
        prefetch_ahead<kBlocks * kInt8Block, kAvx2PrefetchBytes>(q + b * kInt8Block);
SSM_UNROLL(8)
        for (int k = 0; k < kBlocks; ++k)
            int8_block_avx2<R>(q + (b + k) * kInt8Block, scale + b + k, x + (b + k) * kInt8Block, ldx, acc[k]);
    }
    for (; b < full; ++b) int8_block_avx2<R>(q + b * kInt8Block, scale + b, x + b * kInt8Block, ldx, acc[0]);
    add_sums_avx2(acc, sum);
}

/// AVX-512: 16 int8 values sign-extended and converted at a time, one block in two halves;
/// the weights asked for 4 KiB ahead, as in `dot_rows_avx512`.
template <int R>
__attribute__((target("avx512f,avx512bw"))) void dot_rows_int8_avx512(const std::int8_t* q, const float* scale,
                                                                      const float* x, index ldx, index full,
                                                                      float* sum) noexcept {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (index b = 0; b < full; ++b) {
        const std::int8_t* qb = q + b * kInt8Block;
        if (b % 2 == 0) prefetch_ahead<64>(qb);  // a line holds two blocks
        const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qb))));
        const __m512 w1 =
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qb + 16))));
        const __m512 s = _mm512_set1_ps(scale[b]);
        for (int r = 0; r < R; ++r) {
            const float* xr = x + r * ldx + b * kInt8Block;
            const __m512 t = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(xr)));
            acc[r] = _mm512_fmadd_ps(t, s, acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) sum[r] += _mm512_reduce_add_ps(acc[r]);
}
#endif

}  // namespace detail

/// out[r] = Σᵢ w[i] · x[r·ldx + i] for R input rows, with w given as int8 values `q` and one
/// scale per block of `kInt8Block` (w[i] = q[i] · scale[i / kInt8Block]): each block's 32
/// products are summed in float32, then scaled once. The int8 row is read once and meets all
/// R rows (what decoding does with every weight row, at a quarter of float32's bytes). The
/// whole blocks run through the kernel of `cpu_isa()` (AVX-512, AVX2 + FMA, or portable).
template <int R>
inline void dot_rows_int8(const std::int8_t* q, const float* scale, const float* x, index ldx,
                          index n, float* out) noexcept {
    float sum[R] = {};
    const index full = n / kInt8Block;  // whole blocks; the rest one by one
    switch (cpu_isa()) {
#if SSM_X86_DISPATCH
        case CpuIsa::Amx:
        case CpuIsa::Avx512Bf16:
        case CpuIsa::Avx512: detail::dot_rows_int8_avx512<R>(q, scale, x, ldx, full, sum); break;
        case CpuIsa::Avx2: detail::dot_rows_int8_avx2<R>(q, scale, x, ldx, full, sum); break;
#endif
        default: detail::dot_rows_int8_generic<R>(q, scale, x, ldx, full, sum); break;
    }
    if (full * kInt8Block < n) {  // a partial last block
        const float s = scale[full];
        for (int r = 0; r < R; ++r) {
            float block = 0.0f;
            for (index i = full * kInt8Block; i < n; ++i) block += static_cast<float>(q[i]) * x[r * ldx + i];
            sum[r] += block * s;
        }
    }
    for (int r = 0; r < R; ++r) out[r] = sum[r];
}

namespace detail {

/// One block of `count` ≤ `kInt8Block` activations rounded to int8 (`quantize_int8_blocks`);
/// returns its scale. A block holding an infinity or a NaN gets scale NaN and zeros, so
/// every product with it is NaN, as in float32, and no non-finite value is cast to int8. A
/// block whose largest magnitude is so small that 127 / max|x| overflows (below about
/// 3.7·10⁻³⁷, zero included) is all zeros with scale 0.
inline float quantize_block_generic(const float* x, index count, std::int8_t* xq) noexcept {
    float amax = 0.0f;
    bool finite = true;
    for (index i = 0; i < count; ++i) {
        const float a = std::abs(x[i]);
        finite = finite && a <= std::numeric_limits<float>::max();
        amax = std::max(amax, a);
    }
    const float inv = 127.0f / amax;
    if (!finite || !(inv <= std::numeric_limits<float>::max())) {
        std::fill(xq, xq + kInt8Block, std::int8_t{0});
        return finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
    }
    for (index i = 0; i < count; ++i)
        xq[i] = static_cast<std::int8_t>(std::clamp(std::nearbyint(x[i] * inv), -127.0f, 127.0f));
    std::fill(xq + count, xq + kInt8Block, std::int8_t{0});
    return amax / 127.0f;
}

#if SSM_X86_DISPATCH
/// AVX2: one whole block, the same values as `quantize_block_generic` (the same product
/// x · (127 / max|x|), rounded to nearest even by the conversion as by `nearbyint`).
__attribute__((target("avx2,fma"))) inline float quantize_block_avx2(const float* x, std::int8_t* xq) noexcept {
    const __m256 sign = _mm256_set1_ps(-0.0f), largest = _mm256_set1_ps(std::numeric_limits<float>::max());
    __m256 v[4], m = _mm256_setzero_ps(), ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
SSM_UNROLL(4)
    for (int j = 0; j < 4; ++j) {
        v[j] = _mm256_loadu_ps(x + 8 * j);
        const __m256 a = _mm256_andnot_ps(sign, v[j]);
        ok = _mm256_and_ps(ok, _mm256_cmp_ps(a, largest, _CMP_LE_OQ));  // false for ±inf and NaN
        m = _mm256_max_ps(m, a);
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h), inv1 = 127.0f / amax;
    const bool finite = _mm256_movemask_ps(ok) == 0xFF;
    if (!finite || !(inv1 <= std::numeric_limits<float>::max())) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq), _mm256_setzero_si256());
        return finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
    }
    const __m256 inv = _mm256_set1_ps(inv1);
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i q[4];
SSM_UNROLL(4)
    for (int j = 0; j < 4; ++j)
        q[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[j], inv), lo), hi));
    // Packing works within 128-bit halves: groups of four come out as q0 q1 q2 q3 (low
    // halves), then the high halves; one permutation puts them back in order.
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq),
                        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return amax / 127.0f;
}
#endif

}  // namespace detail

/// Rounds `n` activations to int8 blocks as `dot_rows_q8` reads them: per block of
/// `kInt8Block` values, scale = max|x| / 127 and xq = round(x · 127 / max|x|) (so |xq| ≤
/// 127; an all-zero block, or one below about 3.7·10⁻³⁷, has scale 0 and zeros; a block with
/// an infinity or a NaN has scale NaN and zeros).
/// `xq` gets `blocks · kInt8Block` values, a partial last block padded with zeros; `scale`
/// one value per block, blocks = ⌈n / kInt8Block⌉. AVX2 where the CPU has it, with the
/// same results as the portable code.
inline void quantize_int8_blocks(const float* x, index n, std::int8_t* xq, float* scale) noexcept {
    const index full = n / kInt8Block;
    index b = 0;
#if SSM_X86_DISPATCH
    if (cpu_isa() >= CpuIsa::Avx2)
        for (; b < full; ++b) scale[b] = detail::quantize_block_avx2(x + b * kInt8Block, xq + b * kInt8Block);
#endif
    for (; b < full; ++b) scale[b] = detail::quantize_block_generic(x + b * kInt8Block, kInt8Block, xq + b * kInt8Block);
    if (full * kInt8Block < n)
        scale[full] = detail::quantize_block_generic(x + full * kInt8Block, n - full * kInt8Block, xq + full * kInt8Block);
}

namespace detail {

/// Portable: each block's 32 products summed exactly in int32, then scaled.
template <int R>
inline void dot_rows_q8_generic(const std::int8_t* q, const float* wscale, const std::int8_t* xq,
                                const float* xscale, index ldx, index lds, index blocks, float* sum) noexcept {
    for (index b = 0; b < blocks; ++b) {
        const std::int8_t* qb = q + b * kInt8Block;
        for (int r = 0; r < R; ++r) {
            const std::int8_t* xb = xq + r * ldx + b * kInt8Block;
            std::int32_t s = 0;
            for (index i = 0; i < kInt8Block; ++i) s += static_cast<std::int32_t>(qb[i]) * xb[i];
            sum[r] += static_cast<float>(s) * (wscale[b] * xscale[r * lds + b]);
        }
    }
}

#if SSM_X86_DISPATCH
/// One block of 32 int8 weights against R rows of int8 activations: |w| (unsigned) times
/// x·sign(w) (signed) in pairs (vpmaddubsw: at most 2·127·128 a pair, no saturation), the
/// pairs summed to 8 int32 (vpmaddwd), converted once and scaled: acc[r] += sums · scale.
template <int R>
__attribute__((target("avx2,fma"), always_inline)) inline void q8_block_avx2(const std::int8_t* qb, float wscale,
                                                                              const std::int8_t* xb,
                                                                              const float* xscale, index ldx,
                                                                              index lds, __m256* acc) noexcept {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb));
    const __m256i aw = _mm256_sign_epi8(w, w);
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + r * ldx));
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(wscale * xscale[r * lds]), acc[r]);
    }
}

/// AVX2: 32 weights take four integer instructions where the float32 path widens, converts
/// and multiply-adds each 8. 4/R blocks a step, as in `dot_rows_int8_avx2`, so four sums
/// are in flight. At this rate the hardware prefetcher alone leaves the loop waiting on
/// memory, so each step asks for the weights `Ahead` bytes ahead (the rows of a matrix are
/// contiguous, so that is the next rows' start; a prefetch past the end never faults).
/// Measured in `bench_model` (`BM_DecodeProjections/4`): see docs/benchmarks.md.
template <int R, index Ahead = kAvx2PrefetchBytes>
__attribute__((target("avx2,fma"))) void dot_rows_q8_avx2(const std::int8_t* q, const float* wscale,
                                                          const std::int8_t* xq, const float* xscale, index ldx,
                                                          index lds, index blocks, float* sum) noexcept {
    constexpr int kBlocks = R >= 4 ? 1 : 4 / R;
    __m256 acc[kBlocks][R];
    zero_sums_avx2(acc);
    index b = 0;
    for (; b + kBlocks <= blocks; b += kBlocks) {
        prefetch_ahead<kBlocks * kInt8Block, Ahead>(q + b * kInt8Block);
SSM_UNROLL(8)
        for (int k = 0; k < kBlocks; ++k)
            q8_block_avx2<R>(q + (b + k) * kInt8Block, wscale[b + k], xq + (b + k) * kInt8Block, xscale + b + k,
                             ldx, lds, acc[k]);
    }
    // Fewer than kBlocks left (a bound GCC can see: with `b < blocks` alone it warns at -O3).
    for (int k = 1; k < kBlocks && b < blocks; ++k, ++b)
        q8_block_avx2<R>(q + b * kInt8Block, wscale[b], xq + b * kInt8Block, xscale + b, ldx, lds, acc[0]);
    add_sums_avx2(acc, sum);
}

/// Two int8 blocks (64 weights, `bytes` of them read: all, or the first block's 32) against R
/// rows of int8 activations: |w| times x·sign(w) summed four products a lane by one
/// `vpdpbusd` — the same exact integer per lane as vpmaddubsw + vpmaddwd — then lanes 0–7
/// scaled by the first block's wscale · xscale and 8–15 by the second's (`ws1`, `xs1`:
/// zero for a missing second block): acc[r] += sums · scales.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) inline void q8_block_pair_vnni(
    const std::int8_t* qb, __mmask64 bytes, float ws0, float ws1, const std::int8_t* xb, const float* xs0,
    const float* xs1, index ldx, index lds, __m512* acc) noexcept {
    constexpr __mmask16 kSecond = 0xFF00;  // the second block's lanes
    const __m512i zero = _mm512_setzero_si512();
    const __m512i w = _mm512_maskz_loadu_epi8(bytes, qb);
    const __m512i aw = _mm512_abs_epi8(w);
    const __mmask64 negative = _mm512_movepi8_mask(w);
    const __m512 ws = _mm512_mask_mov_ps(_mm512_set1_ps(ws0), kSecond, _mm512_set1_ps(ws1));
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) {
        const __m512i x = _mm512_maskz_loadu_epi8(bytes, xb + r * ldx);
        const __m512i sums = _mm512_dpbusd_epi32(zero, aw, _mm512_mask_sub_epi8(x, negative, zero, x));
        const __m512 xs =
            _mm512_mask_mov_ps(_mm512_set1_ps(xs0[r * lds]), kSecond, _mm512_set1_ps(xs1 ? xs1[r * lds] : 0.0f));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(ws, xs), acc[r]);
    }
}

/// The AVX-512 VNNI form of `dot_rows_q8_avx2` (same contract): two blocks a step, half the
/// instructions a weight; an odd last block read through a 32-byte mask. The weights are
/// asked for 4 KiB ahead.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dot_rows_q8_vnni(const std::int8_t* q,
                                                                             const float* wscale,
                                                                             const std::int8_t* xq,
                                                                             const float* xscale, index ldx,
                                                                             index lds, index blocks,
                                                                             float* sum) noexcept {
    __m512 acc[R];
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    index b = 0;
    for (; b + 2 <= blocks; b += 2) {
        prefetch_ahead<64>(q + b * kInt8Block);
        q8_block_pair_vnni<R>(q + b * kInt8Block, ~__mmask64{0}, wscale[b], wscale[b + 1], xq + b * kInt8Block,
                              xscale + b, xscale + b + 1, ldx, lds, acc);
    }
    if (b < blocks)
        q8_block_pair_vnni<R>(q + b * kInt8Block, __mmask64{0xFFFFFFFF}, wscale[b], 0.0f, xq + b * kInt8Block,
                              xscale + b, nullptr, ldx, lds, acc);
SSM_UNROLL(8)
    for (int r = 0; r < R; ++r) sum[r] += _mm512_reduce_add_ps(acc[r]);
}
#endif

}  // namespace detail

/// out[r] = Σ_b wscale[b] · xscale[r·lds + b] · Σ_{i in block b} q[i] · xq[r·ldx + i]: int8
/// weights against R rows of int8 activations (`quantize_int8_blocks`), `blocks` blocks of
/// `kInt8Block` (both padded with zeros past the row's end). Each block's sum is an exact
/// integer; the scaled sums add in float32. `ldx` is an activation row's stride in values,
/// `lds` its scales' stride. On an AVX-512 dispatch, the VNNI kernel where the CPU has
/// AVX512-VNNI, else the AVX2 kernel asking for the weights 4 KiB ahead instead of 2; the
/// AVX2 kernel on an AVX2 dispatch; portable code elsewhere.
template <int R>
inline void dot_rows_q8(const std::int8_t* q, const float* wscale, const std::int8_t* xq, const float* xscale,
                        index ldx, index lds, index blocks, float* out) noexcept {
    float sum[R] = {};
    switch (cpu_isa()) {
#if SSM_X86_DISPATCH
        case CpuIsa::Amx:
        case CpuIsa::Avx512Bf16:
        case CpuIsa::Avx512:
            if (cpu_has_avx512_vnni())
                detail::dot_rows_q8_vnni<R>(q, wscale, xq, xscale, ldx, lds, blocks, sum);
            else
                detail::dot_rows_q8_avx2<R, detail::kDecodePrefetchBytes>(q, wscale, xq, xscale, ldx, lds, blocks,
                                                                          sum);
            break;
        case CpuIsa::Avx2: detail::dot_rows_q8_avx2<R>(q, wscale, xq, xscale, ldx, lds, blocks, sum); break;
#endif
        default: detail::dot_rows_q8_generic<R>(q, wscale, xq, xscale, ldx, lds, blocks, sum); break;
    }
    for (int r = 0; r < R; ++r) out[r] = sum[r];
}

/// A (rows, cols) row-major weight matrix: float32 (a `Tensor`, possibly a zero-copy view of
/// a mapped checkpoint), bfloat16 — half the bytes — or int8 blocks with float32 scales (see
/// `WeightFormat`), widened to float32 a block of rows at a time where it is used, so the
/// arithmetic stays float32. Copies share the storage.
class WeightMatrix {
public:
    WeightMatrix() = default;
    explicit WeightMatrix(Tensor t) : f32_(std::move(t)) {
        require(f32_.rank() == 2, "WeightMatrix: must be 2-D, got ", shape_string(f32_.shape()));
        rows_ = f32_.dim(0);
        cols_ = f32_.dim(1);
    }

    /// The same matrix in bfloat16, each value rounded to nearest even (exact for a matrix
    /// that came from a BF16 checkpoint). A bfloat16 matrix is returned as it is.
    [[nodiscard]] WeightMatrix to_bf16() const {
        if (is_bf16()) return *this;
        WeightMatrix w;
        w.rows_ = rows_;
        w.cols_ = cols_;
        auto bits = std::make_shared<std::vector<std::uint16_t>>(static_cast<std::size_t>(rows_ * cols_));
        const float* src = f32_.data();
        std::uint16_t* dst = bits->data();
        parallel_for(rows_ * cols_, 1 << 16, [&](index b, index e) {
            for (index i = b; i < e; ++i) dst[i] = f32_to_bf16(src[i]);
        });
        w.bf16_ = std::move(bits);
        w.bf16_packed_ = std::make_shared<Bf16Packed>();
        return w;
    }

    /// The same matrix as int8 blocks: per block of `kInt8Block` values along a row, scale =
    /// max|w| / 127 and q = round(w / scale), so |w − q·scale| ≤ scale / 2, rounded as
    /// `quantize_int8_blocks` rounds activations (a block with an infinity or a NaN: scale NaN,
    /// q zero). A bfloat16 matrix is quantised from its widened values; an int8 one is
    /// returned as it is.
    [[nodiscard]] WeightMatrix to_int8() const {
        if (is_int8()) {
            WeightMatrix w = *this;
            w.int8_activations_ = false;
            return w;
        }
        WeightMatrix w;
        w.rows_ = rows_;
        w.cols_ = cols_;
        const index blocks = int8_blocks_per_row();
        auto q = std::make_shared<std::vector<std::int8_t>>(static_cast<std::size_t>(rows_ * blocks * kInt8Block), 0);
        auto scales = std::make_shared<std::vector<float>>(static_cast<std::size_t>(rows_ * blocks), 0.0f);
        parallel_for(rows_, 16, [&](index r0, index r1) {
            std::vector<float> row(static_cast<std::size_t>(cols_));
            for (index r = r0; r < r1; ++r) {
                rows_f32(r, 1, row.data());
                quantize_int8_blocks(row.data(), cols_, q->data() + r * blocks * kInt8Block,
                                     scales->data() + r * blocks);
            }
        });
        w.int8_ = std::move(q);
        w.int8_scales_ = std::move(scales);
        return w;
    }

    /// `to_int8`, and decoding's products with this matrix round their activations to int8
    /// blocks too (`WeightFormat::Int8Activations`).
    [[nodiscard]] WeightMatrix to_int8_activations() const {
        WeightMatrix w = to_int8();
        w.int8_activations_ = true;
        return w;
    }

    /// The matrix in `format` (see `to_bf16`, `to_int8`); float32 only from float32.
    [[nodiscard]] WeightMatrix to(WeightFormat format) const {
        switch (format) {
            case WeightFormat::BF16: return to_bf16();
            case WeightFormat::Int8: return to_int8();
            case WeightFormat::Int8Activations: return to_int8_activations();
            case WeightFormat::F32: break;
        }
        require(this->format() == WeightFormat::F32,
                "WeightMatrix: a matrix stored in 16 or 8 bits cannot be made float32 again");
        return *this;
    }

    [[nodiscard]] WeightFormat format() const noexcept {
        if (is_int8()) return int8_activations_ ? WeightFormat::Int8Activations : WeightFormat::Int8;
        return is_bf16() ? WeightFormat::BF16 : WeightFormat::F32;
    }
    [[nodiscard]] bool is_int8() const noexcept { return int8_ != nullptr; }
    /// Int8 blocks per row (the last may be partial; its unused values are zero).
    [[nodiscard]] index int8_blocks_per_row() const noexcept { return (cols_ + kInt8Block - 1) / kInt8Block; }
    /// Row r of an int8 matrix: `int8_blocks_per_row() · kInt8Block` values, and its scales.
    [[nodiscard]] const std::int8_t* int8_row(index r) const noexcept {
        return int8_->data() + r * int8_blocks_per_row() * kInt8Block;
    }
    [[nodiscard]] const float* int8_scales(index r) const noexcept {
        return int8_scales_->data() + r * int8_blocks_per_row();
    }

    [[nodiscard]] bool is_bf16() const noexcept { return bf16_ != nullptr; }
    [[nodiscard]] index rows() const noexcept { return rows_; }
    [[nodiscard]] index cols() const noexcept { return cols_; }
    /// Bytes of storage (what a matrix-vector product reads).
    [[nodiscard]] std::size_t bytes() const noexcept {
        if (is_int8())
            return static_cast<std::size_t>(rows_ * int8_blocks_per_row()) * (kInt8Block + sizeof(float));
        return static_cast<std::size_t>(rows_ * cols_) * (is_bf16() ? 2 : 4);
    }

    /// Row r's values (cols of them) in storage: float32 or bfloat16 bits.
    [[nodiscard]] const float* f32_row(index r) const noexcept { return f32_.data() + r * cols_; }

    /// The float32 matrix; only for float32 storage.
    [[nodiscard]] ConstMatrixMap f32() const {
        require(format() == WeightFormat::F32, "WeightMatrix::f32: the matrix is stored as ",
                is_bf16() ? "bfloat16" : "int8");
        return f32_.matrix();
    }

    /// Row r of a bfloat16 matrix (cols bf16 values); only for bfloat16 storage.
    [[nodiscard]] const std::uint16_t* bf16_row(index r) const noexcept { return bf16_->data() + r * cols_; }

    /// The bfloat16 matrix in the bf16 dot-product unit's layout (`gemm_bf16`): packed on
    /// first use (thread-safe) and kept, shared by every copy of this matrix, so a prefill
    /// GEMM does not repack it. Costs as much memory again as the bfloat16 matrix; a
    /// matrix that only decodes (few rows) never packs.
    [[nodiscard]] const PackedBf16& bf16_packed() const {
        require(is_bf16() && bf16_packed_, "WeightMatrix::bf16_packed: the matrix is not stored in bfloat16");
        std::call_once(bf16_packed_->once,
                       [&] { bf16_packed_->packed = PackedBf16(bf16_->data(), cols_, rows_, cols_); });
        return bf16_packed_->packed;
    }

    /// Rows [r0, r0 + n) as float32 into `dst` (n × cols, contiguous rows).
    void rows_f32(index r0, index n, float* dst) const noexcept {
        const std::size_t count = static_cast<std::size_t>(n * cols_);
        if (is_int8()) {
            for (index r = 0; r < n; ++r) {
                const std::int8_t* q = int8_row(r0 + r);
                const float* scale = int8_scales(r0 + r);
                float* out = dst + r * cols_;
                for (index i = 0; i < cols_; ++i) out[i] = static_cast<float>(q[i]) * scale[i / kInt8Block];
            }
            return;
        }
        if (!is_bf16()) {
            std::memcpy(dst, f32_.data() + r0 * cols_, count * sizeof(float));
            return;
        }
        const std::uint16_t* src = bf16_->data() + r0 * cols_;
        for (std::size_t i = 0; i < count; ++i)  // vectorises: a shift per element
            dst[i] = bf16_to_f32(src[i]);
    }

private:
    struct Bf16Packed {
        std::once_flag once;
        PackedBf16 packed;
    };

    Tensor f32_;                                              // float32 storage, or empty
    std::shared_ptr<const std::vector<std::uint16_t>> bf16_;  // bfloat16 storage, or null
    std::shared_ptr<Bf16Packed> bf16_packed_;                 // with bf16_: its unit layout, made on first use
    std::shared_ptr<const std::vector<std::int8_t>> int8_;    // (rows, blocks·kInt8Block), or null
    std::shared_ptr<const std::vector<float>> int8_scales_;   // (rows, blocks)
    bool int8_activations_ = false;                           // with int8_: WeightFormat::Int8Activations
    index rows_ = 0, cols_ = 0;
};

}  // namespace ssm
