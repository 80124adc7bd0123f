// ssm/cuda/convert.cuh — fp32 ↔ bf16 conversion on the device (`convert`, `convert_rows`:
// the bf16 operand of a bf16 GEMM).
#pragma once

#include "ssm/cuda/common.cuh"

namespace ssm::cuda {

namespace detail {

template <class From, class To>
__global__ void convert_kernel(const From* __restrict__ src, To* __restrict__ dst, dindex n) {
    for (dindex i = global_thread(); i < n; i += grid_threads())
        dst[i] = from_float<To>(to_float(src[i]));
}

/// dst (rows, cols; ld_dst) = src (rows, cols; ld_src) converted: a column slice of a wider
/// matrix becomes a packed operand.
template <class From, class To>
__global__ void convert_rows_kernel(const From* __restrict__ src, dindex ld_src, dindex rows,
                                    dindex cols, To* __restrict__ dst, dindex ld_dst) {
    for (dindex i = global_thread(); i < rows * cols; i += grid_threads()) {
        const dindex r = i / cols, c = i - r * cols;
        dst[r * ld_dst + c] = from_float<To>(to_float(src[r * ld_src + c]));
    }
}

}  // namespace detail

/// dst[i] = src[i] converted (fp32 ↔ bf16, round to nearest even).
template <class From, class To>
void convert(const From* src, To* dst, dindex n, cudaStream_t stream) {
    if (n <= 0) return;
    detail::convert_kernel<From, To>
        <<<detail::grid_for(n, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(src, dst,
                                                                                           n);
    SSM_CUDA_CHECK_LAUNCH("convert_kernel");
}

/// dst (rows, cols; ld_dst) = src (rows, cols; ld_src) converted (fp32 ↔ bf16, round to
/// nearest even): how an fp32 activation becomes the bf16 operand of a bf16 GEMM.
template <class From, class To>
void convert_rows(const From* src, dindex ld_src, dindex rows, dindex cols, To* dst, dindex ld_dst,
                  cudaStream_t stream) {
    require(rows >= 0 && cols > 0 && ld_src >= cols && ld_dst >= cols,
            "cuda::convert_rows: bad sizes");
    if (rows == 0) return;
    detail::convert_rows_kernel<From, To>
        <<<detail::grid_for(rows * cols, detail::kBlockThreads), detail::kBlockThreads, 0,
           stream>>>(src, ld_src, rows, cols, dst, ld_dst);
    SSM_CUDA_CHECK_LAUNCH("convert_rows_kernel");
}

}  // namespace ssm::cuda
