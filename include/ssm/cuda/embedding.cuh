// ssm/cuda/embedding.cuh — the embedding gather on the device (ssm::Embedding::forward).
#pragma once

#include <cstdint>

#include "ssm/cuda/common.cuh"

namespace ssm::cuda {

namespace detail {

// ---- embedding ---------------------------------------------------------------------------

template <class T>
__global__ void embedding_kernel(const T* __restrict__ table, dindex vocab, dindex dim,
                                 const std::int32_t* __restrict__ ids, dindex rows,
                                 float* __restrict__ out, dindex ld_out) {
    for (dindex i = global_thread(); i < rows * dim; i += grid_threads()) {
        const dindex r = i / dim, c = i - r * dim;
        const std::int32_t id = ids[r];
        // Ids are checked on the host; an id that slipped through gives NaN, not a bad read.
        out[r * ld_out + c] =
            (id >= 0 && id < vocab) ? to_float(table[id * dim + c]) : __int_as_float(0x7fffffff);
    }
}

}  // namespace detail

/// out (rows, dim; ld_out) = table (vocab, dim)[ids]. `ids` (rows) on the device, already
/// checked to lie in [0, vocab).
template <class T>
void embedding(const T* table, dindex vocab, dindex dim, const std::int32_t* ids, dindex rows,
               float* out, dindex ld_out, cudaStream_t stream) {
    require(vocab > 0 && dim > 0 && rows >= 0 && ld_out >= dim, "cuda::embedding: bad sizes");
    if (rows == 0) return;
    detail::embedding_kernel<T>
        <<<detail::grid_for(rows * dim, detail::kBlockThreads), detail::kBlockThreads, 0, stream>>>(
            table, vocab, dim, ids, rows, out, ld_out);
    SSM_CUDA_CHECK_LAUNCH("embedding_kernel");
}

}  // namespace ssm::cuda
