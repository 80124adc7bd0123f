// The whole model at mamba-130m's shape (D 768, 24 layers, E 1536, N 16, vocab 50280;
// random weights): encode throughput (final hidden state at each sequence's last token,
// as a bi-encoder reads it) at lengths 512 to 32k with ~64k-token packed batches, and
// greedy decoding: per-token latency at batch 1, tokens/s at batch 64. Beside each
// figure its floor: for encoding the GEMM FLOPs at the device's fp32 peak (estimated),
// for decoding one read of every weight at peak DRAM bandwidth.
//
//   ssm_bench_cuda_model [decode_steps]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ssm/cuda/model.cuh"

namespace {

namespace cu = ssm::cuda;

ssm::MambaConfig mamba_130m() {
    ssm::MambaConfig c;
    c.vocab_size = 50280;
    c.hidden_size = 768;
    c.num_hidden_layers = 24;
    c.state_size = 16;
    c.conv_kernel = 4;
    c.expand = 2;
    c.intermediate_size = 1536;
    c.time_step_rank = 48;
    c.use_bias = false;
    c.use_conv_bias = true;
    c.tie_word_embeddings = true;
    c.validate("mamba-130m shape");
    return c;
}

/// Random weights of plausible scale, by tensor name (fast xorshift; no file).
cu::WeightSource random_weights() {
    cu::WeightSource src;
    src.load = [](const std::string& name, std::span<const ssm::index> shape) {
        std::vector<ssm::index> s(shape.begin(), shape.end());
        ssm::index n = 1;
        for (ssm::index d : s) n *= d;
        std::vector<float> v(static_cast<std::size_t>(n));
        std::uint64_t x = 0x9E3779B97F4A7C15ull ^ std::hash<std::string>{}(name);
        auto uniform = [&x](float lo, float hi) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            return lo + (hi - lo) * static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
        };
        const auto ends = [&name](const char* suffix) {
            const std::string s(suffix);
            return name.size() >= s.size() &&
                   name.compare(name.size() - s.size(), s.size(), s) == 0;
        };
        if (ends("A_log")) {
            for (std::size_t i = 0; i < v.size(); ++i)
                v[i] = std::log(static_cast<float>(i % static_cast<std::size_t>(s[1]) + 1));
        } else if (ends(".D") || ends("norm.weight") || ends("norm_f.weight")) {
            for (auto& e : v) e = 1.0f;
        } else if (ends("dt_proj.bias")) {
            for (auto& e : v) e = std::log(std::expm1(uniform(0.001f, 0.1f)));  // softplus⁻¹ of dt
        } else {
            const float scale =
                s.size() >= 2 ? 1.0f / std::sqrt(static_cast<float>(s.back())) : 0.1f;
            for (auto& e : v) e = uniform(-scale, scale);
        }
        return ssm::Tensor::from(std::move(s), std::move(v));
    };
    src.contains = [](const std::string&) { return false; };
    return src;
}

struct Timer {
    cudaEvent_t start{}, stop{};
    cudaStream_t stream;
    explicit Timer(cudaStream_t s) : stream(s) {
        SSM_CUDA_CHECK(cudaEventCreate(&start));
        SSM_CUDA_CHECK(cudaEventCreate(&stop));
    }
    ~Timer() {
        (void)cudaEventDestroy(start);
        (void)cudaEventDestroy(stop);
    }
    void begin() { SSM_CUDA_CHECK(cudaEventRecord(start, stream)); }
    double end_seconds() {
        SSM_CUDA_CHECK(cudaEventRecord(stop, stream));
        SSM_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        SSM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        return ms / 1e3;
    }
};

std::vector<std::int32_t> random_tokens(ssm::index n, ssm::index vocab, std::uint64_t seed) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(n));
    for (auto& v : t) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        v = static_cast<std::int32_t>((seed >> 33) % static_cast<std::uint64_t>(vocab));
    }
    return t;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (cu::device_count() == 0) {
            std::printf("SKIPPED: no CUDA device\n");
            return 77;
        }
        const int steps = argc > 1 ? std::atoi(argv[1]) : 100;
        const auto config = mamba_130m();
        const ssm::index D = config.hidden_size, E = config.intermediate_size,
                         N = config.state_size, R = config.time_step_rank, V = config.vocab_size,
                         layers = config.num_hidden_layers;
        // Weights read per token (projections, conv, A, D) and the head; FLOPs per token of the
        // GEMMs.
        const double layer_params =
            static_cast<double>(2 * E * D + E * (R + 2 * N) + E * R + D * E + 4 * E + 2 * E * N);
        const double body_params = layers * layer_params;
        const double head_params = static_cast<double>(V * D);

        cudaDeviceProp prop{};
        SSM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        int device = 0, clock_khz = 0, mem_khz = 0, bus_bits = 0;
        SSM_CUDA_CHECK(cudaGetDevice(&device));
        SSM_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device));
        SSM_CUDA_CHECK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device));
        SSM_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
        const double peak_bw = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);  // bytes/s
        const int fp32_lanes = prop.major >= 9 ? 128 : 64;  // per SM: sm_90 128, sm_80 64
        const double peak_flops =
            2.0 * fp32_lanes * prop.multiProcessorCount * clock_khz * 1e3;  // FMA = 2

        std::printf(
            "mamba-130m shape (D %lld, %lld layers, E %lld, N %lld, vocab %lld), random fp32 "
            "weights\n",
            static_cast<long long>(D), static_cast<long long>(layers), static_cast<long long>(E),
            static_cast<long long>(N), static_cast<long long>(V));
        std::printf(
            "device: %s, %d SMs; peak DRAM %.0f GB/s, fp32 peak ~%.1f TFLOP/s (estimated)\n\n",
            prop.name, prop.multiProcessorCount, peak_bw / 1e9, peak_flops / 1e12);
        auto model = cu::MambaModel::from_source(config, random_weights());
        Timer timer(model.stream());

        std::printf("encode (last hidden state per sequence, no logits)\n");
        std::printf(
            "|      L |  nseq | ms / batch |     tokens/s | GEMM TFLOP/s | of fp32 peak |\n");
        std::printf(
            "|--------|-------|------------|--------------|--------------|--------------|\n");
        for (const ssm::index L : {512, 2048, 8192, 32768}) {
            const ssm::index nseq = std::max<ssm::index>(1, 65536 / L);
            ssm::Batch batch;
            for (ssm::index s = 0; s < nseq; ++s)
                batch.add(random_tokens(L, V, static_cast<std::uint64_t>(s + 1)));
            (void)model.last_hidden(batch);  // warm-up: sizes the workspace
            const int repeats = 3;
            timer.begin();
            for (int i = 0; i < repeats; ++i) (void)model.last_hidden(batch);
            const double sec = timer.end_seconds() / repeats;
            const double tokens = static_cast<double>(nseq * L);
            const double flops = 2.0 * body_params * tokens;
            std::printf("| %6lld | %5lld | %10.2f | %12.3e | %12.2f | %11.1f%% |\n",
                        static_cast<long long>(L), static_cast<long long>(nseq), sec * 1e3,
                        tokens / sec, flops / sec / 1e12, 100.0 * flops / sec / peak_flops);
        }

        std::printf("\ngreedy decoding (argmax on the device, %d steps)\n", steps);
        std::printf("| batch | ms / step |     tokens/s | weight-read floor ms | of floor |\n");
        std::printf("|-------|-----------|--------------|----------------------|----------|\n");
        const double floor_s = (body_params + head_params) * sizeof(float) / peak_bw;
        for (const ssm::index B : {1, 64}) {
            ssm::Batch prompts;
            for (ssm::index s = 0; s < B; ++s)
                prompts.add(random_tokens(16, V, static_cast<std::uint64_t>(100 + s)));
            auto state = model.make_state(B);
            std::vector<std::int32_t> next = model.prefill_greedy(prompts, state);
            next = model.step_greedy(next, state);  // warm-up
            timer.begin();
            for (int i = 0; i < steps; ++i) next = model.step_greedy(next, state);
            const double sec = timer.end_seconds() / steps;
            std::printf("| %5lld | %9.3f | %12.1f | %20.3f | %7.1f%% |\n",
                        static_cast<long long>(B), sec * 1e3, static_cast<double>(B) / sec,
                        floor_s * 1e3, 100.0 * floor_s / sec);
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
