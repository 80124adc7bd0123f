// SAMBA hybrid throughput (random weights): prefill tokens/s as the sequence grows, with the
// 2048-token sliding window SAMBA uses against the same model with full causal attention,
// the cost of one decoding step after a long prompt, and one attention layer alone in
// inference and in training (forward + backward) — each beside the machine's measured
// ceilings in the same run.
//
// Shape: the mamba-130m width (D 768, Mamba inner 1536, N 16, dt rank 48) in 12 SAMBA
// blocks, 6 Mamba-1 and 6 attention (6 heads of 128, RoPE on the whole head), SwiGLU 2048,
// vocabulary 32000, tied head.
//
//   build/benchmarks/bench_samba [--benchmark_filter=...]
//   SSM_BENCH_DIR=/tmp/x   where the random checkpoints are written (default: system temp)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>

#include "bench_inputs.hpp"
#include "machine_limits.hpp"

namespace {

constexpr ssm::index kD = 768, kLayers = 12, kE = 1536, kN = 16, kR = 48, kK = 4, kHeads = 6,
                     kHeadDim = 128, kMlp = 2048, kVocab = 32000, kWindow = 2048;

/// Matrix-product weights of one Mamba block and one attention block (mixer + SwiGLU).
constexpr double kMambaParams =
    2.0 * kE * kD + (kR + 2.0 * kN) * kE + kE * kR + kD * kE + 3.0 * kD * kMlp;
constexpr double kAttentionParams = 4.0 * kD * kHeads * kHeadDim + 3.0 * kD * kMlp;

std::filesystem::path checkpoint_dir(ssm::index window) {
    const char* env = std::getenv("SSM_BENCH_DIR");
    const auto base = env ? std::filesystem::path(env) : std::filesystem::temp_directory_path();
    return base / ("ssm-bench-samba-768-window-" + std::to_string(window));
}

/// Writes the random checkpoint: config.json with lit-gpt fields (every time), and the
/// weights (once; reused after) with canonical tensor names and separate q/k/v.
void make_checkpoint(const std::filesystem::path& dir, ssm::index window) {
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json")
        << R"({"name": "samba-bench", "n_embd": 768, "n_layer": 12, "n_head": 6, "head_size": 128,
"n_query_groups": 6, "intermediate_size": 2048, "vocab_size": 32000, "padded_vocab_size": 32000,
"rotary_percentage": 1.0, "mb_per_layer": 2, "norm_eps": 1e-5, "parallel_residual": false,
"bias": false, "_mlp_class": "LLaMAMLP", "_norm_class": "RMSNorm", "local_window": )"
        << window << "}";
    if (std::filesystem::exists(dir / "model.safetensors")) return;
    std::mt19937 rng(7);
    std::vector<std::vector<float>> store;
    std::vector<std::pair<std::string, std::vector<ssm::index>>> specs;
    auto spec = [&](const std::string& name, std::vector<ssm::index> shape, float lo, float hi) {
        ssm::index n = 1;
        for (auto s : shape) n *= s;
        std::uniform_real_distribution<float> dist(lo, hi);
        store.emplace_back(static_cast<std::size_t>(n));
        for (auto& v : store.back()) v = dist(rng);
        specs.emplace_back(name, std::move(shape));
    };
    spec("backbone.embeddings.weight", {kVocab, kD}, -0.05f, 0.05f);
    const float in_scale = 0.036f, inner_scale = 0.025f, mlp_scale = 0.022f;
    for (ssm::index l = 0; l < kLayers; ++l) {
        const std::string p = "backbone.layers." + std::to_string(l);
        spec(p + ".norm.weight", {kD}, 0.9f, 1.1f);
        spec(p + ".mlp_norm.weight", {kD}, 0.9f, 1.1f);
        if (l % 2 == 0) {
            spec(p + ".mixer.in_proj.weight", {2 * kE, kD}, -in_scale, in_scale);
            spec(p + ".mixer.conv1d.weight", {kE, 1, kK}, -0.5f, 0.5f);
            spec(p + ".mixer.conv1d.bias", {kE}, -0.1f, 0.1f);
            spec(p + ".mixer.x_proj.weight", {kR + 2 * kN, kE}, -inner_scale, inner_scale);
            spec(p + ".mixer.dt_proj.weight", {kE, kR}, -0.14f, 0.14f);
            spec(p + ".mixer.dt_proj.bias", {kE}, -6.9f, -2.3f);
            spec(p + ".mixer.A_log", {kE, kN}, 0.0f, 2.77f);
            spec(p + ".mixer.D", {kE}, 0.5f, 1.5f);
            spec(p + ".mixer.out_proj.weight", {kD, kE}, -inner_scale, inner_scale);
        } else {
            for (const char* w : {"q_proj", "k_proj", "v_proj"})
                spec(p + ".mixer." + w + ".weight", {kHeads * kHeadDim, kD}, -in_scale, in_scale);
            spec(p + ".mixer.o_proj.weight", {kD, kHeads * kHeadDim}, -in_scale, in_scale);
        }
        spec(p + ".mlp.gate_proj.weight", {kMlp, kD}, -in_scale, in_scale);
        spec(p + ".mlp.up_proj.weight", {kMlp, kD}, -in_scale, in_scale);
        spec(p + ".mlp.down_proj.weight", {kD, kMlp}, -mlp_scale, mlp_scale);
    }
    spec("backbone.norm_f.weight", {kD}, 0.9f, 1.1f);
    std::vector<ssm::TensorToWrite> tensors;
    for (std::size_t i = 0; i < specs.size(); ++i)
        tensors.push_back(ssm::f32_tensor(specs[i].first, specs[i].second, store[i]));
    ssm::write_safetensors(dir / "model.safetensors", tensors);
}

/// window 0: full causal attention.
const ssm::Samba& model(ssm::index window) {
    static std::map<ssm::index, ssm::Samba> models;
    auto it = models.find(window);
    if (it == models.end()) {
        make_checkpoint(checkpoint_dir(window), window);
        it = models.emplace(window, ssm::Samba::load(checkpoint_dir(window))).first;
    }
    return it->second;
}

std::vector<std::int32_t> random_ids(ssm::index n, unsigned seed) {
    return ssm::bench::random_ids(n, kVocab, seed);
}

/// Query-key pairs one attention layer scores over a sequence of L tokens.
double attention_pairs(ssm::index L, ssm::index window) {
    const double l = static_cast<double>(L);
    if (window <= 0 || window >= L) return l * (l + 1) / 2;
    const double w = static_cast<double>(window);
    return w * (w + 1) / 2 + (l - w) * w;
}

/// Prefill of one sequence of L tokens (logits for the last position). Second argument:
/// the window (0 = full causal attention).
void BM_SambaPrefill(benchmark::State& state) {
    const ssm::index L = state.range(0), window = state.range(1);
    const auto& m = model(window);
    const auto batch = ssm::Batch::of({random_ids(L, 1)});
    ssm::Workspace ws;
    for (auto _ : state) {
        auto r = m.forward(batch, {ssm::Logits::Last, false}, nullptr, ws);
        benchmark::DoNotOptimize(r.logits.data());
    }
    const double iters = static_cast<double>(state.iterations()),
                 tokens = static_cast<double>(L) * iters;
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    // QKᵀ and PV: 2 · 2 · head_dim FLOPs per query-key pair and head.
    const double attention_flops =
        4.0 * kHeadDim * kHeads * attention_pairs(L, window) * (kLayers / 2) * iters;
    const double gemm_flops = 2.0 * (kMambaParams + kAttentionParams) * (kLayers / 2) * tokens +
                              2.0 * kD * kVocab * iters;
    state.counters["FLOP/s"] =
        benchmark::Counter(gemm_flops + attention_flops, benchmark::Counter::kIsRate);
    state.counters["attn_share"] = attention_flops / (gemm_flops + attention_flops);
    state.counters["threads"] = ssm::num_threads();
}

/// One decoding step for one sequence after a prompt of P tokens. Second argument: the
/// window (0 = full causal attention, whose step reads every earlier key).
void BM_SambaDecode(benchmark::State& state) {
    const ssm::index P = state.range(0), window = state.range(1);
    const auto& m = model(window);
    auto st = m.make_state(1);
    (void)m.forward(ssm::Batch::of({random_ids(P, 3)}), {ssm::Logits::None, false}, &st);
    const auto start = st;
    const std::int32_t next[] = {17};
    ssm::Workspace ws;
    int since_reset = 0;
    for (auto _ : state) {
        if (++since_reset == 64) {  // keep the position near P
            state.PauseTiming();
            st = start;
            since_reset = 0;
            state.ResumeTiming();
        }
        const ssm::Matrix logits = m.step(next, st, ws);
        benchmark::DoNotOptimize(logits.data());
    }
    state.SetItemsProcessed(state.iterations());
    const double weight_bytes = 4.0 * ((kMambaParams + kAttentionParams) * (kLayers / 2) +
                                       static_cast<double>(kD) * kVocab);
    const double keys = static_cast<double>(window > 0 ? std::min(P, window - 1) : P);
    const double cache_bytes = 2.0 * 4.0 * keys * kHeads * kHeadDim * (kLayers / 2);
    state.counters["bytes/s"] =
        benchmark::Counter((weight_bytes + cache_bytes) * static_cast<double>(state.iterations()),
                           benchmark::Counter::kIsRate);
    state.counters["cache_MB"] = cache_bytes / 1e6;
    state.counters["threads"] = ssm::num_threads();
}

/// One attention layer (D 768, 6 heads of 128, RoPE on the whole head), random weights.
ssm::SlidingWindowAttention attention_layer(ssm::index window) {
    const ssm::SlidingWindowAttention::Shape shape{kHeads, kHeads,   kHeadDim,
                                                   window, kHeadDim, 10000.0};
    const auto w = [](ssm::index rows, ssm::index cols, unsigned seed) {
        std::mt19937 rng(seed);
        std::uniform_real_distribution<float> dist(-0.036f, 0.036f);
        std::vector<float> v(static_cast<std::size_t>(rows * cols));
        for (auto& x : v) x = dist(rng);
        return ssm::Tensor::from({rows, cols}, std::move(v));
    };
    const ssm::index q = kHeads * kHeadDim;
    return ssm::SlidingWindowAttention(shape, w(q, kD, 1), w(q, kD, 2), w(q, kD, 3), w(kD, q, 4));
}

/// One attention layer alone over one sequence of L tokens: projections plus the windowed
/// softmax(QKᵀ)V. Second argument: the window (0 = full).
void BM_AttentionLayer(benchmark::State& state) {
    const ssm::index L = state.range(0), window = state.range(1);
    const ssm::index q = kHeads * kHeadDim;
    const ssm::SlidingWindowAttention attn = attention_layer(window);
    ssm::Matrix x = ssm::Matrix::Random(L, kD), y(L, kD);
    const ssm::index offsets[] = {0, L};
    ssm::Workspace ws;
    for (auto _ : state) {
        ws.reset();
        attn.forward(ssm::cview(x), offsets,
                     ssm::StridedMap(y.data(), L, kD, Eigen::OuterStride<>(kD)), false, ws);
        benchmark::DoNotOptimize(y.data());
    }
    const double iters = static_cast<double>(state.iterations());
    const double proj = 2.0 * 4.0 * kD * q * static_cast<double>(L) * iters;
    const double scores = 4.0 * kHeadDim * kHeads * attention_pairs(L, window) * iters;
    state.SetItemsProcessed(static_cast<std::int64_t>(static_cast<double>(L) * iters));
    state.counters["FLOP/s"] = benchmark::Counter(proj + scores, benchmark::Counter::kIsRate);
    state.counters["attn_share"] = scores / (proj + scores);
}

/// Training's share of one attention layer over one sequence of L tokens: the training
/// forward (keeping Q, K, V, the output and the log-sum-exps) and the backward, with the
/// weight gradients. FLOPs counted: the projections three times (forward, dx, dW) and the
/// window's score products seven times (S and O forward; S again, dV, dP, dQ, dK backward).
void BM_AttentionTrainStep(benchmark::State& state) {
    const ssm::index L = state.range(0), window = state.range(1);
    const ssm::index q = kHeads * kHeadDim;
    ssm::SlidingWindowAttention attn = attention_layer(window);
    ssm::train::Parameters params;
    attn.register_parameters(params, "attn");
    const ssm::Matrix x = ssm::Matrix::Random(L, kD), dy = ssm::Matrix::Random(L, kD);
    ssm::Matrix y(L, kD), dx(L, kD);
    const std::vector<ssm::index> offsets = {0, L};
    ssm::SlidingWindowAttention::Cache cache;
    for (auto _ : state) {
        attn.forward(ssm::cview(x), offsets, ssm::view(y), false, cache);
        attn.backward(ssm::cview(x), ssm::cview(dy), cache, ssm::view(dx));
        benchmark::DoNotOptimize(dx.data());
    }
    const double iters = static_cast<double>(state.iterations());
    const double proj = 3.0 * 2.0 * 4.0 * kD * q * static_cast<double>(L) * iters;
    const double scores = 7.0 * 2.0 * kHeadDim * kHeads * attention_pairs(L, window) * iters;
    state.SetItemsProcessed(static_cast<std::int64_t>(static_cast<double>(L) * iters));
    state.counters["FLOP/s"] = benchmark::Counter(proj + scores, benchmark::Counter::kIsRate);
    state.counters["attn_share"] = scores / (proj + scores);
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ssm::bench::BM_MemoryRead)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SambaPrefill)
    ->ArgsProduct({{512, 2048, 8192, 32768}, {kWindow, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_AttentionLayer)
    ->ArgsProduct({{2048, 8192}, {kWindow, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_AttentionTrainStep)
    ->ArgsProduct({{2048, 8192}, {kWindow}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_SambaDecode)
    ->ArgsProduct({{512, 8192}, {kWindow, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
