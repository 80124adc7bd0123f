// ssm/cuda/upload.cuh — a loaded CPU layer's weights onto the device: the CUDA side is built
// from the CPU side's layers, so a checkpoint is read and checked by one loader and every
// derived value (A = −exp(A_log), the conv taps in (K, E), D per channel) is computed once.
#pragma once

#include <span>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/cuda/buffer.cuh"

namespace ssm::cuda {

/// A copy of `t`'s values on the device (synchronous).
[[nodiscard]] inline DeviceBuffer<float> upload_tensor(const Tensor& t) {
    return DeviceBuffer<float>::from(t.values());
}

/// A copy of a float32 weight matrix (rows, cols) on the device, row-major. `what` names
/// the matrix in the error raised for one kept in bfloat16 or int8 on the CPU (upload
/// before `store_weights_bf16` / `store_weights_int8`; the device model has its own
/// `store_weights_bf16`).
[[nodiscard]] inline DeviceBuffer<float> upload_matrix(const WeightMatrix& w, const char* what) {
    require(w.format() == WeightFormat::F32, "cuda: ", what, " is stored in ",
            w.format() == WeightFormat::BF16 ? "bfloat16" : "int8",
            " on the CPU; upload a float32 model (before store_weights_bf16 / store_weights_int8)");
    const auto m = w.f32();
    return DeviceBuffer<float>::from(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
}

}  // namespace ssm::cuda
