// ssm/layers/linear.hpp — y = x Wᵀ (+ b) over a packed batch of rows.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "ssm/core/gemm_bf16.hpp"
#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// A dense layer with PyTorch's weight layout: weight (out, in), optional bias (out).
///
/// Many rows (prefill) run as one matrix product — `gemm_f32`'s AVX2 tiles where the
/// dispatch is AVX2, Eigen's blocked GEMM elsewhere (training's two backward products
/// too), or the bf16 unit when bf16 products are asked for (`set_matmul_precision`); a few rows
/// (decoding) run as matrix-vector products split over threads by output rows, where
/// the cost is reading the weight once (`dot_rows`). The weight may be stored as bfloat16
/// or int8 blocks (`store_weights`): decoding then widens it inside the dot products and
/// reads half or about a quarter of the bytes, prefill widens a block of rows per GEMM;
/// the arithmetic stays float32.
class Linear {
public:
    Linear() = default;
    Linear(Tensor weight, std::optional<Tensor> bias) : Linear(WeightMatrix(std::move(weight)), std::move(bias)) {}
    Linear(WeightMatrix weight, std::optional<Tensor> bias) : weight_(std::move(weight)), bias_(std::move(bias)) {
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

    [[nodiscard]] index in_features() const { return weight_.cols(); }
    [[nodiscard]] index out_features() const { return weight_.rows(); }
    [[nodiscard]] const WeightMatrix& weight() const noexcept { return weight_; }
    [[nodiscard]] const std::optional<Tensor>& bias() const noexcept { return bias_; }

    /// Keeps the weight in bfloat16 from now on (the bias stays float32).
    void store_bf16() { store_weights(WeightFormat::BF16); }

    /// Keeps the weight in `format` from now on (see `WeightFormat`; the bias stays float32).
    void store_weights(WeightFormat format) { weight_ = weight_.to(format); }

    /// y (rows, out) = x (rows, in) · Wᵀ + b. With `accumulate`, y += instead of y =.
    /// x and y may be column slices of wider matrices (their own row strides).
    void forward(ConstStridedMap x, StridedMap y, bool accumulate = false) const {
        require(x.cols() == in_features() && y.cols() == out_features() && x.rows() == y.rows(),
                "Linear: input (", x.rows(), ", ", x.cols(), ") / output (", y.rows(), ", ", y.cols(),
                ") do not fit weight (", out_features(), ", ", in_features(), ")");
        const index rows = x.rows();
        if (rows == 0) return;
        if (weight_.format() != WeightFormat::F32) {
            forward_narrow(x, y, accumulate);
            return;
        }
        if (rows >= kGemmRows) {
            product(x, weight_.f32().data(), out_features(), y, accumulate);
            add_bias(y, 0, out_features());
            return;
        }
        // Few rows (decoding): split the output features over threads; each weight row is
        // read from memory once and meets every input row while it is in registers.
        parallel_for(out_features(), rows_per_thread(), [&](index begin, index end) {
            few_rows_stored(x, y, begin, end, accumulate);
            add_bias(y, begin, end);
        });
    }

    /// Convenience overload for contiguous row-major matrices.
    void forward(const Matrix& x, Matrix& y, bool accumulate = false) const {
        forward(ConstStridedMap(x.data(), x.rows(), x.cols(), Eigen::OuterStride<>(x.cols())),
                StridedMap(y.data(), y.rows(), y.cols(), Eigen::OuterStride<>(y.cols())), accumulate);
    }

    // ---- Training ----------------------------------------------------------------------
    // The training forward is `forward` itself: what backward needs is the input x, which
    // the caller keeps (it is the previous layer's output or a cache of the enclosing layer).

    /// Makes the layer trainable: the weight becomes an owned float32 master copy (a mapped
    /// view is copied, a bfloat16 weight widened; forward then computes in float32 from the
    /// master), gradient buffers of the parameters' shapes are allocated, and both are
    /// registered as `prefix.weight` (decay as given) and `prefix.bias` (no decay).
    void register_parameters(train::Parameters& params, const std::string& prefix, bool decay = true) {
        const index out = out_features(), in = in_features();
        Tensor w = Tensor::zeros({out, in});
        weight_.rows_f32(0, out, w.mutable_data());
        weight_ = WeightMatrix(w);
        weight_grad_ = Tensor::zeros({out, in});
        const auto n = static_cast<std::size_t>(out * in);
        params.add(prefix + ".weight", {out, in}, {w.mutable_data(), n}, {weight_grad_.mutable_data(), n}, decay);
        if (bias_) train::register_tensor(params, prefix + ".bias", *bias_, bias_grad_, false);
    }

    /// Makes the layer trainable on a weight owned and registered elsewhere: `master`
    /// (out, in) float32 and its gradient `grad`, shared (a tied LM head computes with the
    /// embedding's master table and adds into the embedding's gradient). Nothing is
    /// registered; a bias is not supported.
    void share_parameters(const Tensor& master, const Tensor& grad) {
        require(!bias_, "Linear::share_parameters: a layer with a bias cannot share its weight");
        require(master.rank() == 2 && !master.is_view() && grad.size() == master.size(),
                "Linear::share_parameters: need an owned (out, in) master and a gradient of its size");
        weight_ = WeightMatrix(master);
        weight_grad_ = grad;
    }

    /// Whether `register_parameters` or `share_parameters` was called.
    [[nodiscard]] bool trainable() const noexcept { return !weight_grad_.empty(); }
    /// The weight's gradient (out, in); empty until the layer is trainable.
    [[nodiscard]] const Tensor& weight_grad() const noexcept { return weight_grad_; }
    /// The bias's gradient (out); empty without a bias or until the layer is trainable.
    [[nodiscard]] const Tensor& bias_grad() const noexcept { return bias_grad_; }

    /// Backward of y = x Wᵀ + b for x (rows, in), dy (rows, out): the parameter gradients
    /// accumulate, dW += dyᵀ x and db += Σ_rows dy; the input gradient dx (rows, in) = dy W
    /// is written (added with `accumulate`). dx must not alias x or dy.
    void backward(ConstStridedMap x, ConstStridedMap dy, StridedMap dx, bool accumulate = false) {
        backward_params(x, dy);
        backward_input(dy, dx, accumulate);
    }

    /// The parameter gradients only (for an input that needs no gradient).
    void backward_params(ConstStridedMap x, ConstStridedMap dy) {
        require(trainable(), "Linear::backward: register_parameters was not called");
        require(x.cols() == in_features() && dy.cols() == out_features() && x.rows() == dy.rows(),
                "Linear::backward: input (", x.rows(), ", ", x.cols(), ") / output gradient (", dy.rows(),
                ", ", dy.cols(), ") do not fit weight (", out_features(), ", ", in_features(), ")");
        if (x.rows() == 0) return;
        MatrixMap dw = weight_grad_.mutable_matrix();  // (out, in)
        if (!tiled_product(GemmOperand::transposed(dy.data(), dy.outerStride()),
                           GemmOperand::rows(x.data(), x.outerStride()), out_features(), in_features(), x.rows(),
                           dw.data(), in_features(), true))
            dw.noalias() += dy.transpose() * x;
        if (bias_) {  // row by row: the same sums wherever dy happens to be aligned
            auto bg = bias_grad_.mutable_vector().transpose();
            for (index r = 0; r < dy.rows(); ++r) bg += dy.row(r);
        }
    }

    /// The input gradient only: dx (rows, in) = dy (rows, out) · W (+= with `accumulate`).
    void backward_input(ConstStridedMap dy, StridedMap dx, bool accumulate = false) const {
        require(trainable(), "Linear::backward: register_parameters was not called");
        require(dy.cols() == out_features() && dx.cols() == in_features() && dx.rows() == dy.rows(),
                "Linear::backward: output gradient (", dy.rows(), ", ", dy.cols(), ") / input gradient (",
                dx.rows(), ", ", dx.cols(), ") do not fit weight (", out_features(), ", ", in_features(), ")");
        if (dy.rows() == 0) return;
        const ConstMatrixMap w = weight_.f32();  // (out, in)
        if (tiled_product(GemmOperand::rows(dy.data(), dy.outerStride()), GemmOperand::rows(w.data(), in_features()),
                          dy.rows(), in_features(), out_features(), dx.data(), dx.outerStride(), accumulate))
            return;
        if (accumulate)
            dx.noalias() += dy * w;
        else
            dx.noalias() = dy * w;
    }

private:
    static constexpr index kGemmRows = 32;        // from here on, one blocked GEMM
    // Few rows: a thread takes 64K weights at least (256 output features of 256 inputs), so
    // a narrow projection with long rows (x_proj: 80 × 1536) is split too, and one with
    // short rows (dt_proj: 1536 × 48) is not split into pieces smaller than a thread's start.
    static constexpr index kWeightsPerThread = index{1} << 16;
    [[nodiscard]] index rows_per_thread() const noexcept {
        return std::max<index>(1, kWeightsPerThread / std::max<index>(1, in_features()));
    }
    static constexpr index kWidenGemmRows = 1024; // bf16 weight rows widened for one GEMM (prefill)

    /// y[:, o] (+)= x · w_o for o in [begin, end): input rows in groups of 8, 4, 2, 1, each
    /// group one `dot(std::integral_constant<int, R>, o, r, out)` over weight row o and the
    /// input rows from r.
    template <class Dot>
    void few_rows(ConstStridedMap x, StridedMap y, index begin, index end, bool accumulate, const Dot& dot) const {
        const index rows = x.rows();
        float out[8];
        for (index o = begin; o < end; ++o) {
            index r = 0;
            const auto group = [&]<int R>(std::integral_constant<int, R> count) {
                dot(count, o, r, out);
                for (int k = 0; k < R; ++k, ++r) y(r, o) = accumulate ? y(r, o) + out[k] : out[k];
            };
            while (r + 8 <= rows) group(std::integral_constant<int, 8>{});
            if (r + 4 <= rows) group(std::integral_constant<int, 4>{});
            if (r + 2 <= rows) group(std::integral_constant<int, 2>{});
            if (r < rows) group(std::integral_constant<int, 1>{});
        }
    }

    /// The input rows rounded to int8 blocks (`quantize_int8_blocks`) for `Int8Activations`:
    /// row r's values at xq + r · ldq, its scales at xs + r · blocks.
    struct RoundedRows {
        const std::int8_t* xq;
        const float* xs;
    };

    /// `few_rows` over the weight as stored: float32 or bfloat16 rows through `dot_rows`,
    /// int8 rows through `dot_rows_int8`; with `Int8Activations`, every int8 row meets the
    /// input rows as `rounded` holds them, through `dot_rows_q8`.
    void few_rows_stored(ConstStridedMap x, StridedMap y, index begin, index end, bool accumulate,
                         RoundedRows rounded = {nullptr, nullptr}) const {
        const index in = in_features(), ldx = x.outerStride();
        const float* x0 = x.data();
        switch (weight_.format()) {
            case WeightFormat::F32:
                few_rows(x, y, begin, end, accumulate, [&]<int R>(std::integral_constant<int, R>, index o, index r, float* out) {
                    dot_rows<R>(weight_.f32_row(o), x0 + r * ldx, ldx, in, out);
                });
                break;
            case WeightFormat::BF16:
                few_rows(x, y, begin, end, accumulate, [&]<int R>(std::integral_constant<int, R>, index o, index r, float* out) {
                    dot_rows<R>(weight_.bf16_row(o), x0 + r * ldx, ldx, in, out);
                });
                break;
            case WeightFormat::Int8:
                few_rows(x, y, begin, end, accumulate, [&]<int R>(std::integral_constant<int, R>, index o, index r, float* out) {
                    dot_rows_int8<R>(weight_.int8_row(o), weight_.int8_scales(o), x0 + r * ldx, ldx, in, out);
                });
                break;
            case WeightFormat::Int8Activations: {
                const index blocks = weight_.int8_blocks_per_row(), ldq = blocks * kInt8Block;
                const std::int8_t* const xq = rounded.xq;
                const float* const xs = rounded.xs;
                few_rows(x, y, begin, end, accumulate, [&]<int R>(std::integral_constant<int, R>, index o, index r, float* out) {
                    dot_rows_q8<R>(weight_.int8_row(o), weight_.int8_scales(o), xq + r * ldq, xs + r * blocks, ldq,
                                   blocks, blocks, out);
                });
                break;
            }
        }
    }

    /// C (M, N; ldc) (+)= A · B on the library's own tiles: `gemm_bf16` under
    /// `MatmulPrecision::Bf16Products` where the unit runs, else `gemm_f32` where the dispatch
    /// is AVX2. False where neither runs (the caller then takes Eigen's GEMM).
    static bool tiled_product(const GemmOperand& A, const GemmOperand& B, index M, index N, index K, float* C,
                              index ldc, bool accumulate) {
        if (bf16_products())
            gemm_bf16(A, B, M, N, K, C, ldc, accumulate);
        else if (gemm_f32_available())
            gemm_f32(A, B, M, N, K, C, ldc, accumulate);
        else
            return false;
        return true;
    }

    /// y (rows, n) (+)= x (rows, in) · Wᵀ for a float32 block W (n, in) of contiguous rows:
    /// `tiled_product`, or Eigen's GEMM where it does not run.
    void product(ConstStridedMap x, const float* w, index n, StridedMap y, bool accumulate) const {
        const index in = in_features();
        if (tiled_product(GemmOperand::rows(x.data(), x.outerStride()), GemmOperand::transposed(w, in), x.rows(), n,
                          in, y.data(), y.outerStride(), accumulate))
            return;
        const ConstMatrixMap wm(w, n, in);
        if (accumulate)
            y.noalias() += x * wm.transpose();
        else
            y.noalias() = x * wm.transpose();
    }

    void add_bias(StridedMap y, index begin, index end) const {
        if (bias_) y.middleCols(begin, end - begin).rowwise() += bias_->vector().segment(begin, end - begin).transpose();
    }

    /// A bfloat16 or int8 weight. Many rows: a bfloat16 weight on a CPU with AVX512-BF16
    /// goes through `gemm_bf16` (x rounded to bf16, float32 sums); otherwise the weight is
    /// widened a block of rows at a time (in parallel, into a buffer reused across calls),
    /// each block one float32 GEMM. A few rows: each weight row widened inside the dot
    /// products (`few_rows_stored`).
    void forward_narrow(ConstStridedMap x, StridedMap y, bool accumulate) const {
        const index rows = x.rows(), in = in_features();
        if (rows >= kGemmRows && weight_.format() == WeightFormat::BF16 && gemm_bf16_available()) {
            // The CPU's bf16 dot-product unit: x rounded to bf16, float32 sums.
            gemm_bf16(x.data(), x.outerStride(), rows, weight_.bf16_packed(), y.data(), y.outerStride(), accumulate);
            add_bias(y, 0, out_features());
            return;
        }
        if (rows >= kGemmRows) {
            const index block = std::min(kWidenGemmRows, out_features());
            // The widened block (at most 1024 rows × in floats) lives in a buffer kept, and
            // never given back, per calling thread, so a decoding step does not allocate and
            // fault in fresh pages for every projection; the widening is split over the threads.
            thread_local std::vector<float> scratch;
            const auto need = static_cast<std::size_t>(block * in);
            if (scratch.size() < need) scratch.resize(need);
            float* const widened = scratch.data();  // (a thread_local is per thread: the
                                                     // workers below must get the pointer)
            for (index o0 = 0; o0 < out_features(); o0 += block) {
                const index n = std::min(block, out_features() - o0);
                parallel_for(n, 64, [&, widened](index b, index e) {
                    weight_.rows_f32(o0 + b, e - b, widened + b * in);
                });
                product(x, widened, n, StridedMap(y.data() + o0, rows, n, Eigen::OuterStride<>(y.outerStride())),
                        accumulate);
            }
            add_bias(y, 0, out_features());
            return;
        }
        RoundedRows rounded{nullptr, nullptr};
        if (weight_.format() == WeightFormat::Int8Activations) {
            // Rounded once, before the threads split the output features; the buffers are
            // the calling thread's, kept across calls, so a decoding step does not allocate.
            const index blocks = weight_.int8_blocks_per_row(), ldq = blocks * kInt8Block;
            thread_local std::vector<std::int8_t> xq_buffer;
            thread_local std::vector<float> xs_buffer;
            const auto nq = static_cast<std::size_t>(rows * ldq), ns = static_cast<std::size_t>(rows * blocks);
            if (xq_buffer.size() < nq) xq_buffer.resize(nq);
            if (xs_buffer.size() < ns) xs_buffer.resize(ns);
            for (index r = 0; r < rows; ++r)
                quantize_int8_blocks(x.data() + r * x.outerStride(), in, xq_buffer.data() + r * ldq,
                                     xs_buffer.data() + r * blocks);
            rounded = {xq_buffer.data(), xs_buffer.data()};
        }
        parallel_for(out_features(), rows_per_thread(), [&, rounded](index begin, index end) {
            few_rows_stored(x, y, begin, end, accumulate, rounded);
            add_bias(y, begin, end);
        });
    }

    WeightMatrix weight_;  // (out, in)
    std::optional<Tensor> bias_;  // (out)
    Tensor weight_grad_;   // (out, in), once trainable
    Tensor bias_grad_;     // (out), once trainable with a bias
};

}  // namespace ssm
