// benchmarks/amx_probe.cpp — the bf16 units side by side on one CPU, timed by the program
// itself (no Google Benchmark: it builds wherever a compiler and Eigen are, e.g. a GPU
// machine's host; scripts/amx-check.sh builds and runs it). In one run, all threads:
//
//   peaks       float32 FMA chains, vdpbf16ps chains, AMX tdpbf16ps on tiles held in registers
//   projection  in_proj's shape (L × 768 → 3 072, L 512 and 2 048): a float32 weight through
//               the float32 GEMM, a bf16 weight on vdpbf16ps and on AMX's tiles; GFLOP/s,
//               the share of each unit's peak, and the tiles' largest difference from the
//               vdpbf16ps result (both are float32 sums of the same bf16 products)
//   prefill     the mamba-130m shape (random weights), bf16 weights, L 512 and 2 048: widened
//               to float32, on vdpbf16ps, on the tiles; tokens/s and GEMM GFLOP/s
//
// Each figure is the median of `--reps` timings (default 5) after one warm-up. Paths the CPU
// cannot run are printed as "not run" with the reason.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "mamba_130m_checkpoint.hpp"
#include "peak_kernels.hpp"
#include "ssm/ssm.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using Index = ssm::index;

int g_reps = 5;

/// Median seconds of `g_reps` calls of f after one warm-up.
template <class F>
double median_seconds(F&& f) {
    f();
    std::vector<double> t;
    for (int i = 0; i < g_reps; ++i) {
        const auto a = Clock::now();
        f();
        t.push_back(std::chrono::duration<double>(Clock::now() - a).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

/// Median seconds of `kernel(t)` run once on each thread t at the same time.
template <class Kernel>
double all_threads_seconds(Kernel&& kernel) {
    return median_seconds([&] {
        ssm::parallel_for(ssm::num_threads(), 1, [&](Index b, Index e) {
            for (Index t = b; t < e; ++t) {
                volatile float sink = kernel(t);
                (void)sink;
            }
        });
    });
}

double peak_fma() {
    constexpr long kIters = 1 << 22;
    const double s = all_threads_seconds([](Index t) { return ssm::bench::fma_chains(kIters, static_cast<float>(t)); });
    return ssm::bench::kFmaChainFlop * static_cast<double>(kIters) * ssm::num_threads() / s;
}

double peak_bf16_dot() {
#if SSM_X86_DISPATCH
    constexpr long kIters = 1 << 22;
    const double s =
        all_threads_seconds([](Index t) { return ssm::bench::bf16_dot_chains(kIters, static_cast<float>(t)); });
    return 64.0 * 16 * static_cast<double>(kIters) * ssm::num_threads() / s;
#else
    return 0;
#endif
}

double peak_amx() {
#if SSM_AMX_DISPATCH
    constexpr long kIters = 1 << 18;
    const double s = all_threads_seconds([](Index) { return ssm::bench::amx_dot_chains(kIters); });
    return 16384.0 * 4 * static_cast<double>(kIters) * ssm::num_threads() / s;
#else
    return 0;
#endif
}

/// Runs f with the dispatch held at `isa` (then back to the default).
template <class F>
void with_isa(ssm::CpuIsa isa, F&& f) {
    ssm::use_cpu_isa(isa);
    f();
    ssm::use_default_cpu_isa();
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            g_reps = std::max(1, std::atoi(argv[++i]));
        } else {
            std::fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
            return 2;
        }
    }
    const bool has_bf16 = ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16);
    const bool has_amx = ssm::cpu_can_use(ssm::CpuIsa::Amx);
    std::printf("# amx_probe: %s, %d threads; detected %s, default %s\n", cpu_model().c_str(), ssm::num_threads(),
                ssm::isa_name(ssm::detected_cpu_isa()), ssm::isa_name(ssm::default_cpu_isa()));
    const double fma = peak_fma();
    const double dot = has_bf16 ? peak_bf16_dot() : 0;
    const double amx = has_amx ? peak_amx() : 0;
    std::printf("\n## peaks (GFLOP/s, all threads)\nfloat32 FMA     %9.1f\n", fma / 1e9);
    if (has_bf16) std::printf("vdpbf16ps       %9.1f  (%.2fx FMA)\n", dot / 1e9, dot / fma);
    else std::printf("vdpbf16ps       not run: no AVX512-BF16\n");
    if (has_amx) std::printf("AMX tdpbf16ps   %9.1f  (%.2fx FMA)\n", amx / 1e9, amx / fma);
    else std::printf("AMX tdpbf16ps   not run: this CPU (or its kernel) offers no AMX tiles\n");

    std::printf("\n## one projection, 768 -> 3072 (GFLOP/s; share of the unit's peak)\n");
    const Index in = ssm::bench::kD, out = 2 * ssm::bench::kE;
    std::vector<float> w(static_cast<std::size_t>(out * in));
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    for (auto& v : w) v = u(rng);
    const ssm::Linear f32(ssm::WeightMatrix(ssm::Tensor::from({out, in}, w)), std::nullopt);
    ssm::Linear bf16(ssm::WeightMatrix(ssm::Tensor::from({out, in}, w)), std::nullopt);
    bf16.store_bf16();
    for (const Index L : {Index{512}, Index{2048}}) {
        const ssm::Matrix x = ssm::Matrix::Random(L, in);
        ssm::Matrix y(L, out), y_dot(L, out), y_amx(L, out);
        const double flop = 2.0 * static_cast<double>(L) * in * out;
        const double t32 = median_seconds([&] { f32.forward(x, y); });
        std::printf("L %5ld  float32 weight, float32 GEMM   %8.1f  (%.0f%% of FMA)\n", static_cast<long>(L),
                    flop / t32 / 1e9, 100 * flop / t32 / fma);
        if (has_bf16)
            with_isa(ssm::CpuIsa::Avx512Bf16, [&] {
                const double t = median_seconds([&] { bf16.forward(x, y_dot); });
                std::printf("L %5ld  bf16 weight, vdpbf16ps        %8.1f  (%.0f%% of vdpbf16ps)\n",
                            static_cast<long>(L), flop / t / 1e9, 100 * flop / t / dot);
            });
        if (has_amx) {
            with_isa(ssm::CpuIsa::Amx, [&] {
                const double t = median_seconds([&] { bf16.forward(x, y_amx); });
                std::printf("L %5ld  bf16 weight, AMX tiles        %8.1f  (%.0f%% of AMX)\n", static_cast<long>(L),
                            flop / t / 1e9, 100 * flop / t / amx);
            });
            const double diff = (y_amx - y_dot).cwiseAbs().maxCoeff(), scale = y_dot.cwiseAbs().maxCoeff();
            std::printf("         tiles against vdpbf16ps: largest difference %.3g (largest value %.3g)\n", diff,
                        scale);
        }
    }

    std::printf("\n## prefill, mamba-130m shape, bf16 weights (tokens/s; GEMM GFLOP/s)\n");
    const auto dir = ssm::bench::checkpoint_dir();
    ssm::bench::make_checkpoint(dir);
    auto model = ssm::MambaLM::load(dir);
    model.store_weights_bf16();
    struct Path {
        const char* name;
        ssm::CpuIsa isa;
        bool runs;
    };
    const Path paths[] = {{"widened to float32", ssm::CpuIsa::Avx512, ssm::cpu_supports(ssm::CpuIsa::Avx512)},
                          {"vdpbf16ps", ssm::CpuIsa::Avx512Bf16, has_bf16},
                          {"AMX tiles", ssm::CpuIsa::Amx, has_amx}};
    for (const Index L : {Index{512}, Index{2048}}) {
        std::vector<std::int32_t> ids(static_cast<std::size_t>(L));
        for (Index i = 0; i < L; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 7919) % 50000);
        const auto batch = ssm::Batch::of({ids});
        const double flop = 2.0 * ssm::bench::kLayerGemmParams * ssm::bench::kLayers * static_cast<double>(L) +
                            2.0 * ssm::bench::kD * ssm::bench::kVocab;
        for (const Path& p : paths) {
            if (!p.runs) {
                std::printf("L %5ld  %-20s not run: the CPU lacks it\n", static_cast<long>(L), p.name);
                continue;
            }
            with_isa(p.isa, [&] {
                ssm::Workspace ws;
                const double t = median_seconds([&] {
                    auto r = model.forward(batch, {ssm::Logits::Last, false}, nullptr, ws);
                    volatile float sink = r.logits(0, 0);
                    (void)sink;
                });
                std::printf("L %5ld  %-20s %9.1f tok/s  %8.1f GFLOP/s\n", static_cast<long>(L), p.name,
                            static_cast<double>(L) / t, flop / t / 1e9);
            });
        }
    }
    return 0;
}
