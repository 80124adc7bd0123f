// ssm/layers/rms_norm.hpp — y = x · rsqrt(mean(x²) + eps) · w, per row.
#pragma once

#include <cmath>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/norm.hpp"

namespace ssm {

/// Root-mean-square normalisation with a learned scale and no bias (Mamba's default).
class RMSNorm {
public:
    static constexpr NormKind kind = NormKind::RMSNorm;

    RMSNorm() = default;
    RMSNorm(Tensor weight, double eps) : weight_(std::move(weight)), eps_(static_cast<float>(eps)) {}

    [[nodiscard]] static RMSNorm load(const Checkpoint& ckpt, const std::string& prefix, index dim,
                                      double eps) {
        const index shape[] = {dim};
        return RMSNorm(ckpt.load_f32(prefix + ".weight", shape), eps);
    }

    [[nodiscard]] index dim() const { return weight_.size(); }
    [[nodiscard]] float eps() const noexcept { return eps_; }

    /// y (rows, dim) = RMSNorm(x (rows, dim)); y may alias x.
    void forward(ConstStridedMap x, StridedMap y) const {
        require(x.cols() == dim() && y.cols() == dim() && x.rows() == y.rows(),
                "RMSNorm: input has ", x.cols(), " columns, weight has ", dim());
        const auto w = weight_.vector().transpose().array();
        parallel_for(x.rows(), 64, [&](index begin, index end) {
            for (index r = begin; r < end; ++r) {
                const float mean_sq = x.row(r).squaredNorm() / static_cast<float>(dim());
                const float scale = 1.0f / std::sqrt(mean_sq + eps_);
                y.row(r) = (x.row(r).array() * scale) * w;
            }
        });
    }

private:
    Tensor weight_;  // (dim)
    float eps_ = 1e-5f;
};

static_assert(Norm<RMSNorm>);

}  // namespace ssm
