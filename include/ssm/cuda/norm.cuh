// ssm/cuda/norm.cuh — residual add fused with RMSNorm or LayerNorm on the device
// (residual += delta, then ssm::RMSNorm / ssm::LayerNorm::forward).
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

/// Causal depthwise conv over packed sequences (`ssm::CausalConv1d::forward`).

}  // namespace ssm::cuda
