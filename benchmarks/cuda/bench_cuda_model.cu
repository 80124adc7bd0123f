// The whole model at mamba-130m's shape (D 768, 24 layers, E 1536, dt_rank 48, N 16, vocab
// 50280; random weights), with fp32 weights and then with bf16 weights on the device
// (`store_weights_bf16`):
//   - encoding: the final hidden state at each sequence's last token (what a bi-encoder
//     reads) for packed batches of ~64k tokens at lengths 512, 2k, 8k and 32k: tokens/s;
//   - greedy decoding (argmax on the device, the chosen ids copied back every step):
//     per-token latency at batch 1 and tokens/s at batch 64;
// then the same two tables for a Mamba-2 model at mamba2-130m's shape (d_inner 1536, 24
// heads of 64, N 128, chunk 256, vocab 50288; random weights), and its encoding table again
// with the SSD's chunk products on the tensor cores (`SsdMath::Tf32x3`).
// First, one layer's operations one at a time at the encoding shape (where a batch's time
// goes); decoding runs with the step's kernels launched one by one and as the captured CUDA
// graph (the default), side by side.
// Beside each figure its floor, from ceilings measured in the same run: for encoding the
// projections' FLOPs at the throughput of one large cuBLAS GEMM of the same input type; for
// decoding the bytes a step must move (every weight once, each sequence's state read and
// written, the logits written) at the device-to-device copy bandwidth.
//
//   ssm_bench_cuda_model [decode_steps]
#include <cuda_bf16.h>
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

#include "../mamba_130m_checkpoint.hpp"
#include "device_ceilings.cuh"
#include "ssm/cuda/model.cuh"

namespace {

namespace cu = ssm::cuda;
namespace bench = ssm::bench;
using cu::dindex;

std::vector<std::int32_t> random_tokens(ssm::index n, ssm::index vocab, std::uint64_t seed) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(n));
    for (auto& v : t) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        v = static_cast<std::int32_t>((seed >> 33) % static_cast<std::uint64_t>(vocab));
    }
    return t;
}

struct Ceilings {
    double copy_bytes_per_s, gemm_fp32, gemm_bf16;  // bytes/s, FLOP/s, FLOP/s
};

/// Encoding at each length, ~64k tokens per batch: tokens/s and the projections' FLOP/s
/// against the GEMM ceiling for the model's weight type.
void encode_table(cu::MambaModel& model, double gemm_flops_per_token, double gemm_ceiling) {
    const ssm::index V = model.vocab_size();
    std::printf(
        "|      L |  nseq | ms / batch |     tokens/s | GEMM TFLOP/s | of GEMM ceiling |\n");
    std::printf(
        "|--------|-------|------------|--------------|--------------|-----------------|\n");
    bench::EventTimer timer(model.stream());
    for (const ssm::index L : {512, 2048, 8192, 32768}) {
        const ssm::index nseq = std::max<ssm::index>(1, 65536 / L);
        ssm::Batch batch;
        for (ssm::index s = 0; s < nseq; ++s)
            batch.add(random_tokens(L, V, static_cast<std::uint64_t>(s + 1)));
        (void)model.last_hidden(batch);  // warm-up: sizes the workspace
        constexpr int kRepeats = 3;
        timer.begin();
        for (int i = 0; i < kRepeats; ++i) (void)model.last_hidden(batch);
        const double sec = timer.seconds() / kRepeats;
        const double tokens = static_cast<double>(nseq * L);
        const double flops = gemm_flops_per_token * tokens;
        std::printf("| %6lld | %5lld | %10.2f | %12.3e | %12.1f | %14.1f%% |\n",
                    static_cast<long long>(L), static_cast<long long>(nseq), sec * 1e3,
                    tokens / sec, flops / sec / 1e12, 100.0 * flops / sec / gemm_ceiling);
    }
}

/// Greedy decoding at batch 1 and 64 after a 16-token prompt each: per-step latency,
/// tokens/s, and the time the step's unavoidable bytes take at the copy bandwidth; each
/// batch with the step's kernels launched one by one (the baseline) and as the captured
/// CUDA graph the model uses by default.
void decode_table(cu::MambaModel& model, int steps, double state_bytes_per_seq,
                  double copy_bytes_per_s) {
    const ssm::index V = model.vocab_size();
    std::printf(
        "| batch | launch  | ms / step | vs kernels |     tokens/s | MB moved / step | floor ms | "
        "of floor |\n");
    std::printf(
        "|-------|---------|-----------|------------|--------------|-----------------|----------|"
        "----------|\n");
    bench::EventTimer timer(model.stream());
    for (const ssm::index B : {1, 64}) {
        double kernels_sec = 0;
        for (const bool graph : {false, true}) {
            model.use_decode_graph(graph);
            ssm::Batch prompts;
            for (ssm::index s = 0; s < B; ++s)
                prompts.add(random_tokens(16, V, static_cast<std::uint64_t>(100 + s)));
            auto state = model.make_state(B);
            std::vector<std::int32_t> next = model.prefill_greedy(prompts, state);
            for (int i = 0; i < 2; ++i) next = model.step_greedy(next, state);  // warm-up, capture
            if (graph && !model.decode_graph_used())
                std::printf("(the decoding graph was not used: %s)\n",
                            model.decode_graph_error().c_str());
            timer.begin();
            for (int i = 0; i < steps; ++i) next = model.step_greedy(next, state);
            const double sec = timer.seconds() / steps;
            if (!graph) kernels_sec = sec;
            const double bytes = static_cast<double>(model.weight_bytes()) +
                                 2.0 * state_bytes_per_seq * static_cast<double>(B) +
                                 4.0 * static_cast<double>(B * V);
            const double floor_s = bytes / copy_bytes_per_s;
            std::printf("| %5lld | %-7s | %9.3f | %9.2fx | %12.1f | %15.1f | %8.3f | %7.1f%% |\n",
                        static_cast<long long>(B), graph ? "graph" : "kernels", sec * 1e3,
                        kernels_sec / sec, static_cast<double>(B) / sec, bytes / 1e6, floor_s * 1e3,
                        100.0 * floor_s / sec);
        }
    }
    model.use_decode_graph(true);
}

/// One layer's operations, one at a time, as the bf16-weight encoder runs them on a packed
/// batch of 128 × 512 tokens: time per call, the bytes each must move at least (inputs read
/// and outputs written once) against the copy bandwidth, and the GEMMs' FLOP/s against the
/// bf16 GEMM ceiling. Their sum times the layer count is where an encoding batch's time
/// goes.
void layer_ops_table(const ssm::MambaConfig& c, const Ceilings& top) {
    const dindex T = 65536, L = 512, D = c.hidden_size, E = c.intermediate_size, N = c.state_size,
                 R = c.time_step_rank, K = c.conv_kernel, J = R + 2 * N;
    const auto n = [](dindex a, dindex b) { return static_cast<std::size_t>(a * b); };
    cu::Stream stream;
    cu::Cublas blas(stream.get());
    cu::DeviceBuffer<float> residual(n(T, D)), delta(n(T, D)), h(n(T, D)), xz(n(T, 2 * E)),
        u(n(T, E)), xdbl(n(T, J)), dt(n(T, E)), y(n(T, E)), norm_w(n(1, D)), taps(n(K, E)),
        conv_b(n(1, E)), A(n(E, N)), Dskip(n(1, E)), dt_b(n(1, E)), scan_ws;
    cu::DeviceBuffer<__nv_bfloat16> x16(n(T, E)), w_in(n(2 * E, D)), w_x(n(J, E)), w_dt(n(E, R)),
        w_out(n(D, E));
    bench::fill_uniform(residual, -1, 1, 11);
    bench::fill_uniform(delta, -1, 1, 12);
    bench::fill_uniform(norm_w, 0.5f, 1.5f, 13);
    bench::fill_uniform(taps, -0.5f, 0.5f, 14);
    bench::fill_uniform(conv_b, -0.1f, 0.1f, 15);
    bench::fill_uniform(A, -16, -1, 16);
    bench::fill_uniform(Dskip, 0.5f, 1.5f, 17);
    bench::fill_uniform(dt_b, -4, -2, 18);
    bench::fill_uniform(w_in, -0.03f, 0.03f, 19);
    bench::fill_uniform(w_x, -0.03f, 0.03f, 20);
    bench::fill_uniform(w_dt, -0.1f, 0.1f, 21);
    bench::fill_uniform(w_out, -0.03f, 0.03f, 22);
    SSM_CUDA_CHECK(cudaDeviceSynchronize());  // filled on the default stream
    std::vector<dindex> offsets;
    for (dindex t = 0; t <= T; t += L) offsets.push_back(t);
    const cu::DeviceOffsets off(offsets);
    // The inputs of the later ops, made once by the earlier ones.
    cu::add_norm(cu::NormType::RMSNorm, residual.data(), D, delta.data(), D, norm_w.data(), nullptr,
                 T, D, 1e-5f, h.data(), D, stream);
    cu::convert_rows<float, __nv_bfloat16>(h.data(), D, T, D, x16.data(), D, stream);
    cu::gemm<__nv_bfloat16>(blas, T, 2 * E, D, x16.data(), D, w_in.data(), D, xz.data(), 2 * E);
    cu::causal_conv1d<float>(xz.data(), 2 * E, E, static_cast<int>(K), taps.data(), conv_b.data(),
                             off, nullptr, nullptr, true, u.data(), E, stream);
    cu::convert_rows<float, __nv_bfloat16>(u.data(), E, T, E, x16.data(), E, stream);
    cu::gemm<__nv_bfloat16>(blas, T, J, E, x16.data(), E, w_x.data(), E, xdbl.data(), J);
    const cu::ScanParams<float> p =
        cu::mixer_scan_params<float>(T, E, N, R, u.data(), dt.data(), dt_b.data(), A.data(),
                                     xdbl.data(), Dskip.data(), xz.data(), y.data());

    struct Op {
        const char* name;
        double bytes, flops;
        std::function<void()> run;
    };
    const double f = 4.0, b = 2.0;  // bytes per fp32 / bf16 element
    const auto td = static_cast<double>(T);
    const std::vector<Op> ops = {
        {"residual add + RMSNorm", td * D * f * 4, 0,
         [&] {
             cu::add_norm(cu::NormType::RMSNorm, residual.data(), D, delta.data(), D, norm_w.data(),
                          nullptr, T, D, 1e-5f, h.data(), D, stream);
         }},
        {"h to bf16", td * D * (f + b), 0,
         [&] { cu::convert_rows<float, __nv_bfloat16>(h.data(), D, T, D, x16.data(), D, stream); }},
        {"in_proj GEMM", td * (D * b + 2 * E * f), 2.0 * td * D * 2 * E,
         [&] {
             cu::gemm<__nv_bfloat16>(blas, T, 2 * E, D, x16.data(), D, w_in.data(), D, xz.data(),
                                     2 * E);
         }},
        {"causal conv1d + SiLU", td * E * 2 * f, 0,
         [&] {
             cu::causal_conv1d<float>(xz.data(), 2 * E, E, static_cast<int>(K), taps.data(),
                                      conv_b.data(), off, nullptr, nullptr, true, u.data(), E,
                                      stream);
         }},
        {"u to bf16", td * E * (f + b), 0,
         [&] { cu::convert_rows<float, __nv_bfloat16>(u.data(), E, T, E, x16.data(), E, stream); }},
        {"x_proj GEMM", td * (E * b + J * f), 2.0 * td * E * J,
         [&] {
             cu::gemm<__nv_bfloat16>(blas, T, J, E, x16.data(), E, w_x.data(), E, xdbl.data(), J);
         }},
        {"dt_low to bf16", td * R * (f + b), 0,
         [&] {
             cu::convert_rows<float, __nv_bfloat16>(xdbl.data(), J, T, R, x16.data(), R, stream);
         }},
        {"dt_proj GEMM", td * (R * b + E * f), 2.0 * td * R * E,
         [&] {
             cu::gemm<__nv_bfloat16>(blas, T, E, R, x16.data(), R, w_dt.data(), R, dt.data(), E);
         }},
        {"selective scan", td * (4 * E * f + 2 * N * f), 0,
         [&] { cu::selective_scan(p, off, scan_ws, stream); }},
        {"y to bf16", td * E * (f + b), 0,
         [&] { cu::convert_rows<float, __nv_bfloat16>(y.data(), E, T, E, x16.data(), E, stream); }},
        {"out_proj GEMM", td * (E * b + D * f), 2.0 * td * E * D,
         [&] {
             cu::gemm<__nv_bfloat16>(blas, T, D, E, x16.data(), E, w_out.data(), E, delta.data(),
                                     D);
         }},
    };
    std::printf(
        "\none layer op by op (bf16 weights, fp32 activations, 128 x 512 tokens packed)\n"
        "| op                     | ms / call | min GB moved |     GB/s | of copy | TFLOP/s | of "
        "GEMM |\n"
        "|------------------------|-----------|--------------|----------|---------|---------|-----"
        "----|\n");
    bench::EventTimer timer(stream.get());
    double total = 0;
    for (const Op& op : ops) {
        op.run();  // warm-up
        constexpr int kRepeats = 10;
        timer.begin();
        for (int i = 0; i < kRepeats; ++i) op.run();
        const double sec = timer.seconds() / kRepeats;
        total += sec;
        std::printf("| %-22s | %9.3f | %12.3f | %8.1f | %6.1f%% |", op.name, sec * 1e3,
                    op.bytes / 1e9, op.bytes / sec / 1e9,
                    100.0 * op.bytes / sec / top.copy_bytes_per_s);
        if (op.flops > 0)
            std::printf(" %7.1f | %6.1f%% |\n", op.flops / sec / 1e12,
                        100.0 * op.flops / sec / top.gemm_bf16);
        else
            std::printf("         |         |\n");
    }
    std::printf("| sum                    | %9.3f |  x %lld layers = %.1f ms per batch\n",
                total * 1e3, static_cast<long long>(c.num_hidden_layers),
                total * 1e3 * static_cast<double>(c.num_hidden_layers));
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (cu::device_count() == 0) {
            std::printf("SKIPPED: no CUDA device\n");
            return 77;
        }
        const int steps = argc > 1 ? std::atoi(argv[1]) : 100;
        if (steps < 1) {
            std::fprintf(stderr, "usage: ssm_bench_cuda_model [decode_steps >= 1]\n");
            return 2;
        }
        // The same random mamba-130m-shaped checkpoint as the CPU benchmarks (written once
        // to SSM_BENCH_DIR or the temp folder), loaded by the CPU loader and uploaded.
        bench::make_checkpoint(bench::checkpoint_dir());
        const auto config = ssm::MambaConfig::load(bench::checkpoint_dir());
        const ssm::index D = config.hidden_size, E = config.intermediate_size,
                         N = config.state_size, R = config.time_step_rank, K = config.conv_kernel,
                         layers = config.num_hidden_layers;
        // Per token, the projections' FLOPs (2 per weight: in_proj, x_proj, dt_proj, out_proj).
        const double gemm_flops_per_token =
            2.0 * layers * static_cast<double>(2 * E * D + (R + 2 * N) * E + E * R + D * E);
        // Per sequence, the recurrent state: conv (K−1, E) and SSM (E, N) in every layer.
        const double state_bytes_per_seq = 4.0 * layers * static_cast<double>((K - 1) * E + E * N);

        cudaDeviceProp prop{};
        SSM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        const Ceilings top{bench::copy_bandwidth(), bench::gemm_throughput<float>(),
                           bench::gemm_throughput<__nv_bfloat16>()};
        std::printf(
            "mamba-130m shape (D %lld, %lld layers, E %lld, dt_rank %lld, N %lld, vocab %lld), "
            "random weights\n"
            "device: %s, %d SMs\n"
            "ceilings measured in this run: device-to-device copy %.0f GB/s (data sheet %.0f "
            "GB/s); cuBLAS GEMM 8192^3 fp32 %.1f TFLOP/s, bf16 inputs %.1f TFLOP/s (fp32 sums)\n",
            static_cast<long long>(D), static_cast<long long>(layers), static_cast<long long>(E),
            static_cast<long long>(R), static_cast<long long>(N),
            static_cast<long long>(config.vocab_size), prop.name, prop.multiProcessorCount,
            top.copy_bytes_per_s / 1e9, bench::dram_bandwidth() / 1e9, top.gemm_fp32 / 1e12,
            top.gemm_bf16 / 1e12);
        layer_ops_table(config, top);
        auto model = cu::MambaModel::load(bench::checkpoint_dir());

        for (const bool bf16 : {false, true}) {
            if (bf16) model.store_weights_bf16();
            std::printf("\n== %s weights (%.0f MB on the device)\n", bf16 ? "bf16" : "fp32",
                        static_cast<double>(model.weight_bytes()) / 1e6);
            std::printf("\nencode (last hidden state per sequence, no logits)\n");
            encode_table(model, gemm_flops_per_token, bf16 ? top.gemm_bf16 : top.gemm_fp32);
            std::printf("\ngreedy decoding, %d steps (argmax on the device, ids copied back)\n",
                        steps);
            decode_table(model, steps, state_bytes_per_seq, top.copy_bytes_per_s);
        }

        // The same two tables for a Mamba-2 model of equal width (mamba2-130m's shape).
        bench::make_mamba2_checkpoint(bench::mamba2_checkpoint_dir());
        auto model2 = cu::MambaModel::load(bench::mamba2_checkpoint_dir());
        const auto& c2 = model2.config();
        const double gemm_flops_per_token2 =
            2.0 * static_cast<double>(c2.num_hidden_layers) * bench::kLayerGemmParams2;
        // conv (K−1, d_inner + 2N) and SSM (H, P, N) in every layer.
        const double state_bytes_per_seq2 =
            4.0 * static_cast<double>(c2.num_hidden_layers) *
            static_cast<double>((bench::kK - 1) * (bench::kE + 2 * bench::kN2) + bench::kE * bench::kN2);
        std::printf("\n\nmamba2-130m shape (D %lld, %lld layers, d_inner %lld, %lld heads of %lld, N %lld, "
                    "chunk %lld, vocab %lld), random weights\n",
                    static_cast<long long>(c2.hidden_size), static_cast<long long>(c2.num_hidden_layers),
                    static_cast<long long>(bench::kE), static_cast<long long>(bench::kH2),
                    static_cast<long long>(bench::kP2), static_cast<long long>(bench::kN2),
                    static_cast<long long>(bench::kChunk2), static_cast<long long>(c2.vocab_size));
        for (const bool bf16 : {false, true}) {
            if (bf16) model2.store_weights_bf16();
            std::printf("\n== Mamba-2, %s weights (%.0f MB on the device)\n", bf16 ? "bf16" : "fp32",
                        static_cast<double>(model2.weight_bytes()) / 1e6);
            std::printf("\nencode (last hidden state per sequence, no logits)\n");
            encode_table(model2, gemm_flops_per_token2, bf16 ? top.gemm_bf16 : top.gemm_fp32);
            std::printf("\ngreedy decoding, %d steps (argmax on the device, ids copied back)\n", steps);
            decode_table(model2, steps, state_bytes_per_seq2, top.copy_bytes_per_s);
        }
        // The SSD's chunk products on the tensor cores (TF32 with error compensation) beside
        // the CUDA cores' table above (bf16 weights both).
        model2.set_ssd_math(cu::SsdMath::Tf32x3);
        std::printf("\n== Mamba-2, bf16 weights, the SSD's products on the tensor cores (TF32 x 3)\n");
        std::printf("\nencode (last hidden state per sequence, no logits)\n");
        encode_table(model2, gemm_flops_per_token2, top.gemm_bf16);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
