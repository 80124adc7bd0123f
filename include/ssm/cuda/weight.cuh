// ssm/cuda/weight.cuh — a weight matrix on the device, fp32 as uploaded or bf16 after
// `to_bf16`, and `project`, the row-major Y = X·Wᵀ (+ bias) over either: what the device
// model and the Mamba-2 mixer multiply by.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>
#include <type_traits>
#include <utility>

#include "ssm/cuda/buffer.cuh"
#include "ssm/cuda/convert.cuh"
#include "ssm/cuda/error.cuh"
#include "ssm/cuda/gemm.cuh"

namespace ssm::cuda {

/// A weight matrix (out, in) on the device: fp32 as uploaded, or bf16 after `to_bf16`
/// (which frees the fp32 copy). Move-only.
class DeviceWeight {
public:
    DeviceWeight() = default;
    explicit DeviceWeight(DeviceBuffer<float> f32) : f32_(std::move(f32)) {}

    [[nodiscard]] bool is_bf16() const noexcept { return !bf16_.empty(); }
    [[nodiscard]] const float* f32() const noexcept { return f32_.data(); }
    [[nodiscard]] const __nv_bfloat16* bf16() const noexcept { return bf16_.data(); }
    /// The values as W (fp32 or bf16): null when they are stored as the other type.
    template <class W>
    [[nodiscard]] const W* as() const noexcept {
        if constexpr (std::is_same_v<W, float>)
            return f32();
        else
            return bf16();
    }
    [[nodiscard]] std::size_t bytes() const noexcept { return f32_.bytes() + bf16_.bytes(); }

    /// Rounds the fp32 values to bf16 (to nearest even, as the CPU's `store_bf16`) on
    /// `stream`, waits, and frees the fp32 copy. Does nothing when already bf16.
    void to_bf16(cudaStream_t stream) {
        if (f32_.empty()) return;
        DeviceBuffer<__nv_bfloat16> b(f32_.size());
        convert<float, __nv_bfloat16>(f32_.data(), b.data(), static_cast<dindex>(f32_.size()),
                                      stream);
        SSM_CUDA_CHECK(cudaStreamSynchronize(stream));  // done reading before the free
        bf16_ = std::move(b);
        f32_ = DeviceBuffer<float>();
    }

private:
    DeviceBuffer<float> f32_;
    DeviceBuffer<__nv_bfloat16> bf16_;
};

/// y (rows, out; ldy) (+)= x (rows, in; ldx) · Wᵀ + bias, W (out, in) fp32 or bf16, queued
/// on the handle's stream. With bf16 weights x is first rounded to bf16 into `x16` (grown
/// to rows·in as needed; cuBLAS takes both operands bf16); the sums are fp32 either way.
inline void project(const Cublas& blas, dindex rows, dindex out, dindex in, const float* x,
                    dindex ldx, const DeviceWeight& w, float* y, dindex ldy, const float* bias,
                    DeviceBuffer<__nv_bfloat16>& x16, bool accumulate = false) {
    if (!w.is_bf16()) {
        gemm<float>(blas, rows, out, in, x, ldx, w.f32(), in, y, ldy, bias, accumulate);
        return;
    }
    if (rows == 0) return;
    x16.reserve(static_cast<std::size_t>(rows * in));
    convert_rows<float, __nv_bfloat16>(x, ldx, rows, in, x16.data(), in, blas.stream());
    gemm<__nv_bfloat16>(blas, rows, out, in, x16.data(), in, w.bf16(), in, y, ldy, bias, accumulate);
}

}  // namespace ssm::cuda
