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
};

/// The mean of the hidden states over the sequence.
struct Mean {
    static void pool(ConstStridedMap hidden, index begin, index end, Eigen::Ref<Eigen::RowVectorXf> out) {
        out = hidden.middleRows(begin, end - begin).colwise().mean();
    }
};

/// Scales each row to unit L2 norm in place; an all-zero row stays zero.
inline void l2_normalize_rows(Matrix& m) {
    for (index r = 0; r < m.rows(); ++r) {
        const float n = m.row(r).norm();
        if (n > 0) m.row(r) /= n;
    }
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

private:
    bool normalize_ = true;
};

}  // namespace ssm
