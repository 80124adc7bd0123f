// benchmarks/machine_limits.hpp — the physical floor, measured in the same run as the
// figures it is compared with: peak FMA throughput and main-memory read bandwidth.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <vector>

#include "peak_kernels.hpp"
#include "ssm/core/cpu.hpp"
#include "ssm/core/threads.hpp"

namespace ssm::bench {

using v16f = float __attribute__((vector_size(64)));

/// Runs `kernel(t)` once on each thread t at the same time, per benchmark iteration, and
/// reports FLOP/s with `flop` FLOP a call.
template <class Kernel>
void peak_on_all_threads(benchmark::State& state, double flop, Kernel&& kernel) {
    double flops = 0;
    for (auto _ : state) {
        ssm::parallel_for(ssm::num_threads(), 1, [&](ssm::index b, ssm::index e) {
            for (ssm::index t = b; t < e; ++t) benchmark::DoNotOptimize(kernel(t));
        });
        flops += flop * ssm::num_threads();
    }
    state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

/// FLOP/s of dependent-free fused multiply-adds on every thread: the compute ceiling
/// (`fma_chains`).
inline void BM_PeakFma(benchmark::State& state) {
    constexpr long kIters = 1 << 22;
    peak_on_all_threads(state, kFmaChainFlop * static_cast<double>(kIters),
                        [](ssm::index t) { return fma_chains(kIters, static_cast<float>(t)); });
}

/// FLOP/s of the bf16 dot-product unit (AVX512-BF16's vdpbf16ps, 64 FLOP an instruction) on
/// every thread: the compute ceiling of the bf16 prefill GEMM. Skipped without the unit.
inline void BM_PeakBf16Dot(benchmark::State& state) {
#if SSM_X86_DISPATCH
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        state.SkipWithError("this CPU has no AVX512-BF16 unit");
        return;
    }
    constexpr long kIters = 1 << 22;
    peak_on_all_threads(state, 64.0 * 16 * static_cast<double>(kIters),
                        [](ssm::index t) { return bf16_dot_chains(kIters, static_cast<float>(t)); });
#else
    state.SkipWithError("not an x86 build");
#endif
}

/// FLOP/s of AMX's bf16 tiles (tdpbf16ps, 16 384 FLOP an instruction) on every thread: the
/// compute ceiling of `gemm_bf16` under `CpuIsa::Amx`. Skipped where the CPU or its kernel
/// offers no tiles.
inline void BM_PeakAmxBf16(benchmark::State& state) {
#if SSM_AMX_DISPATCH
    if (!ssm::cpu_can_use(ssm::CpuIsa::Amx)) {
        state.SkipWithError("this CPU (or its kernel) offers no AMX tiles");
        return;
    }
    constexpr long kIters = 1 << 18;
    peak_on_all_threads(state, 16384.0 * 4 * static_cast<double>(kIters),
                        [](ssm::index) { return amx_dot_chains(kIters); });
#else
    state.SkipWithError("not an x86 Linux build");
#endif
}

/// Bytes/s reading a 512 MiB buffer on every thread: the memory ceiling for decoding. The
/// sums are in the machine's own vector width (`vfma`), as the FMA peak's are: a 16-lane
/// vector on AVX2 goes through the stack, and the loop then measured the spills (22 GB/s
/// where the decoding kernels read 33 GB/s, on an AVX2 machine).
inline void BM_MemoryRead(benchmark::State& state) {
    const std::size_t n = (std::size_t{512} << 20) / sizeof(float);
    // Vectors of v16f, so the buffer has v16f's 64-byte alignment (a std::vector<float>
    // of this size comes from mmap at 16 bytes past a page, and aligned vector loads of
    // it fault).
    std::vector<v16f> buf(n / 16);
    for (v16f& v : buf)
        for (int j = 0; j < 16; ++j) v[j] = 1.0f;
    const vfma* data = reinterpret_cast<const vfma*>(buf.data());
    double bytes = 0;
    for (auto _ : state) {
        // Blocks of 256 bytes, 4 to 16 vectors each: [b, e) counts blocks.
        constexpr std::size_t kPerBlock = 256 / sizeof(vfma);
        ssm::parallel_for(static_cast<ssm::index>(n / 64), 1024, [&](ssm::index b, ssm::index e) {
            vfma s[kPerBlock] = {};
            const vfma* p = data + kPerBlock * static_cast<std::size_t>(b);
            for (ssm::index i = 0; i < e - b; ++i, p += kPerBlock)
                for (std::size_t k = 0; k < kPerBlock; ++k) s[k] += p[k];
            vfma t = s[0];
            for (std::size_t k = 1; k < kPerBlock; ++k) t += s[k];
            benchmark::DoNotOptimize(t);
        });
        bytes += static_cast<double>(n * sizeof(float));
    }
    state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
}

}  // namespace ssm::bench
