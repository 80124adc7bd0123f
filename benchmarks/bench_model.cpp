// Whole-model throughput for the mamba-130m shape (random weights): prefill tokens/s at
// several lengths with the GEMM FLOP/s it reaches, and decode tokens/s with the weight
// bytes/s it streams — each beside the machine's measured ceiling in the same run.
//
//   build/benchmarks/bench_model [--benchmark_filter=...]
//   SSM_BENCH_DIR=/tmp/x   where the random checkpoint is written (default: system temp)
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "bench_inputs.hpp"
#include "mamba_130m_checkpoint.hpp"
#include "machine_limits.hpp"

namespace {

using ssm::bench::checkpoint_dir;
using ssm::bench::kD;
using ssm::bench::kE;
using ssm::bench::kLayerGemmParams;
using ssm::bench::kLayers;
using ssm::bench::kN;
using ssm::bench::kR;
using ssm::bench::kVocab;
using ssm::bench::make_checkpoint;

/// Weight storage by benchmark argument: 0 float32, 1 bfloat16, 2 int8 blocks, 3 bfloat16
/// with the dispatch held below AVX512-BF16 (widened to float32 GEMMs: the baseline of 1),
/// 4 int8 blocks with decoding's activations rounded to int8 blocks too, 5 bfloat16 on AMX's
/// tiles.
ssm::WeightFormat format_of(std::int64_t arg) {
    switch (arg) {
        case 1:
        case 3:
        case 5: return ssm::WeightFormat::BF16;
        case 2: return ssm::WeightFormat::Int8;
        case 4: return ssm::WeightFormat::Int8Activations;
        default: return ssm::WeightFormat::F32;
    }
}

/// The dispatch for a weight-storage argument while in scope: 1 (bfloat16 on the unit) forces
/// AVX512-BF16 where the CPU has it — also where the default keeps the unit off because the
/// FMA units are faster (`ssm::default_cpu_isa`) —, 3 (bfloat16 widened) holds it below, 5
/// forces AMX's tiles where the CPU offers them.
struct Bf16UnitFor {
    explicit Bf16UnitFor(std::int64_t arg) {
        if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) return;
        if (arg == 1) ssm::use_cpu_isa(ssm::CpuIsa::Avx512Bf16);
        if (arg == 3) ssm::use_cpu_isa(ssm::CpuIsa::Avx512);
        if (arg == 5 && ssm::cpu_can_use(ssm::CpuIsa::Amx))
            ssm::use_cpu_isa(ssm::CpuIsa::Amx);
        on = arg == 1 || arg == 3 || arg == 5;
    }
    ~Bf16UnitFor() {
        if (on) ssm::use_default_cpu_isa();
    }
    Bf16UnitFor(const Bf16UnitFor&) = delete;
    Bf16UnitFor& operator=(const Bf16UnitFor&) = delete;
    bool on = false;
};

/// Bytes a weight takes in `format` (int8: 32 values and a float32 scale per block).
double bytes_per_weight(ssm::WeightFormat format) {
    switch (format) {
        case ssm::WeightFormat::Int8:
        case ssm::WeightFormat::Int8Activations: return 36.0 / 32.0;
        case ssm::WeightFormat::BF16: return 2.0;
        case ssm::WeightFormat::F32: break;
    }
    return 4.0;
}

/// Weight bytes one decoding token reads in `format`: every layer's projections and the head.
double decode_weight_bytes(ssm::WeightFormat format) {
    return bytes_per_weight(format) * (kLayerGemmParams * kLayers + static_cast<double>(kD) * kVocab);
}

/// The model with its matrices stored in `format`.
const ssm::MambaLM& model(ssm::WeightFormat format) {
    static const ssm::MambaLM f32 = [] {
        make_checkpoint(checkpoint_dir());
        return ssm::MambaLM::load(checkpoint_dir());
    }();
    const auto converted = [](ssm::WeightFormat f) {
        ssm::MambaLM m = f32;
        m.store_weights(f);
        return m;
    };
    static const ssm::MambaLM half = converted(ssm::WeightFormat::BF16);
    static const ssm::MambaLM int8 = converted(ssm::WeightFormat::Int8);
    static const ssm::MambaLM int8_activations = converted(ssm::WeightFormat::Int8Activations);
    switch (format) {
        case ssm::WeightFormat::BF16: return half;
        case ssm::WeightFormat::Int8: return int8;
        case ssm::WeightFormat::Int8Activations: return int8_activations;
        case ssm::WeightFormat::F32: break;
    }
    return f32;
}

std::vector<std::int32_t> random_ids(ssm::index n, unsigned seed) { return ssm::bench::random_ids(n, kVocab, seed); }

/// Prefill of one sequence of L tokens, logits for the last position only. Second
/// argument: weight storage (0 float32, 1 bfloat16, 2 int8, 3 bfloat16 widened, 5 bfloat16
/// on AMX's tiles).
void BM_Prefill(benchmark::State& state) {
    if (state.range(1) == 5 && !ssm::cpu_can_use(ssm::CpuIsa::Amx)) {
        state.SkipWithError("this CPU (or its kernel) offers no AMX tiles");
        return;
    }
    const Bf16UnitFor held(state.range(1));
    const auto& m = model(format_of(state.range(1)));
    const ssm::index L = state.range(0);
    const auto batch = ssm::Batch::of({random_ids(L, 1)});
    ssm::Workspace ws;
    for (auto _ : state) {
        auto r = m.forward(batch, {ssm::Logits::Last, false}, nullptr, ws);
        benchmark::DoNotOptimize(r.logits.data());
    }
    const double tokens = static_cast<double>(L) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    const double flops = 2.0 * kLayerGemmParams * kLayers * tokens +
                         2.0 * kD * kVocab * static_cast<double>(state.iterations());
    state.counters["GEMM_FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
    state.SetLabel(ssm::isa_name(ssm::cpu_isa()));
}

/// One projection alone, in_proj's shape (L × 768 → 3072), L = first argument: the
/// float32 GEMM as dispatched (`gemm_f32` on an AVX2 CPU, Eigen's elsewhere), the bf16 unit
/// (`gemm_bf16`), a bf16 weight widened to float32, the float32 GEMM through Eigen with
/// the dispatch held at generic, and a float32 weight under bf16 products (both operands
/// rounded per call, `MatmulPrecision::Bf16Products`, what training multiplies with) on the
/// unit (second argument 0, 1, 2, 3, 4); 5 and 6 are 1 and 4 on AMX's tiles — the GEMM
/// share of prefill against the peaks.
void BM_Projection(benchmark::State& state) {
    const ssm::index L = state.range(0), in = kD, out = 2 * kE;
    const std::int64_t path = state.range(1);
    const bool tiles = path == 5 || path == 6;
    if ((path == 1 || path == 4) && !ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        state.SkipWithError("this CPU has no AVX512-BF16 unit");
        return;
    }
    if (tiles && !ssm::cpu_can_use(ssm::CpuIsa::Amx)) {
        state.SkipWithError("this CPU (or its kernel) offers no AMX tiles");
        return;
    }
    const Bf16UnitFor held(path == 1 || path == 4 ? 1 : path == 2 ? 3 : 0);  // storage argument: on the unit, widened
    if (path == 3) ssm::use_cpu_isa(ssm::CpuIsa::Generic);
    if (tiles) ssm::use_cpu_isa(ssm::CpuIsa::Amx);
    if (path == 4 || path == 6) ssm::set_matmul_precision(ssm::MatmulPrecision::Bf16Products);
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    std::vector<float> w(static_cast<std::size_t>(out * in));
    for (auto& v : w) v = u(rng);
    ssm::Linear lin(ssm::WeightMatrix(ssm::Tensor::from({out, in}, w)), std::nullopt);
    if (path == 1 || path == 2 || path == 5) lin.store_bf16();
    ssm::Matrix x = ssm::Matrix::Random(L, in), y(L, out);
    for (auto _ : state) {
        lin.forward(x, y);
        benchmark::DoNotOptimize(y.data());
    }
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(L) * in * out * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
    state.SetLabel(ssm::isa_name(ssm::cpu_isa()));
    if (path == 3 || tiles) ssm::use_default_cpu_isa();
    if (path == 4 || path == 6) ssm::set_matmul_precision(ssm::MatmulPrecision::Float32);
}

/// Decoding at batch B: one step per iteration, after a 16-token prompt per sequence.
/// Second argument: weight storage (0 float32, 1 bfloat16: half the bytes a step reads,
/// 2 int8 blocks: 36 bytes per 32 weights).
void BM_Decode(benchmark::State& state) {
    const ssm::WeightFormat format = format_of(state.range(1));
    const auto& m = model(format);
    const ssm::index B = state.range(0);
    std::vector<std::vector<std::int32_t>> prompts;
    for (ssm::index b = 0; b < B; ++b) prompts.push_back(random_ids(16, 2 + static_cast<unsigned>(b)));
    auto st = m.make_state(B);
    (void)m.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &st);
    std::vector<std::int32_t> next = random_ids(B, 99);
    ssm::Workspace ws;
    for (auto _ : state) {
        const ssm::Matrix logits = m.step(next, st, ws);
        benchmark::DoNotOptimize(logits.data());
    }
    const double steps = static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(steps * static_cast<double>(B)));
    state.counters["weight_bytes/s"] = benchmark::Counter(decode_weight_bytes(format) * steps, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

/// Decoding's projections alone: every layer's in_proj, x_proj, dt_proj and out_proj, then
/// the head, each on one row, in a token's order (argument: weight storage as BM_Decode's).
/// Beside BM_Decode/1, it splits a token's time into the weight-streaming matrix-vector
/// products and the rest (conv, scan step, norms).
void BM_DecodeProjections(benchmark::State& state) {
    const ssm::WeightFormat format = format_of(state.range(0));
    const auto& m = model(format);
    ssm::Matrix x = ssm::Matrix::Random(1, 2 * kE), y(1, kVocab);
    const auto project = [&](const ssm::Linear& l) {
        l.forward(ssm::ConstStridedMap(x.data(), 1, l.in_features(), Eigen::OuterStride<>(x.cols())),
                  ssm::StridedMap(y.data(), 1, l.out_features(), Eigen::OuterStride<>(y.cols())));
    };
    for (auto _ : state) {
        for (const auto& layer : m.backbone()) {
            const auto& mixer = layer.mixer();
            for (const ssm::Linear* l : {&mixer.in_proj(), &mixer.x_proj(), &mixer.dt_proj(), &mixer.out_proj()})
                project(*l);
        }
        project(m.head().projection());
        benchmark::DoNotOptimize(y.data());
    }
    state.counters["weight_bytes/s"] = benchmark::Counter(
        decode_weight_bytes(format) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_PeakBf16Dot)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_PeakAmxBf16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Projection)->ArgsProduct({{512, 2048}, {0, 1, 2, 3, 4, 5, 6}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Prefill)->ArgsProduct({{512, 2048, 8192}, {0, 1, 3, 2, 5}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Decode)->ArgsProduct({{1, 8, 16, 32, 64}, {0, 1, 2, 4}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DecodeProjections)->Arg(0)->Arg(1)->Arg(2)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
