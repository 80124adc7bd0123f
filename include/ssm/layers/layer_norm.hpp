// ssm/layers/layer_norm.hpp — y = (x − mean) · rsqrt(var + eps) · w + b, per row.
#pragma once

#include <cmath>
#include <optional>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/norm.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// Layer normalisation with weight and (optional) bias, as in checkpoints saved with
/// `rms_norm: false` (MambaByte). Variance is the biased (population) one.
class LayerNorm {
public:
    static constexpr NormKind kind = NormKind::LayerNorm;

    LayerNorm() = default;
    LayerNorm(Tensor weight, std::optional<Tensor> bias, double eps)
        : weight_(std::move(weight)), bias_(std::move(bias)), eps_(static_cast<float>(eps)) {
        if (bias_) require(bias_->size() == weight_.size(), "LayerNorm: bias has ", bias_->size(),
                           " elements, weight has ", weight_.size());
    }

    /// Loads `prefix.weight` and, when the checkpoint has it, `prefix.bias`.
    [[nodiscard]] static LayerNorm load(const Checkpoint& ckpt, const std::string& prefix, index dim,
                                        double eps) {
        const index shape[] = {dim};
        std::optional<Tensor> bias;
        if (ckpt.resolve(prefix + ".bias")) bias = ckpt.load_f32(prefix + ".bias", shape);
        return LayerNorm(ckpt.load_f32(prefix + ".weight", shape), std::move(bias), eps);
    }

    [[nodiscard]] index dim() const { return weight_.size(); }
    [[nodiscard]] const Tensor& weight() const noexcept { return weight_; }
    [[nodiscard]] const std::optional<Tensor>& bias() const noexcept { return bias_; }

    /// y (rows, dim) = LayerNorm(x (rows, dim)); y may alias x.
    void forward(ConstStridedMap x, StridedMap y) const {
        require(x.cols() == dim() && y.cols() == dim() && x.rows() == y.rows(),
                "LayerNorm: input has ", x.cols(), " columns, weight has ", dim());
        const auto w = weight_.vector().transpose().array();
        const float n = static_cast<float>(dim());
        parallel_for(x.rows(), 64, [&](index begin, index end) {
            for (index r = begin; r < end; ++r) {
                const float mean = x.row(r).sum() / n;
                const float var = (x.row(r).array() - mean).square().sum() / n;
                const float scale = 1.0f / std::sqrt(var + eps_);
                if (bias_)
                    y.row(r) = ((x.row(r).array() - mean) * scale) * w +
                               bias_->vector().transpose().array();
                else
                    y.row(r) = ((x.row(r).array() - mean) * scale) * w;
            }
        });
    }

    // ---- Training ----------------------------------------------------------------------

    /// What backward needs: the normalised input x̂ = (x − mean)·r and each row's r.
    struct Cache {
        Matrix xhat;  // (rows, dim)
        Vector rstd;  // (rows)
    };

    /// Makes the weight (and bias) owned float32 masters with gradients, registered as
    /// `prefix.weight` and `prefix.bias` (no weight decay).
    void register_parameters(train::Parameters& params, const std::string& prefix) {
        train::register_tensor(params, prefix + ".weight", weight_, weight_grad_, false);
        if (bias_) train::register_tensor(params, prefix + ".bias", *bias_, bias_grad_, false);
    }

    /// Training forward: as `forward` (y may alias x), keeping x̂ and r in `cache`.
    void forward(ConstStridedMap x, StridedMap y, Cache& cache) const {
        require(x.cols() == dim() && y.cols() == dim() && x.rows() == y.rows(),
                "LayerNorm: input has ", x.cols(), " columns, weight has ", dim());
        cache.xhat.resize(x.rows(), dim());
        cache.rstd.resize(x.rows());
        const auto w = weight_.vector().transpose().array();
        const float n = static_cast<float>(dim());
        parallel_for(x.rows(), 64, [&](index begin, index end) {
            for (index r = begin; r < end; ++r) {
                const float mean = x.row(r).sum() / n;
                const float var = (x.row(r).array() - mean).square().sum() / n;
                const float scale = 1.0f / std::sqrt(var + eps_);
                cache.rstd(r) = scale;
                cache.xhat.row(r) = (x.row(r).array() - mean) * scale;
                if (bias_)
                    y.row(r) = cache.xhat.row(r).array() * w + bias_->vector().transpose().array();
                else
                    y.row(r) = cache.xhat.row(r).array() * w;
            }
        });
    }

    /// Backward of y = x̂·w + b: dw += Σ_rows dy ⊙ x̂, db += Σ_rows dy;
    /// dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂)) with g = dy ⊙ w, written (added with
    /// `accumulate`). dx must not alias dy.
    void backward(ConstStridedMap dy, const Cache& cache, StridedMap dx, bool accumulate = false) {
        require(!weight_grad_.empty(), "LayerNorm::backward: register_parameters was not called");
        const index rows = cache.xhat.rows();
        require(dy.rows() == rows && dx.rows() == rows && dy.cols() == dim() && dx.cols() == dim(),
                "LayerNorm::backward: gradients do not fit the cached (", rows, ", ", dim(), ") input");
        const auto w = weight_.vector().transpose().array();
        const float n = static_cast<float>(dim());
        parallel_for(rows, 64, [&](index begin, index end) {
            for (index r = begin; r < end; ++r) {
                const auto g = dy.row(r).array() * w;
                const auto xh = cache.xhat.row(r).array();
                const float mean_g = g.sum() / n;
                const float mean_gx = (g * xh).sum() / n;
                if (accumulate)
                    dx.row(r).array() += cache.rstd(r) * (g - mean_g - xh * mean_gx);
                else
                    dx.row(r).array() = cache.rstd(r) * (g - mean_g - xh * mean_gx);
            }
        });
        // Row by row: each element sums in row order wherever the buffers happen to be
        // aligned, so gradients do not depend on where memory was allocated.
        auto wg = weight_grad_.mutable_vector().transpose().array();
        for (index r = 0; r < dy.rows(); ++r) wg += dy.row(r).array() * cache.xhat.row(r).array();
        if (bias_) {
            auto bg = bias_grad_.mutable_vector().transpose();
            for (index r = 0; r < dy.rows(); ++r) bg += dy.row(r);
        }
    }

private:
    Tensor weight_;               // (dim)
    std::optional<Tensor> bias_;  // (dim)
    float eps_ = 1e-5f;
    Tensor weight_grad_, bias_grad_;  // (dim) each, once trainable
};

static_assert(Norm<LayerNorm>);

}  // namespace ssm
