// Selective scan throughput at the mamba-130m layer shape (E 1536, N 16): the sequential
// reference against the parallel scan (channels across threads) and the time-chunked
// parallel scan, at L = 512 … 32k tokens of one sequence. Reports tokens/s, state
// updates/s (one (t, e, n) element each) and the bytes/s of operands read and written,
// beside the FMA and memory ceilings measured in the same run. BM_StateUpdate: decoding's
// one-token step (`selective_state_update`) over 24 layers' states, as a token of a
// 24-layer model runs it. BM_ScanTrain: training's scan (the forward that keeps
// checkpoints, then the backward) at the 130m shape; BM_ScanTrainPacked: the same over a
// retriever's packed batch of short sequences at the bundled byte retriever's shape.
#include <benchmark/benchmark.h>

#include <random>
#include <type_traits>
#include <vector>

#include <ssm/scan/selective_scan.hpp>
#include <ssm/scan/selective_scan_backward.hpp>

#include "machine_limits.hpp"

namespace {

constexpr ssm::index kE = 1536, kN = 16;

struct Operands {
    ssm::index T, E;
    std::vector<float> u, dt, A, BC, D, z, y;
    std::vector<ssm::index> offsets;
    explicit Operands(ssm::index t, ssm::index e = kE) : Operands(std::vector<ssm::index>{0, t}, e) {}
    Operands(std::vector<ssm::index> offs, ssm::index e) : T(offs.back()), E(e), offsets(std::move(offs)) {
        std::mt19937 rng(7);
        auto fill = [&](std::vector<float>& v, std::size_t n, float lo, float hi) {
            std::uniform_real_distribution<float> d(lo, hi);
            v.resize(n);
            for (auto& x : v) x = d(rng);
        };
        const auto TE = static_cast<std::size_t>(T * E);
        fill(u, TE, -1, 1);
        fill(dt, TE, 0.001f, 0.1f);
        fill(A, static_cast<std::size_t>(E * kN), -16, -1);
        fill(BC, static_cast<std::size_t>(T * 2 * kN), -1, 1);
        fill(D, static_cast<std::size_t>(E), 0.5f, 1.5f);
        fill(z, TE, -2, 2);
        y.assign(TE, 0.0f);
    }
    ssm::SelectiveScanArgs args() {
        ssm::SelectiveScanArgs a;
        a.T = T, a.E = E, a.N = kN;
        a.u = u.data(), a.ld_u = E;
        a.dt = dt.data(), a.ld_dt = E;
        a.A = A.data();
        a.B = BC.data(), a.ld_B = 2 * kN;
        a.C = BC.data() + kN, a.ld_C = 2 * kN;
        a.D = D.data();
        a.z = z.data(), a.ld_z = E;
        a.y = y.data(), a.ld_y = E;
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

/// Training's scan: `selective_scan_forward_train` (y and the state every 64 rows) then
/// `selective_scan_backward` (every gradient), channels across threads. Tokens/s counts
/// both passes; updates/s counts (t, e, n) elements of the forward once.
void scan_train(benchmark::State& state, Operands& ops) {
    const auto args = ops.args();
    const auto TE = static_cast<std::size_t>(ops.T * ops.E), TN = static_cast<std::size_t>(ops.T * kN);
    std::vector<float> dy(TE, 0.5f), du(TE), ddt(TE), dz(TE), dB(TN), dC(TN),
        dA(static_cast<std::size_t>(ops.E * kN)), dD(static_cast<std::size_t>(ops.E));
    for (std::size_t i = 0; i < TE; ++i) dy[i] = static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    ssm::SelectiveScanGrads g;
    g.dy = dy.data(), g.ld_dy = ops.E;
    g.du = du.data(), g.ld_du = ops.E;
    g.ddt = ddt.data(), g.ld_ddt = ops.E;
    g.dz = dz.data(), g.ld_dz = ops.E;
    g.dB = dB.data(), g.ld_dB = kN;
    g.dC = dC.data(), g.ld_dC = kN;
    g.dA = dA.data();
    g.dD = dD.data();
    ssm::ScanCheckpoints ck;
    for (auto _ : state) {
        ssm::selective_scan_forward_train<ssm::ParallelScan>(args, ck);
        ssm::selective_scan_backward<ssm::ParallelScan>(args, ck, g);
        benchmark::DoNotOptimize(du.data());
        benchmark::DoNotOptimize(dA.data());
    }
    const double tokens = static_cast<double>(ops.T) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    state.counters["updates/s"] = benchmark::Counter(tokens * static_cast<double>(ops.E * kN), benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

void BM_ScanTrain(benchmark::State& state) {
    Operands ops(state.range(0));
    scan_train(state, ops);
}

/// A retriever step's batch at the byte retriever's shape (E 256, N 16): 16 queries of
/// 65 bytes and 64 passages of 257, packed.
void BM_ScanTrainPacked(benchmark::State& state) {
    std::vector<ssm::index> offsets{0};
    for (int i = 0; i < 80; ++i) offsets.push_back(offsets.back() + (i < 16 ? 65 : 257));
    Operands ops(offsets, 256);
    scan_train(state, ops);
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
BENCHMARK(BM_ScanTrain)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ScanTrainPacked)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_StateUpdate)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_MAIN();
