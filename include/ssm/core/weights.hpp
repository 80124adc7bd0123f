// ssm/core/weights.hpp — a weight matrix stored as float32 or as bfloat16.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"

namespace ssm {

/// Σ bf16(w[i]) · x[i] over n elements, widening as it goes (no buffer): what a decoding
/// step does with every row of a bfloat16 weight. Vectorised with GCC/Clang vector types
/// (16 lanes; the compiler maps them to AVX-512, AVX2 or SSE), scalar elsewhere.
[[nodiscard]] inline float dot_bf16(const std::uint16_t* w, const float* x, index n) noexcept {
    index i = 0;
    float sum = 0.0f;
#if defined(__GNUC__) || defined(__clang__)
    using f32x16 = float __attribute__((vector_size(64)));
    using u32x16 = std::uint32_t __attribute__((vector_size(64)));
    using u16x16 = std::uint16_t __attribute__((vector_size(32)));
    f32x16 acc0{}, acc1{};  // two chains, to overlap the FMA latency
    for (; i + 32 <= n; i += 32) {
        u16x16 h0, h1;
        f32x16 x0, x1;
        std::memcpy(&h0, w + i, sizeof h0);
        std::memcpy(&h1, w + i + 16, sizeof h1);
        std::memcpy(&x0, x + i, sizeof x0);
        std::memcpy(&x1, x + i + 16, sizeof x1);
        const auto w0 = std::bit_cast<f32x16>(__builtin_convertvector(h0, u32x16) << 16);
        const auto w1 = std::bit_cast<f32x16>(__builtin_convertvector(h1, u32x16) << 16);
        acc0 += w0 * x0;
        acc1 += w1 * x1;
    }
    const f32x16 acc = acc0 + acc1;
    for (int l = 0; l < 16; ++l) sum += acc[l];
#endif
    for (; i < n; ++i) sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

/// A (rows, cols) row-major weight matrix: float32 (a `Tensor`, possibly a zero-copy view of
/// a mapped checkpoint), or bfloat16 — half the bytes, widened to float32 a block of rows at a
/// time where it is used, so the arithmetic stays float32. Copies share the storage.
class WeightMatrix {
public:
    WeightMatrix() = default;
    explicit WeightMatrix(Tensor t) : f32_(std::move(t)) {
        require(f32_.rank() == 2, "WeightMatrix: must be 2-D, got ", shape_string(f32_.shape()));
        rows_ = f32_.dim(0);
        cols_ = f32_.dim(1);
    }

    /// The same matrix in bfloat16, each value rounded to nearest even (exact for a matrix
    /// that came from a BF16 checkpoint). A bfloat16 matrix is returned as it is.
    [[nodiscard]] WeightMatrix to_bf16() const {
        if (is_bf16()) return *this;
        WeightMatrix w;
        w.rows_ = rows_;
        w.cols_ = cols_;
        auto bits = std::make_shared<std::vector<std::uint16_t>>(static_cast<std::size_t>(rows_ * cols_));
        const float* src = f32_.data();
        std::uint16_t* dst = bits->data();
        parallel_for(rows_ * cols_, 1 << 16, [&](index b, index e) {
            for (index i = b; i < e; ++i) dst[i] = f32_to_bf16(src[i]);
        });
        w.bf16_ = std::move(bits);
        return w;
    }

    [[nodiscard]] bool is_bf16() const noexcept { return bf16_ != nullptr; }
    [[nodiscard]] index rows() const noexcept { return rows_; }
    [[nodiscard]] index cols() const noexcept { return cols_; }
    /// Bytes of storage (what a matrix-vector product reads).
    [[nodiscard]] std::size_t bytes() const noexcept {
        return static_cast<std::size_t>(rows_ * cols_) * (is_bf16() ? 2 : 4);
    }

    /// The float32 matrix; only for float32 storage.
    [[nodiscard]] ConstMatrixMap f32() const {
        require(!is_bf16(), "WeightMatrix::f32: the matrix is stored as bfloat16");
        return f32_.matrix();
    }

    /// Row r of a bfloat16 matrix (cols bf16 values); only for bfloat16 storage.
    [[nodiscard]] const std::uint16_t* bf16_row(index r) const noexcept { return bf16_->data() + r * cols_; }

    /// Rows [r0, r0 + n) as float32 into `dst` (n × cols, contiguous rows).
    void rows_f32(index r0, index n, float* dst) const noexcept {
        const std::size_t count = static_cast<std::size_t>(n * cols_);
        if (!is_bf16()) {
            std::memcpy(dst, f32_.data() + r0 * cols_, count * sizeof(float));
            return;
        }
        const std::uint16_t* src = bf16_->data() + r0 * cols_;
        for (std::size_t i = 0; i < count; ++i)  // vectorises: a shift per element
            dst[i] = bf16_to_f32(src[i]);
    }

private:
    Tensor f32_;                                              // float32 storage, or empty
    std::shared_ptr<const std::vector<std::uint16_t>> bf16_;  // bfloat16 storage, or null
    index rows_ = 0, cols_ = 0;
};

}  // namespace ssm
