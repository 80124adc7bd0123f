// The selective scan alone, one layer at mamba-130m's inner size (E 1536, N 16): packed
// batches of about 65k tokens per call at sequence lengths 512 to 32k, bf16 activations
// (and fp32 for comparison), Δ finished inside (bias + softplus), the D skip and the silu(z)
// gate fused, the final states written. For each call: tokens/s, the bytes the scan must
// move per second, and exp evaluations per second — beside the ceilings measured in the
// same run: device-to-device copy bandwidth and the expf throughput of a kernel that
// touches no memory. Both algorithms of `cuda::selective_scan` run on the same inputs
// (the one-pass CUB block scan first, as the baseline; then the three-pass chunked scan,
// which evaluates the exponentials twice: the exp/s column counts the ones the scan needs,
// once each).
//
//   ssm_bench_cuda_scan [repeats]
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "device_ceilings.cuh"
#include "ssm/cuda/buffer.cuh"
#include "ssm/cuda/kernels.cuh"

namespace {

namespace cu = ssm::cuda;
namespace bench = ssm::bench;
using cu::dindex;

struct Ceilings {
    double copy_bytes_per_s, exp_per_s;
};

template <class In>
void run(const char* type, dindex L, int repeats, const Ceilings& top) {
    constexpr dindex E = 1536, N = 16, R = 48, kTokens = 65536;
    const dindex nseq = kTokens / L > 0 ? kTokens / L : 1;
    const dindex T = nseq * L, ldx = R + 2 * N;
    cu::DeviceBuffer<In> u(static_cast<std::size_t>(T * E)), dt(u.size()),
        xz(static_cast<std::size_t>(T * 2 * E)), xdbl(static_cast<std::size_t>(T * ldx)),
        y(u.size());
    cu::DeviceBuffer<float> A(static_cast<std::size_t>(E * N)), D(static_cast<std::size_t>(E)),
        bias(D.size()), state(static_cast<std::size_t>(nseq * E * N));
    bench::fill_uniform(u, -1, 1, 1);
    bench::fill_uniform(dt, -1, 1, 2);
    bench::fill_uniform(xz, -2, 2, 3);
    bench::fill_uniform(xdbl, -1, 1, 4);
    bench::fill_uniform(A, -16, -1, 5);
    bench::fill_uniform(D, 0.5f, 1.5f, 6);
    bench::fill_uniform(bias, -4, -2, 7);
    std::vector<dindex> offsets(static_cast<std::size_t>(nseq + 1));
    for (dindex s = 0; s <= nseq; ++s) offsets[static_cast<std::size_t>(s)] = s * L;
    const cu::DeviceOffsets off(offsets);

    cu::ScanParams<In> p =
        cu::mixer_scan_params<In>(T, E, N, R, u.data(), dt.data(), bias.data(), A.data(),
                                  xdbl.data(), D.data(), xz.data(), y.data());
    p.final_state = state.data();

    cu::DeviceBuffer<float> workspace;
    double block_scan_seconds = 0;
    for (const auto algorithm : {cu::ScanAlgorithm::BlockScan, cu::ScanAlgorithm::Chunked}) {
        // Warm-up: sizes the workspace, opts in to the shared memory.
        cu::selective_scan(p, off, workspace, nullptr, algorithm);
        SSM_CUDA_CHECK(cudaDeviceSynchronize());
        bench::EventTimer timer;
        timer.begin();
        for (int i = 0; i < repeats; ++i) cu::selective_scan(p, off, workspace, nullptr, algorithm);
        const double seconds = timer.seconds() / repeats;
        const bool chunked = algorithm == cu::ScanAlgorithm::Chunked;
        if (!chunked) block_scan_seconds = seconds;
        // Bytes the scan must move: u, Δ, z in and y out per (t, e); B, C per (t, n); the final
        // state out. Exps: exp(Δ·A) per (t, e, n), and per (t, e) one in softplus and one in silu.
        const double bytes =
            static_cast<double>(T) * (4.0 * E + 2.0 * N) * sizeof(In) + 4.0 * nseq * E * N;
        const double exps = static_cast<double>(T) * E * (N + 2);
        const double bytes_per_s = bytes / seconds, exp_per_s = exps / seconds;
        std::printf(
            "| %-5s | %-10s | %6lld | %5lld | %9.3f | %12.2fx | %12.3e | %8.1f | %6.1f%% | %10.3e "
            "| "
            "%6.1f%% |\n",
            type, chunked ? "chunked" : "block scan", static_cast<long long>(L),
            static_cast<long long>(nseq), seconds * 1e3, block_scan_seconds / seconds,
            static_cast<double>(T) / seconds, bytes_per_s / 1e9,
            100.0 * bytes_per_s / top.copy_bytes_per_s, exp_per_s,
            100.0 * exp_per_s / top.exp_per_s);
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (cu::device_count() == 0) {
            std::printf("SKIPPED: no CUDA device\n");
            return 77;
        }
        const int repeats = argc > 1 ? std::atoi(argv[1]) : 10;
        if (repeats < 1) {
            std::fprintf(stderr, "usage: ssm_bench_cuda_scan [repeats >= 1]\n");
            return 2;
        }
        cudaDeviceProp prop{};
        SSM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        const Ceilings top{bench::copy_bandwidth(), bench::exp_throughput()};
        const double sheet = bench::dram_bandwidth();
        std::printf(
            "selective scan, one layer: E 1536, N 16, ~65k tokens per call, %d repeats\n"
            "device: %s, %d SMs\n"
            "ceilings measured in this run: device-to-device copy %.0f GB/s (data sheet %.0f "
            "GB/s), expf %.3e /s\n\n",
            repeats, prop.name, prop.multiProcessorCount, top.copy_bytes_per_s / 1e9, sheet / 1e9,
            top.exp_per_s);
        std::printf(
            "| type  | algorithm  |      L |  nseq | ms / call | vs block scan |     tokens/s |    "
            " "
            "GB/s | of copy |      exp/s | of expf |\n");
        std::printf(
            "|-------|------------|--------|-------|-----------|---------------|--------------|----"
            "-"
            "-----|---------|------------|---------|\n");
        for (const dindex L : {512, 2048, 8192, 32768}) run<__nv_bfloat16>("bf16", L, repeats, top);
        for (const dindex L : {512, 2048, 8192, 32768}) run<float>("fp32", L, repeats, top);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
