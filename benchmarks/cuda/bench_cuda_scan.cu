// The selective scan alone: tokens/s per layer and achieved memory bandwidth, at
// mamba-130m's inner size (E 1536, N 16), sequence lengths 512 to 32k with about 65k
// tokens per call, fp32 and bf16 activations. The floor beside each figure is the time
// the bytes the scan must move take at the device's peak DRAM bandwidth.
//
//   ssm_bench_cuda_scan [repeats]
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <type_traits>
#include <vector>

#include "ssm/cuda/buffer.cuh"
#include "ssm/cuda/kernels.cuh"

namespace {

namespace cu = ssm::cuda;
using cu::dindex;

/// Fills x with uniform values in [lo, hi) from a hash of the index (no host traffic).
template <class T>
__global__ void fill_uniform(T* x, dindex n, float lo, float hi, std::uint32_t seed) {
    for (dindex i = blockIdx.x * static_cast<dindex>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<dindex>(gridDim.x) * blockDim.x) {
        std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
        h ^= h >> 16;
        h *= 0x7feb352du;
        h ^= h >> 15;
        h *= 0x846ca68bu;
        h ^= h >> 16;
        const float v = lo + (hi - lo) * (static_cast<float>(h >> 8) * (1.0f / 16777216.0f));
        if constexpr (std::is_same_v<T, float>)
            x[i] = v;
        else
            x[i] = __float2bfloat16_rn(v);
    }
}

template <class T>
void fill(cu::DeviceBuffer<T>& b, float lo, float hi, std::uint32_t seed) {
    fill_uniform<T><<<1024, 256>>>(b.data(), static_cast<dindex>(b.size()), lo, hi, seed);
    SSM_CUDA_CHECK_LAUNCH("fill_uniform");
}

double peak_bandwidth_gbs() {
    int device = 0, clock_khz = 0, bus_bits = 0;
    SSM_CUDA_CHECK(cudaGetDevice(&device));
    SSM_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
    SSM_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
}

template <class In>
void run(const char* type, dindex L, int repeats, double peak) {
    constexpr dindex E = 1536, N = 16, R = 48, kTokens = 65536;
    const dindex nseq = kTokens / L > 0 ? kTokens / L : 1;
    const dindex T = nseq * L, ldx = R + 2 * N;
    cu::DeviceBuffer<In> u(static_cast<std::size_t>(T * E)), dt(u.size()),
        xz(static_cast<std::size_t>(T * 2 * E)), xdbl(static_cast<std::size_t>(T * ldx)),
        y(u.size());
    cu::DeviceBuffer<float> A(static_cast<std::size_t>(E * N)), D(static_cast<std::size_t>(E)),
        bias(D.size()), state(static_cast<std::size_t>(nseq * E * N));
    fill(u, -1, 1, 1);
    fill(dt, -1, 1, 2);
    fill(xz, -2, 2, 3);
    fill(xdbl, -1, 1, 4);
    fill(A, -16, -1, 5);
    fill(D, 0.5f, 1.5f, 6);
    fill(bias, -4, -2, 7);
    std::vector<dindex> offsets(static_cast<std::size_t>(nseq + 1));
    for (dindex s = 0; s <= nseq; ++s) offsets[static_cast<std::size_t>(s)] = s * L;
    const cu::DeviceOffsets off(offsets);

    cu::ScanParams<In> p;
    p.T = T;
    p.E = E;
    p.N = static_cast<int>(N);
    p.u = u.data();
    p.ld_u = E;
    p.dt = dt.data();
    p.ld_dt = E;
    p.dt_bias = bias.data();
    p.dt_softplus = true;
    p.A = A.data();
    p.B = xdbl.data() + R;
    p.ld_B = ldx;
    p.C = xdbl.data() + R + N;
    p.ld_C = ldx;
    p.D = D.data();
    p.z = xz.data() + E;
    p.ld_z = 2 * E;
    p.y = y.data();
    p.ld_y = E;
    p.final_state = state.data();

    cudaEvent_t start, stop;
    SSM_CUDA_CHECK(cudaEventCreate(&start));
    SSM_CUDA_CHECK(cudaEventCreate(&stop));
    cu::selective_scan(p, off, nullptr);  // warm-up (and the shared-memory opt-in)
    SSM_CUDA_CHECK(cudaDeviceSynchronize());
    SSM_CUDA_CHECK(cudaEventRecord(start));
    for (int i = 0; i < repeats; ++i) cu::selective_scan(p, off, nullptr);
    SSM_CUDA_CHECK(cudaEventRecord(stop));
    SSM_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SSM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    SSM_CUDA_CHECK(cudaEventDestroy(start));
    SSM_CUDA_CHECK(cudaEventDestroy(stop));
    const double seconds = ms / 1e3 / repeats;
    // Bytes the scan must move: u, Δ, z in and y out per (t, e); B, C per (t, n); the state out.
    const double bytes =
        static_cast<double>(T) * (4.0 * E + 2.0 * N) * sizeof(In) + 4.0 * nseq * E * N;
    const double gbs = bytes / seconds / 1e9;
    std::printf("| %-5s | %6lld | %5lld | %9.3f | %12.3e | %8.1f | %5.1f%% |\n", type,
                static_cast<long long>(L), static_cast<long long>(nseq), seconds * 1e3,
                static_cast<double>(T) / seconds, gbs, 100.0 * gbs / peak);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (cu::device_count() == 0) {
            std::printf("SKIPPED: no CUDA device\n");
            return 77;
        }
        const int repeats = argc > 1 ? std::atoi(argv[1]) : 10;
        cudaDeviceProp prop{};
        SSM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        const double peak = peak_bandwidth_gbs();
        std::printf("selective scan, one layer: E 1536, N 16, ~65k tokens per call, %d repeats\n",
                    repeats);
        std::printf("device: %s, peak DRAM bandwidth %.0f GB/s\n\n", prop.name, peak);
        std::printf("| type  |      L |  nseq | ms / call |     tokens/s |     GB/s | of peak |\n");
        std::printf("|-------|--------|-------|-----------|--------------|----------|---------|\n");
        for (const dindex L : {512, 2048, 8192, 32768}) run<float>("fp32", L, repeats, peak);
        for (const dindex L : {512, 2048, 8192, 32768})
            run<__nv_bfloat16>("bf16", L, repeats, peak);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
