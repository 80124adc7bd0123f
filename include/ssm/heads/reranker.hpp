// ssm/heads/reranker.hpp — a relevance score per (query, document) sequence (RankMamba).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/embedding.hpp"
#include "ssm/train/parameters.hpp"

namespace ssm {

/// Cross-encoder head: score = `score.weight` · h + `score.bias`, with h the final hidden
/// state (after the final norm) at the sequence's last position — the EOS appended to
/// every input. `score.weight` [1, hidden] must be in the checkpoint; `score.bias` [1]
/// is optional.
class RerankerHead {
public:
    [[nodiscard]] static RerankerHead load(const Checkpoint& ckpt, const MambaConfig& config,
                                           const Embedding& /*embedding*/) {
        RerankerHead h;
        if (!ckpt.contains("score.weight"))
            fail(ckpt.source().string(), ": missing tensor 'score.weight' [1, ", config.hidden_size,
                 "]: a reranker checkpoint needs its scoring head (give it with the model, or as an "
                 "extra safetensors file)");
        const index wshape[] = {1, config.hidden_size};
        h.weight_ = ckpt.load_f32("score.weight", wshape);
        if (ckpt.contains("score.bias")) {
            const index bshape[] = {1};
            h.bias_ = ckpt.load_f32("score.bias", bshape);
        }
        return h;
    }

    [[nodiscard]] bool has_bias() const noexcept { return bias_.has_value(); }

    /// (sequences, 1) scores from the final hidden states (tokens, hidden) of a packed batch.
    [[nodiscard]] Matrix apply(ConstStridedMap hidden, std::span<const index> offsets) const {
        require(offsets.size() >= 2 && offsets.back() == hidden.rows(),
                "RerankerHead: offsets do not cover the ", hidden.rows(), " hidden rows");
        require(hidden.cols() == weight_.dim(1), "RerankerHead: hidden size ", hidden.cols(),
                " but score.weight has ", weight_.dim(1), " columns");
        const index n = static_cast<index>(offsets.size()) - 1;
        const auto w = weight_.matrix().row(0);
        Matrix out(n, 1);
        for (index s = 0; s < n; ++s) {
            const index last = offsets[static_cast<std::size_t>(s) + 1] - 1;
            require(last >= offsets[static_cast<std::size_t>(s)], "RerankerHead: sequence ", s, " is empty");
            out(s, 0) = hidden.row(last).dot(w) + (bias_ ? bias_->data()[0] : 0.0f);
        }
        return out;
    }

    /// The text a RankMamba cross-encoder reads for a pair (the EOS is appended after
    /// tokenization): "Document: " + document + "\n\nQuery: " + query.
    [[nodiscard]] static std::string pair_text(std::string_view query, std::string_view document) {
        std::string t;
        t.reserve(document.size() + query.size() + 19);
        t.append("Document: ").append(document).append("\n\nQuery: ").append(query);
        return t;
    }

    /// Makes `score.weight` (decay) and `score.bias` (no decay; when the head has one)
    /// owned float32 masters with gradients, registered under those names.
    void register_parameters(train::Parameters& params) {
        train::register_tensor(params, "score.weight", weight_, weight_grad_, true);
        if (bias_) train::register_tensor(params, "score.bias", *bias_, bias_grad_, false);
    }

    /// Backward of `apply`: d_scores (sequences, 1) gives dw += Σ_s d_s·h_last(s),
    /// db += Σ_s d_s, and d_hidden[last(s)] += d_s·w (d_hidden (tokens, hidden) is added to).
    void backward(ConstStridedMap hidden, std::span<const index> offsets, const Matrix& d_scores, StridedMap d_hidden) {
        require(!weight_grad_.empty(), "RerankerHead::backward: register_parameters was not called");
        const index n = static_cast<index>(offsets.size()) - 1;
        require(d_scores.rows() == n && d_scores.cols() == 1 && d_hidden.rows() == hidden.rows() &&
                    d_hidden.cols() == weight_.dim(1),
                "RerankerHead::backward: gradient is (", d_scores.rows(), ", ", d_scores.cols(), ") for ", n,
                " sequences");
        const auto w = weight_.matrix().row(0);
        auto dw = weight_grad_.mutable_matrix().row(0);
        for (index s = 0; s < n; ++s) {
            const index last = offsets[static_cast<std::size_t>(s) + 1] - 1;
            const float ds = d_scores(s, 0);
            dw += ds * hidden.row(last);
            d_hidden.row(last) += ds * w;
            if (bias_) bias_grad_.mutable_data()[0] += ds;
        }
    }

private:
    Tensor weight_;  // (1, hidden)
    std::optional<Tensor> bias_;  // (1)
    Tensor weight_grad_, bias_grad_;  // once trainable
};

}  // namespace ssm
