// benchmarks/machine_limits.hpp — the physical floor, measured in the same run as the
// figures it is compared with: peak FMA throughput and main-memory read bandwidth.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <vector>

#include "ssm/core/threads.hpp"

namespace ssm::bench {

using v16f = float __attribute__((vector_size(64)));

/// FLOP/s of dependent-free fused multiply-adds on every thread: the compute ceiling.
/// The independent chains must fit the vector registers: 16 chains of 16 floats are 16 of
/// AVX-512's 32 registers, but 32 of AVX2's 16 (the spills would halve the figure), so
/// without AVX-512 there are 6 chains, 12 registers (FMA latency 4 × 2 ports needs 8).
inline void BM_PeakFma(benchmark::State& state) {
#if defined(__AVX512F__)
    constexpr int kChains = 16;
#else
    constexpr int kChains = 6;
#endif
    constexpr long kIters = 1 << 22;
    double flops = 0;
    for (auto _ : state) {
        ssm::parallel_for(ssm::num_threads(), 1, [&](ssm::index b, ssm::index e) {
            for (ssm::index t = b; t < e; ++t) {
                v16f acc[kChains];
                for (int c = 0; c < kChains; ++c) acc[c] = v16f{} + static_cast<float>(c + t);
                const v16f m = v16f{} + 0.999999f, a = v16f{} + 1e-7f;
                for (long i = 0; i < kIters; ++i)
                    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * m + a;
                v16f s{};
                for (int c = 0; c < kChains; ++c) s += acc[c];
                benchmark::DoNotOptimize(s);
            }
        });
        flops += 2.0 * 16 * kChains * static_cast<double>(kIters) * ssm::num_threads();
    }
    state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

/// Bytes/s reading a 512 MiB buffer on every thread: the memory ceiling for decoding.
inline void BM_MemoryRead(benchmark::State& state) {
    const std::size_t n = (std::size_t{512} << 20) / sizeof(float);
    std::vector<float> buf(n, 1.0f);
    double bytes = 0;
    for (auto _ : state) {
        float total = 0;
        ssm::parallel_for(static_cast<ssm::index>(n / 64), 1024, [&](ssm::index b, ssm::index e) {
            v16f s0{}, s1{}, s2{}, s3{};
            // Blocks of 4 vectors (256 bytes): [b, e) counts blocks.
            const v16f* p = reinterpret_cast<const v16f*>(buf.data()) + 4 * b;
            for (ssm::index i = 0; i < e - b; ++i, p += 4) {
                s0 += p[0];
                s1 += p[1];
                s2 += p[2];
                s3 += p[3];
            }
            v16f s = s0 + s1 + s2 + s3;
            benchmark::DoNotOptimize(s);
        });
        benchmark::DoNotOptimize(total);
        bytes += static_cast<double>(n * sizeof(float));
    }
    state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
}

}  // namespace ssm::bench
