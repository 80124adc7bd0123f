// A training step against the forward alone, mamba-130m shape (random weights), one
// sequence of L tokens: tokens/s of the inference forward (all logits) and of a causal-LM
// training step (training forward, logits, loss, backward to every parameter), the
// step's cost in forwards (the FLOP ratio is 3), and the activation memory the step
// keeps per token — beside the machine's FMA ceiling measured in the same run.
//
//   build/benchmarks/bench_train [--benchmark_filter=...]
//   SSM_BENCH_DIR=/tmp/x   where the random checkpoint is written (default: system temp)
#include <benchmark/benchmark.h>

#include <vector>

#include <ssm/ssm.hpp>
#include <ssm/train/losses.hpp>
#include <ssm/train/parameters.hpp>

#include "bench_inputs.hpp"
#include "machine_limits.hpp"
#include "mamba_130m_checkpoint.hpp"

namespace {

using namespace ssm::bench;

struct Trainable {
    ssm::MambaLM model;
    ssm::train::Parameters params;
};

Trainable& trainable() {
    static Trainable t = [] {
        make_checkpoint(checkpoint_dir());
        Trainable x{ssm::MambaLM::load(checkpoint_dir()), {}};
        return x;
    }();
    static const bool registered = [] {
        t.model.register_parameters(t.params);
        return true;
    }();
    (void)registered;
    return t;
}

/// FLOPs of one forward over `tokens` tokens: the layers' GEMMs and the LM head's.
double forward_flops(double tokens) { return 2.0 * (kLayerGemmParams * kLayers + kD * kVocab) * tokens; }

void BM_Forward(benchmark::State& state) {
    auto& t = trainable();
    const ssm::index L = state.range(0);
    const auto batch = ssm::Batch::of({random_ids(L, kVocab, 1)});
    ssm::Workspace ws;
    for (auto _ : state) {
        auto r = t.model.forward(batch, {ssm::Logits::All, false}, nullptr, ws);
        benchmark::DoNotOptimize(r.logits.data());
    }
    const double tokens = static_cast<double>(L) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    state.counters["GEMM_FLOP/s"] = benchmark::Counter(forward_flops(tokens), benchmark::Counter::kIsRate);
    state.counters["threads"] = ssm::num_threads();
}

/// Second argument: 0 float32 products, 1 bf16 products on the CPU's bf16 unit
/// (`MatmulPrecision::Bf16Products`, the unit forced on where the CPU has it).
void BM_TrainStep(benchmark::State& state) {
    auto& t = trainable();
    const ssm::index L = state.range(0);
    const bool bf16 = state.range(1) == 1;
    if (bf16 && !ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {
        state.SkipWithError("this CPU has no AVX512-BF16 unit");
        return;
    }
    if (bf16) {
        ssm::use_cpu_isa(ssm::CpuIsa::Avx512Bf16);
        ssm::set_matmul_precision(ssm::MatmulPrecision::Bf16Products);
    }
    const auto batch = ssm::Batch::of({random_ids(L, kVocab, 1)});
    double kept = 0;
    for (auto _ : state) {
        t.params.zero_grad();
        ssm::MambaLM::TrainCache cache;
        t.model.forward_train(batch, cache);
        const ssm::Matrix logits = t.model.logits_train(cache);
        ssm::Matrix dlogits;
        const double loss = ssm::train::causal_lm_loss(logits, batch.tokens(), batch.offsets(), dlogits);
        benchmark::DoNotOptimize(loss);
        t.model.backward_logits(cache, ssm::cview(dlogits));
        kept = static_cast<double>(cache.hidden.size());
        for (const auto& layer : cache.backbone.layers)
            kept += static_cast<double>(layer.mixer.floats() + layer.norm.x.size() + layer.norm.rstd.size());
    }
    const double tokens = static_cast<double>(L) * static_cast<double>(state.iterations());
    state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
    state.counters["GEMM_FLOP/s"] = benchmark::Counter(3 * forward_flops(tokens), benchmark::Counter::kIsRate);
    state.counters["cache_bytes/token"] = 4.0 * kept / static_cast<double>(L);
    state.counters["threads"] = ssm::num_threads();
    state.SetLabel(bf16 ? "bf16 products" : "float32");
    if (bf16) {
        ssm::set_matmul_precision(ssm::MatmulPrecision::Float32);
        ssm::use_default_cpu_isa();
    }
}

}  // namespace

BENCHMARK(ssm::bench::BM_PeakFma)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Forward)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStep)->ArgsProduct({{512, 2048}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
