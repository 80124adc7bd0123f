// ssm/layers/linear.hpp — y = x Wᵀ (+ b) over a packed batch of rows.
#pragma once

#include <optional>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/checkpoint.hpp"

namespace ssm {

/// A dense layer with PyTorch's weight layout: weight (out, in), optional bias (out).
///
/// Many rows (prefill) run as one matrix product on Eigen's blocked GEMM; a few rows
/// (decoding) run as matrix-vector products split over threads by output rows, where
/// the cost is reading the weight once.
class Linear {
public:
    Linear() = default;
    Linear(Tensor weight, std::optional<Tensor> bias) : weight_(std::move(weight)), bias_(std::move(bias)) {
        require(weight_.rank() == 2, "Linear: weight must be 2-D, got ", shape_string(weight_.shape()));
        if (bias_) require(bias_->size() == out_features(), "Linear: bias has ", bias_->size(),
                           " elements, expected ", out_features());
    }

    /// Loads `prefix.weight` (out, in) and, when `with_bias`, `prefix.bias` (out).
    [[nodiscard]] static Linear load(const Checkpoint& ckpt, const std::string& prefix, index out,
                                     index in, bool with_bias) {
        const index wshape[] = {out, in};
        Tensor w = ckpt.load_f32(prefix + ".weight", wshape);
        std::optional<Tensor> b;
        if (with_bias) {
            const index bshape[] = {out};
            b = ckpt.load_f32(prefix + ".bias", bshape);
        }
        return Linear(std::move(w), std::move(b));
    }

    [[nodiscard]] index in_features() const { return weight_.dim(1); }
    [[nodiscard]] index out_features() const { return weight_.dim(0); }
    [[nodiscard]] const Tensor& weight() const noexcept { return weight_; }
    [[nodiscard]] const std::optional<Tensor>& bias() const noexcept { return bias_; }

    /// y (rows, out) = x (rows, in) · Wᵀ + b. With `accumulate`, y += instead of y =.
    /// x and y may be column slices of wider matrices (their own row strides).
    void forward(ConstStridedMap x, StridedMap y, bool accumulate = false) const {
        require(x.cols() == in_features() && y.cols() == out_features() && x.rows() == y.rows(),
                "Linear: input (", x.rows(), ", ", x.cols(), ") / output (", y.rows(), ", ", y.cols(),
                ") do not fit weight (", out_features(), ", ", in_features(), ")");
        const index rows = x.rows();
        if (rows == 0) return;
        const ConstMatrixMap w = weight_.matrix();  // (out, in)
        if (rows >= kGemmRows) {
            if (accumulate)
                y.noalias() += x * w.transpose();
            else
                y.noalias() = x * w.transpose();
            if (bias_) y.rowwise() += bias_->vector().transpose();
            return;
        }
        // Few rows (decoding): split the output features over threads. One row is a
        // matrix-vector product; several rows take each weight row once from memory and
        // dot it with every input row while it is in cache.
        parallel_for(out_features(), kRowsPerThread, [&](index begin, index end) {
            auto yblock = y.middleCols(begin, end - begin);
            if (rows == 1) {
                const auto wblock = w.middleRows(begin, end - begin);
                if (accumulate)
                    yblock.noalias() += x * wblock.transpose();
                else
                    yblock.noalias() = x * wblock.transpose();
            } else {
                for (index o = begin; o < end; ++o) {
                    const auto wrow = w.row(o);
                    for (index r = 0; r < rows; ++r) {
                        const float v = wrow.dot(x.row(r));
                        if (accumulate)
                            y(r, o) += v;
                        else
                            y(r, o) = v;
                    }
                }
            }
            if (bias_) yblock.rowwise() += bias_->vector().segment(begin, end - begin).transpose();
        });
    }

    /// Convenience overload for contiguous row-major matrices.
    void forward(const Matrix& x, Matrix& y, bool accumulate = false) const {
        forward(ConstStridedMap(x.data(), x.rows(), x.cols(), Eigen::OuterStride<>(x.cols())),
                StridedMap(y.data(), y.rows(), y.cols(), Eigen::OuterStride<>(y.cols())), accumulate);
    }

private:
    static constexpr index kGemmRows = 32;        // from here on, one blocked GEMM
    static constexpr index kRowsPerThread = 256;  // output features per thread, at least

    Tensor weight_;  // (out, in)
    std::optional<Tensor> bias_;  // (out)
};

}  // namespace ssm
