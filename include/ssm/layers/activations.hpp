// ssm/layers/activations.hpp — elementwise SiLU and softplus, vectorised through Eigen.
#pragma once

#include <algorithm>

#include "ssm/core/tensor.hpp"

namespace ssm {

/// v ← v · sigmoid(v) = v / (1 + exp(−v)) over `n` floats at `v`.
///
/// Computed into an aligned buffer, then copied back: Eigen evaluates the leading
/// elements of an unaligned destination one at a time (a scalar exp that may differ from
/// its vector exp by an ulp), so writing in place would make the result depend on where
/// the heap put `v`, and a training run resumed in a fresh process would not repeat an
/// uninterrupted one bit for bit.
inline void silu_inplace(float* v, index n) {
    constexpr index kBlock = 256;
    alignas(64) float r_buf[kBlock];
    for (index i = 0; i < n; i += kBlock) {
        const index m = std::min(kBlock, n - i);
        auto x = Eigen::Map<Eigen::ArrayXf>(v + i, m);
        auto r = Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64>(r_buf, m);
        r = x / (1.0f + (-x).exp());
        std::copy(r_buf, r_buf + m, v + i);
    }
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
