// ssm/cuda/error.cuh — CUDA runtime and cuBLAS failures as `ssm::Error`, naming the call,
// the file and the line.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ssm/core/error.hpp"

namespace ssm::cuda::detail {

[[nodiscard]] inline const char* cublas_status_name(cublasStatus_t s) noexcept {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS:
            return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED:
            return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED:
            return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE:
            return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH:
            return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR:
            return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED:
            return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR:
            return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED:
            return "CUBLAS_STATUS_NOT_SUPPORTED";
        case CUBLAS_STATUS_LICENSE_ERROR:
            return "CUBLAS_STATUS_LICENSE_ERROR";
        default:
            return "unknown cuBLAS status";
    }
}

/// Throws `ssm::Error` "file:line: call failed: name (description)" unless `status` is
/// cudaSuccess. The sticky error state is cleared (cudaGetLastError) for non-sticky
/// errors so that the next call does not report this one again.
inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
    if (status == cudaSuccess) return;
    (void)cudaGetLastError();
    fail(file, ":", line, ": ", call, " failed: ", cudaGetErrorName(status), " (",
         cudaGetErrorString(status), ")");
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fail(file, ":", line, ": ", call, " failed: ", cublas_status_name(status));
}

}  // namespace ssm::cuda::detail

// Macros, not functions: the message names the call as written and where it is.

/// Runs a CUDA runtime call and throws `ssm::Error` when it fails.
#define SSM_CUDA_CHECK(call) ::ssm::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)

/// Runs a cuBLAS call and throws `ssm::Error` when it fails.
#define SSM_CUBLAS_CHECK(call) ::ssm::cuda::detail::check_cublas((call), #call, __FILE__, __LINE__)

/// After a kernel launch: throws `ssm::Error` naming `kernel` when the launch failed
/// (bad configuration, too much shared memory, no kernel image for this device).
#define SSM_CUDA_CHECK_LAUNCH(kernel) \
    ::ssm::cuda::detail::check_cuda(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)
