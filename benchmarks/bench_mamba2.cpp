// Mamba-2 beside Mamba-1 at equal width, in one run (random weights): prefill tokens/s and
// decode tokens/s in the mamba2-130m shape (D 768, 24 layers, d_inner 1536, state 128,
// 24 heads of 64, one group, chunk 256) and the mamba-130m shape (state 16, dt rank 48),
// each with the projection GEMM FLOP/s it reaches, beside the machine's FMA ceiling; and a
// causal-LM training step of each (training forward, logits, loss, backward to every
// parameter; the GEMM FLOP/s counts 3 forwards' worth).
//
//   build/benchmarks/bench_mamba2 [--benchmark_filter=...]
//   SSM_BENCH_DIR=/tmp/x   where the random checkpoints are written (default: system temp)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <ssm/ssm.hpp>
#include <ssm/scan/ssd_backward.hpp>
#include <ssm/train/losses.hpp>
#include <ssm/train/parameters.hpp>

#include "bench_inputs.hpp"
#include "mamba_130m_checkpoint.hpp"
#include "machine_limits.hpp"

namespace {

constexpr ssm::index kD = 768, kLayers = 24, kE = 1536, kK = 4, kVocab = 50288;
constexpr ssm::index kN1 = 16, kR = 48;                    // mamba-130m
constexpr ssm::index kN2 = 128, kP = 64, kH = kE / kP;     // mamba2-130m (G = 1)

/// Matrix-product weights per layer.
constexpr double kGemm1 = 2.0 * kE * kD + (kR + 2.0 * kN1) * kE + kE * kR + kD * kE;
constexpr double kGemm2 = (2.0 * kE + 2.0 * kN2 + kH) * kD + kD * kE;

std::filesystem::path bench_dir(const std::string& name) {
    const char* env = std::getenv("SSM_BENCH_DIR");
    return (env ? std::filesystem::path(env) : std::filesystem::temp_directory_path()) / name;
}

/// mamba-130m's shape with Mamba-2's vocabulary (50288), so that the heads cost the same.
std::filesystem::path mamba1_checkpoint() {
    const auto dir = bench_dir("ssm-bench-mamba-130m-shape-v");
    ssm::bench::make_checkpoint(dir, kVocab);
    return dir;
}

std::filesystem::path mamba2_checkpoint() {
    const auto dir = ssm::bench::mamba2_checkpoint_dir();
    ssm::bench::make_mamba2_checkpoint(dir);
    return dir;
}

const ssm::MambaLM& mamba1() {
    static const ssm::MambaLM m = ssm::MambaLM::load(mamba1_checkpoint());
    return m;
}
template <ssm::index Q>
const ssm::Mamba2LMWith<ssm::ChunkedSsd<Q>>& mamba2() {
    static const auto m = ssm::Mamba2LMWith<ssm::ChunkedSsd<Q>>::load(mamba2_checkpoint());
    return m;
}

template <class Model>
void prefill(benchmark::State& state, const Model& m, double gemm_params) {
    const ssm::index L = state.range(0);
    const auto batch = ssm::Batch::of({ssm::bench::random_ids(L, kVocab, 1)});
    ssm::Workspace ws;
    for (auto _ : state) {
        auto r = m.forward(batch, {ssm::Logits::Last, false}, nullptr, ws);
        benchmark::DoNotOptimize(r.logits.data());
    }
    const double tokens = static_cast<double>(L) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    const double flops = 2.0 * gemm_params * kLayers * tokens + 2.0 * kD * kVocab * static_cast<double>(state.iterations());
    state.counters["GEMM_FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

template <class Model>
void decode(benchmark::State& state, const Model& m) {
    const ssm::index B = state.range(0);
    std::vector<std::vector<std::int32_t>> prompts;
    for (ssm::index b = 0; b < B; ++b) prompts.push_back(ssm::bench::random_ids(16, kVocab, 2 + static_cast<unsigned>(b)));
    auto st = m.make_state(B);
    (void)m.forward(ssm::Batch::of(prompts), {ssm::Logits::None, false}, &st);
    const std::vector<std::int32_t> next = ssm::bench::random_ids(B, kVocab, 99);
    ssm::Workspace ws;
    for (auto _ : state) {
        const ssm::Matrix logits = m.step(next, st, ws);
        benchmark::DoNotOptimize(logits.data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * static_cast<double>(B)));
    state.counters["threads"] = ssm::num_threads();
}

/// A model with its parameters registered for training (loaded once, kept).
template <class Model>
struct Trainable {
    Model model;
    ssm::train::Parameters params;
    explicit Trainable(const std::filesystem::path& dir) : model(Model::load(dir)) { model.register_parameters(params); }
};

template <class Model>
void train_step(benchmark::State& state, Trainable<Model>& t, double gemm_params) {
    const ssm::index L = state.range(0);
    const auto batch = ssm::Batch::of({ssm::bench::random_ids(L, kVocab, 1)});
    for (auto _ : state) {
        t.params.zero_grad();
        typename Model::TrainCache cache;
        t.model.forward_train(batch, cache);
        const ssm::Matrix logits = t.model.logits_train(cache);
        ssm::Matrix dlogits;
        const double loss = ssm::train::causal_lm_loss(logits, batch.tokens(), batch.offsets(), dlogits);
        benchmark::DoNotOptimize(loss);
        t.model.backward_logits(cache, ssm::cview(dlogits));
    }
    const double tokens = static_cast<double>(L) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    const double flops = 3.0 * 2.0 * (gemm_params * kLayers + static_cast<double>(kD) * kVocab) * tokens;
    state.counters["GEMM_FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

void BM_Mamba1_TrainStep(benchmark::State& s) {
    static Trainable<ssm::MambaLM> t(mamba1_checkpoint());
    train_step(s, t, kGemm1);
}
void BM_Mamba2_TrainStep(benchmark::State& s) {
    static Trainable<ssm::Mamba2LM> t(mamba2_checkpoint());
    train_step(s, t, kGemm2);
}

/// One layer's SSD scan in the mamba2-130m shape over one sequence of L tokens: the chunked
/// forward (chunk 64), and the backward as recurrences (`ssd_scan_backward`) or chunked
/// (`ssd_scan_backward_chunked`, chunk 64). Random inputs: x, B, C in [−1, 1], Δ in
/// [0.001, 0.1] (the checkpoint's range), A in [−16, −1]. The chunked forms' FLOP/s count
/// the multiply-adds of their products per chunk of Q tokens and head: Q²·P/2 + 2·Q·P·N
/// forward (the masked product is triangular; C Bᵀ, shared by a group's heads, is left
/// out) and 3·Q²·N + 2·Q²·P + 5·Q·P·N backward (every product there is dense).
struct SsdInputs {
    ssm::index L;
    ssm::Matrix x, dt, B, C, y, dy, dx, ddt, dB, dC;
    std::vector<float> A, dA;
    std::vector<ssm::index> offsets;
    explicit SsdInputs(ssm::index len) : L(len), offsets{0, len} {
        x = ssm::bench::random_matrix(L, kE, -1, 1, 1);
        dt = ssm::bench::random_matrix(L, kH, 0.001f, 0.1f, 2);
        B = ssm::bench::random_matrix(L, kN2, -1, 1, 3);
        C = ssm::bench::random_matrix(L, kN2, -1, 1, 4);
        dy = ssm::bench::random_matrix(L, kE, -1, 1, 5);
        const ssm::Matrix a = ssm::bench::random_matrix(1, kH, -16, -1, 6);
        A.assign(a.data(), a.data() + kH);
        y = dx = ssm::Matrix::Zero(L, kE);
        ddt = ssm::Matrix::Zero(L, kH);
        dB = dC = ssm::Matrix::Zero(L, kN2);
        dA.assign(static_cast<std::size_t>(kH), 0.0f);
    }
    ssm::SsdArgs args() {
        ssm::SsdArgs a;
        a.T = L;
        a.H = kH;
        a.P = kP;
        a.N = kN2;
        a.G = 1;
        a.x = x.data();
        a.ld_x = kE;
        a.dt = dt.data();
        a.ld_dt = kH;
        a.A = A.data();
        a.B = B.data();
        a.ld_B = kN2;
        a.C = C.data();
        a.ld_C = kN2;
        a.y = y.data();
        a.ld_y = kE;
        a.offsets = offsets;
        a.chunk = 64;
        return a;
    }
    ssm::SsdGrads grads() {
        return {dy.data(), kE, dx.data(), kE, ddt.data(), kH, dB.data(), kN2, dC.data(), kN2, dA.data()};
    }
};

constexpr double kQ = 64;

void ssd_counters(benchmark::State& state, double macs_per_chunk_head) {
    const double tokens = static_cast<double>(state.range(0)) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * macs_per_chunk_head * kH * tokens / kQ, benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

void BM_SsdForward(benchmark::State& state) {
    SsdInputs in(state.range(0));
    const ssm::SsdArgs a = in.args();
    for (auto _ : state) {
        ssm::ChunkedSsd<64>::run(a);
        benchmark::DoNotOptimize(in.y.data());
    }
    ssd_counters(state, 0.5 * kQ * kQ * kP + 2 * kQ * kP * kN2);
}

void BM_SsdBackward_Recurrent(benchmark::State& state) {
    SsdInputs in(state.range(0));
    const ssm::SsdArgs a = in.args();
    const ssm::SsdGrads g = in.grads();
    for (auto _ : state) {
        ssm::ssd_scan_backward(a, g);
        benchmark::DoNotOptimize(in.dx.data());
    }
    ssd_counters(state, 0.0);
}

void BM_SsdBackward_Chunked(benchmark::State& state) {
    SsdInputs in(state.range(0));
    const ssm::SsdArgs a = in.args();
    const ssm::SsdGrads g = in.grads();
    for (auto _ : state) {
        ssm::ssd_scan_backward_chunked(a, g, 64);
        benchmark::DoNotOptimize(in.dx.data());
    }
    ssd_counters(state, 3 * kQ * kQ * kN2 + 2 * kQ * kQ * kP + 5 * kQ * kP * kN2);
}

void BM_Mamba1_Prefill(benchmark::State& s) { prefill(s, mamba1(), kGemm1); }
void BM_Mamba2_Prefill_Chunk256(benchmark::State& s) { prefill(s, mamba2<0>(), kGemm2); }  // the config's chunk
void BM_Mamba2_Prefill_Chunk64(benchmark::State& s) { prefill(s, mamba2<64>(), kGemm2); }
void BM_Mamba1_Decode(benchmark::State& s) { decode(s, mamba1()); }
void BM_Mamba2_Decode(benchmark::State& s) { decode(s, mamba2<0>()); }

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba1_Prefill)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba2_Prefill_Chunk256)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba2_Prefill_Chunk64)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba1_Decode)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba2_Decode)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SsdForward)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SsdBackward_Recurrent)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SsdBackward_Chunked)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba1_TrainStep)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Mamba2_TrainStep)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
