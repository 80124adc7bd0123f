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

private:
    Tensor weight_;               // (dim)
    std::optional<Tensor> bias_;  // (dim)
    float eps_ = 1e-5f;
};

static_assert(Norm<LayerNorm>);

}  // namespace ssm
