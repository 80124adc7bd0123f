// ssm/layers/norm.hpp — the `Norm` policy concept shared by RMSNorm and LayerNorm.
#pragma once

#include <concepts>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"

namespace ssm {

/// A normalisation over the last dimension of a (rows, dim) matrix, loadable from a
/// checkpoint by tensor-name prefix (`prefix.weight`, and `prefix.bias` where it has one).
template <class N>
concept Norm = requires(const N& n, ConstStridedMap x, StridedMap y, const Checkpoint& ckpt,
                        const std::string& prefix, index dim, double eps) {
    { N::kind } -> std::convertible_to<NormKind>;
    { N::load(ckpt, prefix, dim, eps) } -> std::same_as<N>;
    { n.forward(x, y) };
    { n.dim() } -> std::convertible_to<index>;
};

}  // namespace ssm
