// ssm/layers/rms_norm.hpp — y = x · rsqrt(mean(x²) + eps) · w, per row.
#pragma once

#include <cmath>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/norm.hpp"
#include "ssm/train/parameters.hpp"

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
    [[nodiscard]] const Tensor& weight() const noexcept { return weight_; }

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

    // ---- Training ----------------------------------------------------------------------

    /// What backward needs: the input and each row's 1/rms.
    struct Cache {
        Matrix x;     // (rows, dim)
        Vector rstd;  // (rows)
    };

    /// Makes the weight an owned float32 master with a gradient, registered as
    /// `prefix.weight` (no weight decay).
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        train::register_tensor(params, prefix + ".weight", weight_, weight_grad_, false);
    }

    /// Training forward: as `forward` (y may alias x), keeping x and 1/rms in `cache`.
    void forward(ConstStridedMap x, StridedMap y, Cache& cache) const {
        require(x.cols() == dim() && y.cols() == dim() && x.rows() == y.rows(),
                "RMSNorm: input has ", x.cols(), " columns, weight has ", dim());
        cache.x = x;
        cache.rstd.resize(x.rows());
        const auto w = weight_.vector().transpose().array();
        parallel_for(x.rows(), 64, [&](index begin, index end) {
            for (index r = begin; r < end; ++r) {
                const float mean_sq = cache.x.row(r).squaredNorm() / static_cast<float>(dim());
                const float scale = 1.0f / std::sqrt(mean_sq + eps_);
                cache.rstd(r) = scale;
                y.row(r) = (cache.x.row(r).array() * scale) * w;
            }
        });
    }

    /// Backward of y = x·r·w, r = (mean(x²) + eps)^(−1/2): dw += Σ_rows dy ⊙ x·r;
    /// dx = r·(dy ⊙ w) − x·r³·⟨dy ⊙ w, x⟩/dim, written (added with `accumulate`).
    /// dx must not alias dy.
    void backward(ConstStridedMap dy, const Cache& cache, StridedMap dx, bool accumulate = false) {
        require(!weight_grad_.empty(), "RMSNorm::backward: register_parameters was not called");
        const index rows = cache.x.rows();
        require(dy.rows() == rows && dx.rows() == rows && dy.cols() == dim() && dx.cols() == dim(),
                "RMSNorm::backward: gradients do not fit the cached (", rows, ", ", dim(), ") input");
        const auto w = weight_.vector().transpose().array();
        parallel_for(rows, 64, [&](index begin, index end) {
            for (index r = begin; r < end; ++r) {
                const float rs = cache.rstd(r);
                const auto dyw = dy.row(r).array() * w;
                const float dot = (dyw * cache.x.row(r).array()).sum();
                const float k = rs * rs * rs * dot / static_cast<float>(dim());
                if (accumulate)
                    dx.row(r).array() += dyw * rs - cache.x.row(r).array() * k;
                else
                    dx.row(r).array() = dyw * rs - cache.x.row(r).array() * k;
            }
        });
        // Row by row: each element sums in row order wherever the buffers happen to be
        // aligned, so gradients do not depend on where memory was allocated.
        auto wg = weight_grad_.mutable_vector().transpose().array();
        for (index r = 0; r < dy.rows(); ++r) wg += dy.row(r).array() * cache.x.row(r).array() * cache.rstd(r);
    }

private:
    Tensor weight_;  // (dim)
    float eps_ = 1e-5f;
    Tensor weight_grad_;  // (dim), once trainable
};

static_assert(Norm<RMSNorm>);

}  // namespace ssm
