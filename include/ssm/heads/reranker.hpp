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
            h.bias_ = ckpt.load_f32("score.bias", bshape).vector()(0);
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
            out(s, 0) = hidden.row(last).dot(w) + bias_.value_or(0.0f);
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

private:
    Tensor weight_;  // (1, hidden)
    std::optional<float> bias_;
};

}  // namespace ssm
