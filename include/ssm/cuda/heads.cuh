// ssm/cuda/heads.cuh — what the heads need on the device: row argmax (greedy sampling,
// Eigen's maxCoeff: the first largest) and the last token of every packed sequence.
#pragma once

#include <cub/block/block_reduce.cuh>

#include <climits>
#include <cstdint>

#include "ssm/cuda/common.cuh"

namespace ssm::cuda {

namespace detail {

// ---- heads -------------------------------------------------------------------------------------

/// One block per row: the index of the largest value, the first one on ties (as Eigen's
/// maxCoeff); NaNs are skipped; -1 for a row of only NaNs.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    argmax_rows_kernel(const float* __restrict__ x, dindex cols, dindex ld,
                       std::int32_t* __restrict__ out) {
    struct Best {
        float value;
        dindex index;  // -1: none yet
    };
    struct Larger {
        __device__ Best operator()(const Best& l, const Best& r) const {
            if (r.index < 0) return l;
            if (l.index < 0) return r;
            if (r.value > l.value || (r.value == l.value && r.index < l.index)) return r;
            return l;
        }
    };
    using Reduce = cub::BlockReduce<Best, kThreads>;
    __shared__ typename Reduce::TempStorage storage;
    const dindex row = blockIdx.x;
    Best best{0.0f, -1};
    for (dindex c = threadIdx.x; c < cols; c += kThreads) {
        const float v = x[row * ld + c];
        if (v == v && (best.index < 0 || v > best.value))
            best = {v, c};  // columns ascend: first max kept
    }
    best = Reduce(storage).Reduce(best, Larger{});
    if (threadIdx.x == 0) out[row] = static_cast<std::int32_t>(best.index);
}

/// out (nseq, D) = rows offsets[s+1] − 1 of x: the last token of every sequence.
template <class T>
__global__ void gather_last_rows_kernel(const T* __restrict__ x, dindex ld_x, dindex D,
                                        const dindex* __restrict__ offsets, int nseq,
                                        T* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < nseq * D; i += grid_threads()) {
        const dindex s = i / D, c = i - s * D;
        out[s * ld_out + c] = x[(offsets[s + 1] - 1) * ld_x + c];
    }
}

}  // namespace detail

/// out (rows) = argmax of each row of x (rows, cols; ld), on the device.
inline void argmax_rows(const float* x, dindex rows, dindex cols, dindex ld, std::int32_t* out,
                        cudaStream_t stream) {
    require(rows >= 0 && rows <= INT_MAX && cols > 0 && cols <= INT_MAX && ld >= cols,
            "cuda::argmax_rows: bad sizes");
    if (rows == 0) return;
    constexpr int threads = 256;
    detail::argmax_rows_kernel<threads>
        <<<static_cast<unsigned>(rows), threads, 0, stream>>>(x, cols, ld, out);
    SSM_CUDA_CHECK_LAUNCH("argmax_rows_kernel");
}

/// out (nseq, D; ld_out) = the last row of every sequence of x (T, D; ld_x).
template <class T>
void gather_last_rows(const T* x, dindex ld_x, dindex D, const DeviceOffsets& offsets, T* out,
                      dindex ld_out, cudaStream_t stream) {
    require(D > 0 && ld_x >= D && ld_out >= D, "cuda::gather_last_rows: bad sizes");
    require(offsets.all_nonempty(),
            "cuda::gather_last_rows: a sequence is empty (it has no last row)");
    const dindex work = static_cast<dindex>(offsets.sequences()) * D;
    if (work == 0) return;
    detail::gather_last_rows_kernel<T>
        <<<detail::grid_for(work, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            x, ld_x, D, offsets.data(), offsets.sequences(), out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("gather_last_rows_kernel");
}

}  // namespace ssm::cuda
