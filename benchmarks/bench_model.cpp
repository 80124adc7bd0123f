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
#include "machine_limits.hpp"

namespace {

// mamba-130m: D 768, 24 layers, E 1536, N 16, R 48, K 4, vocab 50280, tied head.
constexpr ssm::index kD = 768, kLayers = 24, kE = 1536, kN = 16, kR = 48, kK = 4, kVocab = 50280;

/// Matrix-product weights per layer (in_proj, x_proj, dt_proj, out_proj).
constexpr double kLayerGemmParams = 2.0 * kE * kD + (kR + 2.0 * kN) * kE + kE * kR + kD * kE;

std::filesystem::path checkpoint_dir() {
    const char* env = std::getenv("SSM_BENCH_DIR");
    return env ? std::filesystem::path(env)
               : std::filesystem::temp_directory_path() / "ssm-bench-mamba-130m-shape";
}

/// Writes a mamba-130m-shaped checkpoint with random weights (once; reused after).
void make_checkpoint(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "model.safetensors")) return;
    std::filesystem::create_directories(dir);
    std::mt19937 rng(42);
    std::vector<std::vector<float>> store;
    std::vector<ssm::TensorToWrite> tensors;
    auto add = [&](const std::vector<ssm::index>& shape, float lo, float hi) {
        ssm::index n = 1;
        for (auto s : shape) n *= s;
        std::uniform_real_distribution<float> dist(lo, hi);
        store.emplace_back(static_cast<std::size_t>(n));
        for (auto& v : store.back()) v = dist(rng);
    };
    std::vector<std::pair<std::string, std::vector<ssm::index>>> specs;
    auto spec = [&](const std::string& name, std::vector<ssm::index> shape, float lo, float hi) {
        add(shape, lo, hi);
        specs.emplace_back(name, std::move(shape));
    };
    spec("backbone.embeddings.weight", {kVocab, kD}, -0.05f, 0.05f);
    for (ssm::index l = 0; l < kLayers; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l);
        spec(p + ".norm.weight", {kD}, 0.9f, 1.1f);
        spec(p + ".mixer.in_proj.weight", {2 * kE, kD}, -0.036f, 0.036f);
        spec(p + ".mixer.conv1d.weight", {kE, 1, kK}, -0.5f, 0.5f);
        spec(p + ".mixer.conv1d.bias", {kE}, -0.1f, 0.1f);
        spec(p + ".mixer.x_proj.weight", {kR + 2 * kN, kE}, -0.025f, 0.025f);
        spec(p + ".mixer.dt_proj.weight", {kE, kR}, -0.14f, 0.14f);
        spec(p + ".mixer.dt_proj.bias", {kE}, -6.9f, -2.3f);  // softplus → dt in [0.001, 0.1]
        spec(p + ".mixer.A_log", {kE, kN}, 0.0f, 2.77f);      // A in [-16, -1]
        spec(p + ".mixer.D", {kE}, 0.5f, 1.5f);
        spec(p + ".mixer.out_proj.weight", {kD, kE}, -0.025f, 0.025f);
    }
    spec("backbone.norm_f.weight", {kD}, 0.9f, 1.1f);
    for (std::size_t i = 0; i < specs.size(); ++i)
        tensors.push_back(ssm::f32_tensor(specs[i].first, specs[i].second, store[i]));
    ssm::write_safetensors(dir / "model.safetensors", tensors);
    std::ofstream(dir / "config.json")
        << R"({"model_type": "mamba", "vocab_size": 50280, "hidden_size": 768, "state_size": 16,
"num_hidden_layers": 24, "expand": 2, "conv_kernel": 4, "time_step_rank": 48,
"intermediate_size": 1536, "use_bias": false, "use_conv_bias": true,
"tie_word_embeddings": true, "layer_norm_epsilon": 1e-05, "eos_token_id": 0})";
}

/// Weight storage by benchmark argument: 0 float32, 1 bfloat16, 2 int8 blocks.
ssm::WeightFormat format_of(std::int64_t arg) {
    return arg == 2 ? ssm::WeightFormat::Int8 : arg == 1 ? ssm::WeightFormat::BF16 : ssm::WeightFormat::F32;
}

/// Bytes a weight takes in `format` (int8: 32 values and a float32 scale per block).
double bytes_per_weight(ssm::WeightFormat format) {
    return format == ssm::WeightFormat::Int8 ? 36.0 / 32.0 : format == ssm::WeightFormat::BF16 ? 2.0 : 4.0;
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
    return format == ssm::WeightFormat::Int8 ? int8 : format == ssm::WeightFormat::BF16 ? half : f32;
}

std::vector<std::int32_t> random_ids(ssm::index n, unsigned seed) { return ssm::bench::random_ids(n, kVocab, seed); }

/// Prefill of one sequence of L tokens, logits for the last position only. Second
/// argument: weight storage (0 float32, 1 bfloat16, 2 int8).
void BM_Prefill(benchmark::State& state) {
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
    const double weight_bytes = bytes_per_weight(format) * (kLayerGemmParams * kLayers + static_cast<double>(kD) * kVocab);
    state.counters["weight_bytes/s"] = benchmark::Counter(weight_bytes * steps, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Prefill)->ArgsProduct({{512, 2048, 8192}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Decode)->ArgsProduct({{1, 8, 16, 32, 64}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
