// Selective scan throughput at the mamba-130m layer shape (E 1536, N 16): the sequential
// reference against the parallel scan (channels across threads) and the time-chunked
// parallel scan, at L = 512 … 32k tokens of one sequence. Reports tokens/s, state
// updates/s (one (t, e, n) element each) and the bytes/s of operands read and written,
// beside the FMA and memory ceilings measured in the same run. BM_StateUpdate: decoding's
// one-token step (`selective_state_update`) over 24 layers' states, as a token of a
// 24-layer model runs it.
#include <benchmark/benchmark.h>

#include <random>
#include <type_traits>
#include <vector>

#include <ssm/scan/selective_scan.hpp>

#include "machine_limits.hpp"

namespace {

constexpr ssm::index kE = 1536, kN = 16;

struct Operands {
    ssm::index T;
    std::vector<float> u, dt, A, BC, D, z, y;
    std::vector<ssm::index> offsets;
    explicit Operands(ssm::index t) : T(t), offsets{0, t} {
        std::mt19937 rng(7);
        auto fill = [&](std::vector<float>& v, std::size_t n, float lo, float hi) {
            std::uniform_real_distribution<float> d(lo, hi);
            v.resize(n);
            for (auto& x : v) x = d(rng);
        };
        const auto TE = static_cast<std::size_t>(T * kE);
        fill(u, TE, -1, 1);
        fill(dt, TE, 0.001f, 0.1f);
        fill(A, static_cast<std::size_t>(kE * kN), -16, -1);
        fill(BC, static_cast<std::size_t>(T * 2 * kN), -1, 1);
        fill(D, static_cast<std::size_t>(kE), 0.5f, 1.5f);
        fill(z, TE, -2, 2);
        y.assign(TE, 0.0f);
    }
    ssm::SelectiveScanArgs args() {
        ssm::SelectiveScanArgs a;
        a.T = T, a.E = kE, a.N = kN;
        a.u = u.data(), a.ld_u = kE;
        a.dt = dt.data(), a.ld_dt = kE;
        a.A = A.data();
        a.B = BC.data(), a.ld_B = 2 * kN;
        a.C = BC.data() + kN, a.ld_C = 2 * kN;
        a.D = D.data();
        a.z = z.data(), a.ld_z = kE;
        a.y = y.data(), a.ld_y = kE;
        a.offsets = offsets;
        return a;
    }
};

template <class Scan>
void BM_Scan(benchmark::State& state) {
    Operands ops(state.range(0));
    const auto args = ops.args();
    for (auto _ : state) {
        Scan::template run<ssm::MambaDiscretization>(args);
        benchmark::DoNotOptimize(ops.y.data());
    }
    const double tokens = static_cast<double>(ops.T) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    state.counters["updates/s"] = benchmark::Counter(tokens * kE * kN, benchmark::Counter::kIsRate);
    // Per token: u, dt, z read and y written (E floats each), B and C read (N each).
    state.counters["bytes/s"] = benchmark::Counter(tokens * 4.0 * (4 * kE + 2 * kN), benchmark::Counter::kIsRate);
    state.counters["threads"] = std::is_same_v<Scan, ssm::SequentialScan> ? 1 : ssm::num_threads();
}

/// One decoding token through 24 layers' selective-state updates (E 1536, N 16 each, one
/// sequence): each layer's state (96 KiB) and A advanced in place, the layers one after
/// another. Reports state updates/s.
void BM_StateUpdate(benchmark::State& state) {
    constexpr int kLayers = 24;
    Operands ops(1);
    std::vector<std::vector<float>> states(kLayers, std::vector<float>(static_cast<std::size_t>(kE * kN), 0.0f));
    auto args = ops.args();
    for (auto _ : state) {
        for (auto& s : states) ssm::selective_state_update<ssm::MambaDiscretization>(args, s.data());
        benchmark::DoNotOptimize(ops.y.data());
    }
    const double tokens = static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    state.counters["updates/s"] = benchmark::Counter(tokens * kLayers * kE * kN, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Scan, ssm::SequentialScan)->Arg(512)->Arg(2048)->Arg(8192)->Arg(32768)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Scan, ssm::ParallelScan)->Arg(512)->Arg(2048)->Arg(8192)->Arg(32768)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Scan, ssm::BasicParallelScan<true>)->Arg(512)->Arg(2048)->Arg(8192)->Arg(32768)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StateUpdate)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_MAIN();
