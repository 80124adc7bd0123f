// ssm/core/tensor.hpp — float tensors (owning, or zero-copy views of mapped files) and
// the Eigen maps layers compute with.
#pragma once

#include <Eigen/Core>

#include <cstddef>
#include <functional>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "ssm/core/error.hpp"

namespace ssm {

using index = std::ptrdiff_t;

/// Row-major float matrices, the layout of every activation ((T, D): one row a token).
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using Vector = Eigen::Matrix<float, Eigen::Dynamic, 1>;
using VectorMap = Eigen::Map<Vector>;
using ConstVectorMap = Eigen::Map<const Vector>;
/// A row-major matrix with a row stride (a column slice of a wider matrix).
using StridedMap = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;
using ConstStridedMap = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;

/// A read-only view of a writable strided map.
[[nodiscard]] inline ConstStridedMap cview(const StridedMap& m) {
    return {m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.outerStride())};
}
[[nodiscard]] inline ConstStridedMap cview(const Matrix& m) {
    return {m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.cols())};
}

/// A writable strided view of a whole matrix.
[[nodiscard]] inline StridedMap view(Matrix& m) {
    return {m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.cols())};
}

/// A float32 tensor with a shape. Either owns its storage or views memory kept alive by
/// a shared owner (a memory-mapped checkpoint), so F32 weights are never copied.
class Tensor {
public:
    Tensor() = default;

    /// An owning tensor filled with zeros.
    [[nodiscard]] static Tensor zeros(std::vector<index> shape) {
        Tensor t;
        t.shape_ = std::move(shape);
        auto buf = std::make_shared<std::vector<float>>(static_cast<std::size_t>(t.size()), 0.0f);
        t.data_ = buf->data();
        t.owner_ = std::move(buf);
        return t;
    }

    /// An owning tensor holding a copy of `values`.
    [[nodiscard]] static Tensor from(std::vector<index> shape, std::vector<float> values) {
        Tensor t;
        t.shape_ = std::move(shape);
        require(static_cast<std::size_t>(t.size()) == values.size(), "Tensor::from: shape holds ",
                t.size(), " elements, given ", values.size());
        auto buf = std::make_shared<std::vector<float>>(std::move(values));
        t.data_ = buf->data();
        t.owner_ = std::move(buf);
        return t;
    }

    /// A view of `data`; `owner` keeps the memory alive for the tensor's lifetime.
    [[nodiscard]] static Tensor view(const float* data, std::vector<index> shape,
                                     std::shared_ptr<const void> owner) {
        Tensor t;
        t.shape_ = std::move(shape);
        t.data_ = const_cast<float*>(data);  // views are only read through const accessors
        t.owner_ = std::move(owner);
        t.is_view_ = true;
        return t;
    }

    [[nodiscard]] const float* data() const noexcept { return data_; }
    /// Writable storage; only owning tensors may be written.
    [[nodiscard]] float* mutable_data() {
        require(!is_view_, "Tensor: a view of mapped memory is read-only");
        return data_;
    }
    [[nodiscard]] bool is_view() const noexcept { return is_view_; }
    [[nodiscard]] bool empty() const noexcept { return data_ == nullptr; }
    [[nodiscard]] std::span<const index> shape() const noexcept { return shape_; }
    [[nodiscard]] int rank() const noexcept { return static_cast<int>(shape_.size()); }
    [[nodiscard]] index dim(int i) const { return shape_.at(static_cast<std::size_t>(i)); }
    [[nodiscard]] index size() const noexcept {
        return std::accumulate(shape_.begin(), shape_.end(), index{1}, std::multiplies<>());
    }
    [[nodiscard]] std::span<const float> values() const noexcept {
        return {data_, static_cast<std::size_t>(empty() ? 0 : size())};
    }

    /// The tensor as a (dim0, rest) row-major matrix.
    [[nodiscard]] ConstMatrixMap matrix() const {
        const index rows = rank() == 0 ? 1 : shape_[0];
        return {data_, rows, rows == 0 ? 0 : size() / rows};
    }
    /// The tensor as a flat column vector.
    [[nodiscard]] ConstVectorMap vector() const { return {data_, size()}; }

    /// Writable forms of `matrix()` and `vector()`; only for owning tensors.
    [[nodiscard]] MatrixMap mutable_matrix() {
        const index rows = rank() == 0 ? 1 : shape_[0];
        return {mutable_data(), rows, rows == 0 ? 0 : size() / rows};
    }
    [[nodiscard]] VectorMap mutable_vector() { return {mutable_data(), size()}; }

private:
    std::vector<index> shape_;
    float* data_ = nullptr;
    std::shared_ptr<const void> owner_;
    bool is_view_ = false;
};

/// "[a, b, c]" for messages.
[[nodiscard]] inline std::string shape_string(std::span<const index> shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

}  // namespace ssm
