// benchmarks/peak_kernels.hpp — the register-resident loops that measure the compute
// ceilings (machine_limits.hpp's benchmarks and amx_probe.cpp, which runs without Google
// Benchmark): float32 FMA chains, vdpbf16ps chains and AMX tile products, one thread each.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ssm/core/cpu.hpp"
#include "ssm/core/gemm_bf16.hpp"

#if SSM_X86_DISPATCH
#include <immintrin.h>
#endif

namespace ssm::bench {

/// The vectors are the machine's own width (a wider generic vector would be lowered
/// through the stack), in as many independent chains as the registers hold beside the
/// two constants: 16 of AVX-512's 32 zmm, 12 of AVX2's 16 ymm (FMA latency 4 × 2 ports
/// needs 8 in flight).
#if defined(__AVX512F__)
using vfma = float __attribute__((vector_size(64)));
inline constexpr int kFmaChains = 16;
#elif defined(__AVX__)
using vfma = float __attribute__((vector_size(32)));
inline constexpr int kFmaChains = 12;
#else
using vfma = float __attribute__((vector_size(16)));
inline constexpr int kFmaChains = 12;
#endif

/// FLOP an iteration of `fma_chains`.
inline constexpr double kFmaChainFlop = 2.0 * static_cast<double>(sizeof(vfma) / sizeof(float)) * kFmaChains;

/// `iters` rounds of kFmaChains independent FMAs of the machine's vectors on one thread;
/// returns a value that depends on every chain and lane.
inline float fma_chains(long iters, float seed) {
    vfma acc[kFmaChains];
    for (int c = 0; c < kFmaChains; ++c) acc[c] = vfma{} + (seed + static_cast<float>(c));
    const vfma m = vfma{} + 0.999999f, a = vfma{} + 1e-7f;
    for (long i = 0; i < iters; ++i)
        for (int c = 0; c < kFmaChains; ++c) acc[c] = acc[c] * m + a;
    vfma s{};
    for (int c = 0; c < kFmaChains; ++c) s += acc[c];
    float total = 0;
    for (std::size_t l = 0; l < sizeof(vfma) / sizeof(float); ++l) total += s[l];
    return total;
}

#if SSM_X86_DISPATCH
/// `iters` rounds of 16 independent vdpbf16ps (bf16 pairs into float32 sums) on one thread;
/// returns a value that depends on every sum.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline float bf16_dot_chains(long iters, float seed) {
    constexpr int kChains = 16;
    __m512 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed + static_cast<float>(c));
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);
    for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 16
        for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
        __asm__ volatile("" : "+v"(a));  // a is opaque: the loop cannot be folded
    }
    __m512 s = acc[0];
    for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}
#endif

#if SSM_AMX_DISPATCH
/// `iters` rounds of four independent tdpbf16ps (16 × 16 float32 sums, each of 16 × 16 × 32
/// multiply-adds) on tiles loaded once, on one thread; returns one of the sums. Needs the
/// kernel's grant of the tile state first (`ssm::cpu_can_use(ssm::CpuIsa::Amx)` asks for it).
SSM_AMX_TARGET inline float amx_dot_chains(long iters) {
    // A's values 1, B's 2⁻²⁴: each product adds 2⁻¹⁹ to a sum, which stays finite.
    alignas(64) std::uint16_t ones[16 * 32], tiny[16 * 32];
    for (int i = 0; i < 16 * 32; ++i) ones[i] = 0x3f80, tiny[i] = 0x3380;
    alignas(64) float out[16 * 16];
    ssm::detail::AmxTiles::begin();
    using T = ssm::detail::AmxTiles;
    T::zero<0>();
    T::zero<1>();
    T::zero<2>();
    T::zero<3>();
    T::load<4>(ones, 64);
    T::load<5>(ones, 64);
    T::load<6>(tiny, 64);
    T::load<7>(tiny, 64);
    for (long i = 0; i < iters; ++i) {
        T::dot<0, 4, 6>();
        T::dot<1, 4, 7>();
        T::dot<2, 5, 6>();
        T::dot<3, 5, 7>();
    }
    T::store<0>(out, 64);
    ssm::detail::AmxTiles::end();
    return out[0];
}
#endif

}  // namespace ssm::bench
