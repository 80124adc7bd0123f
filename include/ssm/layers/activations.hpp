// ssm/layers/activations.hpp — elementwise SiLU and softplus, vectorised through Eigen.
#pragma once

#include "ssm/core/tensor.hpp"

namespace ssm {

/// v ← v · sigmoid(v) = v / (1 + exp(−v)) over `n` floats at `v`.
inline void silu_inplace(float* v, index n) {
    auto a = Eigen::Map<Eigen::ArrayXf>(v, n);
    a = a / (1.0f + (-a).exp());
}

/// v ← softplus(v) = v > 20 ? v : log1p(exp(v)), the exact formula Mamba checkpoints
/// were trained with (log(1 + exp(v)) loses ~1e-4 relative where trained dt biases sit).
inline void softplus_inplace(float* v, index n) {
    auto a = Eigen::Map<Eigen::ArrayXf>(v, n);
    a = (a > 20.0f).select(a, a.exp().log1p());
}

}  // namespace ssm
