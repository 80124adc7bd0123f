// One Mamba layer's prefill operations one at a time, at the mamba-130m shape (D 768,
// E 1536, N 16, dt_rank 48, K 4) over one sequence of L tokens, on all threads: the
// residual add + RMSNorm, in_proj, the causal conv + SiLU, x_proj, dt_proj, softplus, the
// selective scan, out_proj. Float32 weights and activations, as `bench_model`'s prefill.
// Each reports its time; the GEMMs also FLOP/s, the others the bytes they must move.
// Their sum is what a layer costs, and which op to work on next.
//
//   bench_layer_ops [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <optional>
#include <random>
#include <span>
#include <vector>

#include <ssm/layers/activations.hpp>
#include <ssm/layers/causal_conv1d.hpp>
#include <ssm/layers/linear.hpp>
#include <ssm/layers/rms_norm.hpp>
#include <ssm/scan/selective_scan.hpp>

#include "machine_limits.hpp"

namespace {

constexpr ssm::index kD = 768, kE = 1536, kN = 16, kR = 48, kK = 4, kJ = kR + 2 * kN;

ssm::Tensor random_tensor(std::vector<ssm::index> shape, float lo, float hi, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    ssm::index n = 1;
    for (ssm::index s : shape) n *= s;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = d(rng);
    return ssm::Tensor::from(std::move(shape), std::move(v));
}

ssm::Matrix random_matrix(ssm::index rows, ssm::index cols, float lo, float hi, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    ssm::Matrix m(rows, cols);
    for (ssm::index i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
    return m;
}

ssm::ConstStridedMap cview(const ssm::Matrix& m, ssm::index col = 0, ssm::index cols = -1) {
    return {m.data() + col, m.rows(), cols < 0 ? m.cols() : cols, Eigen::OuterStride<>(m.cols())};
}
ssm::StridedMap view(ssm::Matrix& m) {
    return {m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.cols())};
}

/// Every operand of one layer for L tokens, made once per benchmark.
struct Layer {
    ssm::index T;
    std::vector<ssm::index> offsets;
    ssm::RMSNorm norm{random_tensor({kD}, 0.5f, 1.5f, 1), 1e-5};
    ssm::Linear in_proj{random_tensor({2 * kE, kD}, -0.03f, 0.03f, 2), std::nullopt};
    ssm::CausalConv1d conv{random_tensor({kE, 1, kK}, -0.5f, 0.5f, 3),
                           random_tensor({kE}, -0.1f, 0.1f, 4)};
    ssm::Linear x_proj{random_tensor({kJ, kE}, -0.03f, 0.03f, 5), std::nullopt};
    ssm::Linear dt_proj{random_tensor({kE, kR}, -0.1f, 0.1f, 6), random_tensor({kE}, -4, -2, 7)};
    ssm::Linear out_proj{random_tensor({kD, kE}, -0.03f, 0.03f, 8), std::nullopt};
    std::vector<float> A;
    ssm::Matrix residual, delta, h, xz, u, xdbl, dt, y, out;

    explicit Layer(ssm::index t)
        : T(t),
          offsets{0, t},
          residual(random_matrix(t, kD, -1, 1, 9)),
          delta(random_matrix(t, kD, -1, 1, 10)),
          h(t, kD),
          xz(random_matrix(t, 2 * kE, -1, 1, 11)),
          u(random_matrix(t, kE, -1, 1, 12)),
          xdbl(random_matrix(t, kJ, -1, 1, 13)),
          dt(random_matrix(t, kE, -3, 0, 14)),
          y(t, kE),
          out(t, kD) {
        const ssm::Tensor a = random_tensor({kE, kN}, -16, -1, 15);
        A.assign(a.data(), a.data() + a.size());
        D = random_tensor({kE}, 0.5f, 1.5f, 16);
    }
    ssm::Tensor D;

    ssm::SelectiveScanArgs scan_args() {
        ssm::SelectiveScanArgs a;
        a.T = T, a.E = kE, a.N = kN;
        a.u = u.data(), a.ld_u = kE;
        a.dt = dt.data(), a.ld_dt = kE;
        a.A = A.data();
        a.B = xdbl.data() + kR, a.ld_B = kJ;
        a.C = xdbl.data() + kR + kN, a.ld_C = kJ;
        a.D = D.data();
        a.z = xz.data() + kE, a.ld_z = 2 * kE;
        a.y = y.data(), a.ld_y = kE;
        a.offsets = offsets;
        return a;
    }
};

enum Op { kNorm, kInProj, kConv, kXProj, kDtProj, kSoftplus, kScan, kOutProj };

void BM_LayerOp(benchmark::State& state) {
    const auto op = static_cast<Op>(state.range(0));
    Layer L(state.range(1));
    const auto T = static_cast<double>(L.T);
    double flops = 0, bytes = 0;  // per call
    switch (op) {
        case kNorm:
            bytes = 4.0 * T * kD * 4;
            break;
        case kInProj:
            flops = 2.0 * T * kD * 2 * kE;
            break;
        case kConv:
            bytes = 4.0 * T * kE * 2;
            break;
        case kXProj:
            flops = 2.0 * T * kE * kJ;
            break;
        case kDtProj:
            flops = 2.0 * T * kR * kE;
            break;
        case kSoftplus:
            bytes = 4.0 * T * kE * 2;
            break;
        case kScan:
            bytes = 4.0 * T * (4 * kE + 2 * kN);
            break;
        case kOutProj:
            flops = 2.0 * T * kE * kD;
            break;
    }
    const auto args = L.scan_args();
    for (auto _ : state) {
        switch (op) {
            case kNorm:
                L.residual += L.delta;
                L.norm.forward(cview(L.residual), view(L.h));
                break;
            case kInProj:
                L.in_proj.forward(cview(L.h), view(L.xz));
                break;
            case kConv:
                L.conv.forward(cview(L.xz, 0, kE), L.offsets, view(L.u), true);
                break;
            case kXProj:
                L.x_proj.forward(cview(L.u), view(L.xdbl));
                break;
            case kDtProj:
                L.dt_proj.forward(cview(L.xdbl, 0, kR), view(L.dt));
                break;
            case kSoftplus:
                ssm::parallel_for(L.T, 64, [&](ssm::index b, ssm::index e) {
                    ssm::softplus_inplace(L.dt.data() + b * kE, (e - b) * kE);
                });
                break;
            case kScan:
                ssm::ParallelScan::run<ssm::MambaDiscretization>(args);
                break;
            case kOutProj:
                L.out_proj.forward(cview(L.y), view(L.out));
                break;
        }
        benchmark::ClobberMemory();
    }
    const auto n = static_cast<double>(state.iterations());
    if (flops > 0)
        state.counters["FLOP/s"] = benchmark::Counter(flops * n, benchmark::Counter::kIsRate);
    if (bytes > 0)
        state.counters["bytes/s"] = benchmark::Counter(bytes * n, benchmark::Counter::kIsRate);
    static const char* const kNames[] = {
        "residual add + RMSNorm", "in_proj", "conv + SiLU", "x_proj", "dt_proj", "softplus",
        "selective scan",         "out_proj"};
    state.SetLabel(kNames[op]);
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerOp)
    ->ArgsProduct({{kNorm, kInProj, kConv, kXProj, kDtProj, kSoftplus, kScan, kOutProj},
                   {512, 2048}})
    ->ArgNames({"op", "L"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
