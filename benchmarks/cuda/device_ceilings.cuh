// benchmarks/cuda/device_ceilings.cuh — the device's limits, measured in the same run as the
// figures they stand beside, so that a figure reads as a fraction of what this device does
// today rather than of a data-sheet number:
//
//   copy_bandwidth     bytes/s of a device-to-device cudaMemcpy (each byte read and written)
//   exp_throughput     expf evaluations/s of a kernel that touches no memory
//   gemm_throughput    FLOP/s of one large cuBLAS GEMM (fp32 or bf16 inputs, fp32 sums)
//   dram_bandwidth     the data-sheet figure from the device attributes (0 when not reported)
//
// and `fill_uniform`, random inputs made on the device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ssm/cuda/buffer.cuh"
#include "ssm/cuda/error.cuh"
#include "ssm/cuda/gemm.cuh"
#include "ssm/cuda/kernels.cuh"

namespace ssm::bench {

/// Seconds between two events recorded on one stream.
class EventTimer {
public:
    explicit EventTimer(cudaStream_t stream = nullptr) : stream_(stream) {
        SSM_CUDA_CHECK(cudaEventCreate(&start_));
        SSM_CUDA_CHECK(cudaEventCreate(&stop_));
    }
    ~EventTimer() {
        (void)cudaEventDestroy(start_);
        (void)cudaEventDestroy(stop_);
    }
    EventTimer(const EventTimer&) = delete;
    EventTimer& operator=(const EventTimer&) = delete;

    void begin() { SSM_CUDA_CHECK(cudaEventRecord(start_, stream_)); }
    /// Waits for the stop event; seconds since `begin`.
    [[nodiscard]] double seconds() {
        SSM_CUDA_CHECK(cudaEventRecord(stop_, stream_));
        SSM_CUDA_CHECK(cudaEventSynchronize(stop_));
        float ms = 0;
        SSM_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
        return ms / 1e3;
    }

private:
    cudaStream_t stream_;
    cudaEvent_t start_{}, stop_{};
};

/// The data-sheet DRAM bandwidth (double data rate × bus width) in bytes/s, from the device
/// attributes; 0 when the driver does not report the memory clock.
inline double dram_bandwidth() {
    int device = 0, clock_khz = 0, bus_bits = 0;
    SSM_CUDA_CHECK(cudaGetDevice(&device));
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0.0;
    }
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0);
}

/// Bytes/s moved by device-to-device cudaMemcpy of `bytes` (counted twice: read and write),
/// over `repeats` copies after one warm-up.
inline double copy_bandwidth(std::size_t bytes = std::size_t{1} << 30, int repeats = 10) {
    cuda::DeviceBuffer<unsigned char> a(bytes), b(bytes);
    a.zero();
    SSM_CUDA_CHECK(cudaMemcpy(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));
    EventTimer t;
    t.begin();
    for (int i = 0; i < repeats; ++i)
        SSM_CUDA_CHECK(cudaMemcpyAsync(i % 2 ? a.data() : b.data(), i % 2 ? b.data() : a.data(),
                                       bytes, cudaMemcpyDeviceToDevice));
    return 2.0 * static_cast<double>(bytes) * repeats / t.seconds();
}

namespace detail {

/// x[i] = uniform in [lo, hi) from a hash of i and the seed (no host traffic).
template <class T>
__global__ void fill_uniform_kernel(T* x, std::ptrdiff_t n, float lo, float hi,
                                    std::uint32_t seed) {
    for (std::ptrdiff_t i = blockIdx.x * static_cast<std::ptrdiff_t>(blockDim.x) + threadIdx.x;
         i < n; i += static_cast<std::ptrdiff_t>(gridDim.x) * blockDim.x) {
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

/// kChains independent chains of x ← −½·exp(x) per thread, in registers (x stays in
/// [−½, −0.18]: no overflow, no subnormals); the sum is stored so nothing is dropped.
template <int kChains>
__global__ void exp_chains_kernel(float* out, int iters) {
    const unsigned tid = blockIdx.x * blockDim.x + threadIdx.x;
    float x[kChains];
#pragma unroll
    for (int c = 0; c < kChains; ++c) x[c] = -0.25f - 1e-7f * static_cast<float>(tid % 1024 + c);
    for (int i = 0; i < iters; ++i)
#pragma unroll
        for (int c = 0; c < kChains; ++c) x[c] = -0.5f * expf(x[c]);
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < kChains; ++c) s += x[c];
    out[tid] = s;
}

}  // namespace detail

/// Fills a device buffer with uniform values in [lo, hi) (fp32 or bf16), on the device.
template <class T>
void fill_uniform(cuda::DeviceBuffer<T>& b, float lo, float hi, std::uint32_t seed) {
    if (b.empty()) return;
    detail::fill_uniform_kernel<T>
        <<<1024, 256>>>(b.data(), static_cast<std::ptrdiff_t>(b.size()), lo, hi, seed);
    SSM_CUDA_CHECK_LAUNCH("fill_uniform_kernel");
}

/// expf evaluations per second with no memory traffic: the ceiling of a kernel whose work is
/// mostly exp (the scan's exp(Δ·A) for every state). Each counted exp also costs one multiply.
inline double exp_throughput() {
    constexpr int kChains = 8, kThreads = 256, kIters = 4096;
    int device = 0, sms = 0;
    SSM_CUDA_CHECK(cudaGetDevice(&device));
    SSM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const int blocks = sms * 16;
    cuda::DeviceBuffer<float> out(static_cast<std::size_t>(blocks) * kThreads);
    detail::exp_chains_kernel<kChains><<<blocks, kThreads>>>(out.data(), 16);  // warm-up
    SSM_CUDA_CHECK_LAUNCH("exp_chains_kernel");
    EventTimer t;
    t.begin();
    detail::exp_chains_kernel<kChains><<<blocks, kThreads>>>(out.data(), kIters);
    SSM_CUDA_CHECK_LAUNCH("exp_chains_kernel");
    const double sec = t.seconds();
    return static_cast<double>(blocks) * kThreads * kIters * kChains / sec;
}

/// FLOP/s (2·n³ per product) of cuBLAS GEMMs n × n × n with In inputs and fp32 accumulation
/// (cuda::gemm, as the model calls it), over `repeats` products after one warm-up.
template <class In>
double gemm_throughput(long long n = 8192, int repeats = 5) {
    const auto elems = static_cast<std::size_t>(n * n);
    cuda::DeviceBuffer<In> x(elems), w(elems);
    cuda::DeviceBuffer<float> y(elems);
    fill_uniform(x, -1, 1, 1);  // random values: zeros would draw less power than real data
    fill_uniform(w, -1, 1, 2);
    cuda::Cublas blas;
    cuda::gemm<In>(blas, n, n, n, x.data(), n, w.data(), n, y.data(), n);
    EventTimer t;
    t.begin();
    for (int i = 0; i < repeats; ++i)
        cuda::gemm<In>(blas, n, n, n, x.data(), n, w.data(), n, y.data(), n);
    return 2.0 * static_cast<double>(n) * n * n * repeats / t.seconds();
}

}  // namespace ssm::bench
