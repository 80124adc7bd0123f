// ssm/cuda/norm.cuh — residual add fused with RMSNorm or LayerNorm on the device
// (residual += delta, then ssm::RMSNorm / ssm::LayerNorm::forward), and Falcon-Mamba's
// weightless RMS normalisation of dt_low, B and C (`normalize_dt_b_c`).
#pragma once

#include <cub/block/block_reduce.cuh>

#include <climits>

#include "ssm/cuda/common.cuh"

namespace ssm::cuda {

namespace detail {

// ---- residual add + norm -------------------------------------------------------------------

/// One block per row: residual += delta (when given), then out = Norm(residual).
/// RMSNorm: x · (1/sqrt(mean(x²) + eps)) · w. LayerNorm: (x − mean) · (1/sqrt(var + eps)) · w + b.
template <int kThreads, bool kLayerNorm>
__global__ void __launch_bounds__(kThreads)
    add_norm_kernel(float* __restrict__ residual, dindex ld_res, const float* __restrict__ delta,
                    dindex ld_delta, const float* __restrict__ weight,
                    const float* __restrict__ bias, dindex dim, float eps, float* out,
                    dindex ld_out) {
    using Reduce = cub::BlockReduce<float, kThreads>;
    __shared__ typename Reduce::TempStorage reduce_storage;
    __shared__ float s_mean, s_scale;
    const dindex row = blockIdx.x;
    float* r = residual + row * ld_res;
    const float n = static_cast<float>(dim);

    float sum = 0.0f;
    for (dindex c = threadIdx.x; c < dim; c += kThreads) {
        float v = r[c];
        if (delta) {
            v += delta[row * ld_delta + c];
            r[c] = v;
        }
        sum += kLayerNorm ? v : v * v;
    }
    sum = Reduce(reduce_storage).Sum(sum);  // valid in thread 0
    float mean = 0.0f;
    if constexpr (kLayerNorm) {
        if (threadIdx.x == 0) s_mean = sum / n;
        __syncthreads();
        mean = s_mean;
        float sq = 0.0f;
        for (dindex c = threadIdx.x; c < dim; c += kThreads) {
            const float d = r[c] - mean;
            sq += d * d;
        }
        sq = Reduce(reduce_storage)
                 .Sum(sq);  // storage reuse is safe: the barrier above separates the two
        if (threadIdx.x == 0) s_scale = 1.0f / sqrtf(sq / n + eps);
    } else {
        if (threadIdx.x == 0) s_scale = 1.0f / sqrtf(sum / n + eps);
    }
    __syncthreads();
    const float scale = s_scale;
    // Each thread reads back only the columns it wrote, so `out` may alias `residual`.
    for (dindex c = threadIdx.x; c < dim; c += kThreads) {
        if constexpr (kLayerNorm) {
            float v = ((r[c] - mean) * scale) * weight[c];
            if (bias) v += bias[c];
            out[row * ld_out + c] = v;
        } else {
            out[row * ld_out + c] = (r[c] * scale) * weight[c];
        }
    }
}

}  // namespace detail

/// Which normalisation `add_norm` applies.
enum class NormType { RMSNorm, LayerNorm };

/// For each of `rows` rows: residual += delta (skipped when delta is null), then
/// out = Norm(residual) · weight (+ bias for LayerNorm). `out` may equal `residual`.
inline void add_norm(NormType type, float* residual, dindex ld_res, const float* delta,
                     dindex ld_delta, const float* weight, const float* bias, dindex rows,
                     dindex dim, float eps, float* out, dindex ld_out, cudaStream_t stream) {
    require(rows >= 0 && dim > 0 && ld_res >= dim && ld_out >= dim && (!delta || ld_delta >= dim) &&
                weight,
            "cuda::add_norm: bad sizes or missing weight");
    require(rows <= INT_MAX, "cuda::add_norm: too many rows");
    if (rows == 0) return;
    constexpr int threads = 256;
    const unsigned grid = static_cast<unsigned>(rows);
    if (type == NormType::RMSNorm)
        detail::add_norm_kernel<threads, false><<<grid, threads, 0, stream>>>(
            residual, ld_res, delta, ld_delta, weight, nullptr, dim, eps, out, ld_out);
    else
        detail::add_norm_kernel<threads, true><<<grid, threads, 0, stream>>>(
            residual, ld_res, delta, ld_delta, weight, bias, dim, eps, out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("add_norm_kernel");
}

namespace detail {

/// One warp per (row, part) of x_proj's output [dt_low (R) | B (N) | C (N)]: the part
/// becomes v · (1 / sqrt(mean(v²) + eps)), the sum of squares and the scale in double and
/// the scale rounded to float once, as the CPU's `MambaMixer` computes them. Every lane of
/// a warp takes the same (row, part), so the shuffles see the whole warp.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    normalize_dt_b_c_kernel(float* __restrict__ xdbl, dindex rows, dindex ld, int R, int N,
                            double eps) {
    static_assert(kThreads % 32 == 0, "whole warps");
    const int lane = static_cast<int>(threadIdx.x) & 31;
    for (dindex w = global_thread() / 32; w < rows * 3; w += grid_threads() / 32) {
        const dindex row = w / 3;
        const int part = static_cast<int>(w - row * 3);
        const int start = part == 0 ? 0 : (part == 1 ? R : R + N), width = part == 0 ? R : N;
        float* v = xdbl + row * ld + start;
        double sum = 0.0;
        for (int i = lane; i < width; i += 32) sum += static_cast<double>(v[i]) * v[i];
        const auto scale = static_cast<float>(1.0 / sqrt(warp_sum(sum) / width + eps));
        for (int i = lane; i < width; i += 32) v[i] *= scale;
    }
}

}  // namespace detail

/// Falcon-Mamba (`ssm::MambaMixer` with `mixer_rms_eps`): in each of `rows` rows of x_proj's
/// output [dt_low (R) | B (N) | C (N)] (row stride `ld`), each of the three parts becomes
/// v / sqrt(mean(v²) + eps), in place, as transformers' `FalconMambaMixer` does before
/// dt_proj and the scan.
inline void normalize_dt_b_c(float* xdbl, dindex rows, dindex ld, int R, int N, double eps,
                             cudaStream_t stream) {
    require(rows >= 0 && R > 0 && N > 0 && ld >= R + 2 * static_cast<dindex>(N) && eps > 0.0,
            "cuda::normalize_dt_b_c: bad sizes rows ", rows, ", R ", R, ", N ", N, ", ld ", ld,
            ", or eps ", eps, " not positive");
    if (rows == 0) return;
    require(xdbl, "cuda::normalize_dt_b_c: no input");
    detail::normalize_dt_b_c_kernel<detail::kBlockThreads>
        <<<detail::grid_for(rows * 3 * 32, detail::kBlockThreads), detail::kBlockThreads, 0,
           stream>>>(xdbl, rows, ld, R, N, eps);
    SSM_CUDA_CHECK_LAUNCH("normalize_dt_b_c_kernel");
}

}  // namespace ssm::cuda
