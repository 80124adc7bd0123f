// ssm/cuda/gemm.cuh — the dense layer on cuBLAS: row-major Y (M, N) = X (M, K) · W (N, K)ᵀ
// (+ bias), W in PyTorch's (out, in) layout, fp32 or bf16 inputs, always fp32 accumulation.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <climits>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "ssm/core/error.hpp"
#include "ssm/cuda/error.cuh"

namespace ssm::cuda {

/// A cuBLAS handle bound to one stream. Move-only.
class Cublas {
public:
    explicit Cublas(cudaStream_t stream = nullptr) {
        SSM_CUBLAS_CHECK(cublasCreate(&handle_));
        SSM_CUBLAS_CHECK(cublasSetStream(handle_, stream));
        // Plain fp32 arithmetic: TF32 tensor cores only when a caller asks for them.
        SSM_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
    }
    ~Cublas() {
        if (handle_) (void)cublasDestroy(handle_);
    }
    Cublas(const Cublas&) = delete;
    Cublas& operator=(const Cublas&) = delete;
    Cublas(Cublas&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
    Cublas& operator=(Cublas&& o) noexcept {
        if (this != &o) {
            if (handle_) (void)cublasDestroy(handle_);
            handle_ = std::exchange(o.handle_, nullptr);
        }
        return *this;
    }

    [[nodiscard]] cublasHandle_t get() const noexcept { return handle_; }
    [[nodiscard]] cudaStream_t stream() const {
        cudaStream_t s = nullptr;
        SSM_CUBLAS_CHECK(cublasGetStream(handle_, &s));
        return s;
    }
    void set_stream(cudaStream_t s) { SSM_CUBLAS_CHECK(cublasSetStream(handle_, s)); }

private:
    cublasHandle_t handle_ = nullptr;
};

namespace detail {

/// y (rows, cols; row stride ld) += bias (cols), one thread per element. (A template
/// only so that the header can be included by several translation units.)
template <class T>
__global__ void add_bias_rows(T* __restrict__ y, long long rows, long long cols, long long ld,
                              const T* __restrict__ bias) {
    const long long total = rows * cols;
    for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long r = i / cols, c = i - r * cols;
        y[r * ld + c] += bias[c];
    }
}

inline int blocks_for(long long work, int threads) {
    const long long b = (work + threads - 1) / threads;
    return static_cast<int>(b < 65535LL * 16 ? (b < 1 ? 1 : b) : 65535LL * 16);
}

template <class T>
constexpr cudaDataType_t cuda_type();
template <>
constexpr cudaDataType_t cuda_type<float>() {
    return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t cuda_type<__nv_bfloat16>() {
    return CUDA_R_16BF;
}

inline int as_int(long long v, const char* what) {
    require(v >= 0 && v <= INT_MAX, "cuda::gemm: ", what, " = ", v, " does not fit cuBLAS's int");
    return static_cast<int>(v);
}

}  // namespace detail

/// Y (M, N; row stride ldy) = X (M, K; ldx) · W (N, K; ldw)ᵀ + bias (N, optional), with
/// `accumulate`: Y += instead of Y =. Every matrix is row-major; X and W are fp32 or both
/// bf16; Y and the bias are fp32; products are summed in fp32 (CUBLAS_COMPUTE_32F, no TF32).
/// Queued on the handle's stream.
///
/// cuBLAS is column-major: row-major Y is column-major Yᵀ (N, M), and Yᵀ = W · Xᵀ, where
/// row-major W (N, K) read column-major is Wᵀ (K, N) — hence op(A) = T on W — and
/// row-major X (M, K) read column-major is Xᵀ (K, M) — op(B) = N.
template <class In>
void gemm(const Cublas& blas, long long M, long long N, long long K, const In* X, long long ldx,
          const In* W, long long ldw, float* Y, long long ldy, const float* bias = nullptr,
          bool accumulate = false) {
    static_assert(std::is_same_v<In, float> || std::is_same_v<In, __nv_bfloat16>,
                  "cuda::gemm takes fp32 or bf16 inputs");
    require(M >= 0 && N > 0 && K > 0, "cuda::gemm: bad sizes M ", M, ", N ", N, ", K ", K);
    require(ldx >= K && ldw >= K && ldy >= N,
            "cuda::gemm: a row stride is smaller than the row (ldx ", ldx, ", ldw ", ldw, ", ldy ",
            ldy, " for K ", K, ", N ", N, ")");
    if (M == 0) return;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    constexpr cudaDataType_t type = detail::cuda_type<In>();
    SSM_CUBLAS_CHECK(cublasGemmEx(blas.get(), CUBLAS_OP_T, CUBLAS_OP_N, detail::as_int(N, "N"),
                                  detail::as_int(M, "M"), detail::as_int(K, "K"), &alpha, W, type,
                                  detail::as_int(ldw, "ldw"), X, type, detail::as_int(ldx, "ldx"),
                                  &beta, Y, CUDA_R_32F, detail::as_int(ldy, "ldy"),
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias) {
        constexpr int threads = 256;
        detail::add_bias_rows<float>
            <<<detail::blocks_for(M * N, threads), threads, 0, blas.stream()>>>(Y, M, N, ldy, bias);
        SSM_CUDA_CHECK_LAUNCH("add_bias_rows");
    }
}

}  // namespace ssm::cuda
