// ssm/layers/activations.hpp — elementwise SiLU and softplus, vectorised through Eigen.
#pragma once

#include <algorithm>

#include "ssm/core/tensor.hpp"

namespace ssm {

/// v ← v · sigmoid(v) = v / (1 + exp(−v)) over `n` floats at `v`.
inline void silu_inplace(float* v, index n) {
    auto a = Eigen::Map<Eigen::ArrayXf>(v, n);
    a = a / (1.0f + (-a).exp());
}

/// v ← softplus(v) = v > 20 ? v : log1p(exp(v)), the exact formula Mamba checkpoints
/// were trained with (log(1 + exp(v)) loses ~1e-4 relative where trained dt biases sit).
///
/// log1p(e) is computed as log(u)·e / (u − 1) with u = 1 + e (and as e itself where u
/// rounds to 1), which is accurate to a few ulp and made of operations Eigen vectorises;
/// Eigen's own log1p of an array (and any select() around it) ran one element at a time,
/// which made softplus cost as much as a layer's out_proj.
inline void softplus_inplace(float* v, index n) {
    constexpr index kBlock = 256;
    alignas(64) float e_buf[kBlock];
    alignas(64) float u_buf[kBlock];
    alignas(64) float r_buf[kBlock];
    for (index i = 0; i < n; i += kBlock) {
        const index m = std::min(kBlock, n - i);
        float* x = v + i;
        auto e = Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64>(e_buf, m);
        auto u = Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64>(u_buf, m);
        auto r = Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64>(r_buf, m);
        e = Eigen::Map<const Eigen::ArrayXf>(x, m).exp();
        u = 1.0f + e;
        r = u.log() * e / (u - 1.0f);
        // The branches as a plain loop, which the compiler turns into blends (Eigen's
        // select() would evaluate everything above one element at a time).
        for (index j = 0; j < m; ++j)
            x[j] = x[j] > 20.0f ? x[j] : (u_buf[j] == 1.0f ? e_buf[j] : r_buf[j]);
    }
}

}  // namespace ssm
