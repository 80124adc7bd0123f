// ssm/heads/bi_encoder.hpp — one embedding per sequence (dense retrieval, Mamba Retriever).
#pragma once

#include <cmath>
#include <concepts>
#include <span>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/embedding.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// How a sequence's final hidden states (after the final norm) become one vector:
/// `pool(hidden, begin, end, out)` writes row `out` from rows [begin, end) of `hidden`.
template <class P>
concept Pooling = requires(ConstStridedMap hidden, index i, Eigen::Ref<Eigen::RowVectorXf> out) {
    { P::pool(hidden, i, i, out) } -> std::same_as<void>;
};

/// The hidden state at the sequence's last position — with the EOS appended to every
/// input, as Mamba Retriever trains it (the default).
struct LastToken {
    static void pool(ConstStridedMap hidden, index /*begin*/, index end, Eigen::Ref<Eigen::RowVectorXf> out) {
        out = hidden.row(end - 1);
    }
    /// Backward: d_hidden rows [begin, end) += the pooled row's gradient `d`, as pooled.
    static void unpool(const Eigen::Ref<const Eigen::RowVectorXf>& d, index /*begin*/, index end, StridedMap d_hidden) {
        d_hidden.row(end - 1) += d;
    }
};

/// The mean of the hidden states over the sequence.
struct Mean {
    static void pool(ConstStridedMap hidden, index begin, index end, Eigen::Ref<Eigen::RowVectorXf> out) {
        out = hidden.middleRows(begin, end - begin).colwise().mean();
    }
    static void unpool(const Eigen::Ref<const Eigen::RowVectorXf>& d, index begin, index end, StridedMap d_hidden) {
        const float inv = 1.0f / static_cast<float>(end - begin);
        for (index r = begin; r < end; ++r) d_hidden.row(r) += d * inv;
    }
};

/// Scales each row to unit L2 norm in place; an all-zero row stays zero.
inline void l2_normalize_rows(Matrix& m) {
    for (index r = 0; r < m.rows(); ++r) {
        const float n = m.row(r).norm();
        if (n > 0) m.row(r) /= n;
    }
}

/// Backward of `l2_normalize_rows`: with v = p/‖p‖, dp = (dv − v·⟨v, dv⟩)/‖p‖ per row
/// (an all-zero row gets zero). `p` is the matrix before normalisation.
[[nodiscard]] inline Matrix l2_normalize_rows_backward(const Matrix& p, const Matrix& dv) {
    require(p.rows() == dv.rows() && p.cols() == dv.cols(), "l2_normalize_rows_backward: shapes differ");
    Matrix dp = Matrix::Zero(p.rows(), p.cols());
    for (index r = 0; r < p.rows(); ++r) {
        const float n = p.row(r).norm();
        if (n == 0) continue;
        const Eigen::RowVectorXf v = p.row(r) / n;
        dp.row(r) = (dv.row(r) - v * v.dot(dv.row(r))) / n;
    }
    return dp;
}

/// Bi-encoder head: pools each sequence of a packed batch to one (hidden)-sized vector,
/// L2-normalised unless turned off, so that a dot product is the cosine similarity.
/// It has no weights of its own.
template <Pooling P = LastToken>
class BiEncoderHead {
public:
    using pooling = P;

    [[nodiscard]] static BiEncoderHead load(const Checkpoint& /*ckpt*/, const MambaConfig& /*config*/,
                                            const Embedding& /*embedding*/) {
        return {};
    }

    void set_normalize(bool on) noexcept { normalize_ = on; }
    [[nodiscard]] bool normalize() const noexcept { return normalize_; }

    /// (sequences, hidden) from the final hidden states (tokens, hidden) of a packed batch.
    [[nodiscard]] Matrix apply(ConstStridedMap hidden, std::span<const index> offsets) const {
        require(offsets.size() >= 2 && offsets.back() == hidden.rows(),
                "BiEncoderHead: offsets do not cover the ", hidden.rows(), " hidden rows");
        const index n = static_cast<index>(offsets.size()) - 1;
        Matrix out(n, hidden.cols());
        for (index s = 0; s < n; ++s) {
            const index b = offsets[static_cast<std::size_t>(s)], e = offsets[static_cast<std::size_t>(s) + 1];
            require(e > b, "BiEncoderHead: sequence ", s, " is empty");
            P::pool(hidden, b, e, out.row(s));
        }
        if (normalize_) l2_normalize_rows(out);
        return out;
    }

    /// Backward of `apply` (the head has no parameters): d_hidden (tokens, hidden) += the
    /// gradient of the hidden states from `d_out` (sequences, hidden), through the L2
    /// normalisation (recomputed from `hidden`) and the pooling.
    void backward(ConstStridedMap hidden, std::span<const index> offsets, const Matrix& d_out, StridedMap d_hidden) const {
        const index n = static_cast<index>(offsets.size()) - 1;
        require(d_out.rows() == n && d_out.cols() == hidden.cols() && d_hidden.rows() == hidden.rows() &&
                    d_hidden.cols() == hidden.cols(),
                "BiEncoderHead::backward: gradient is (", d_out.rows(), ", ", d_out.cols(), ") for ", n,
                " sequences of width ", hidden.cols());
        Matrix d_pooled = d_out;
        if (normalize_) {
            Matrix pooled(n, hidden.cols());
            for (index s = 0; s < n; ++s)
                P::pool(hidden, offsets[static_cast<std::size_t>(s)], offsets[static_cast<std::size_t>(s) + 1], pooled.row(s));
            d_pooled = l2_normalize_rows_backward(pooled, d_out);
        }
        for (index s = 0; s < n; ++s)
            P::unpool(d_pooled.row(s), offsets[static_cast<std::size_t>(s)], offsets[static_cast<std::size_t>(s) + 1],
                      d_hidden);
    }

private:
    bool normalize_ = true;
};

}  // namespace ssm
