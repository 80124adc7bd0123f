// ssm/heads/lm_head.hpp — logits = hidden · Wᵀ over the vocabulary.
#pragma once

#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/layers/embedding.hpp"
#include "ssm/layers/linear.hpp"

namespace ssm {

/// The language-model head: `lm_head.weight` (vocab, D) when untied, or the embedding
/// table when `tie_word_embeddings` (the file may then omit `lm_head.weight`).
class LmHead {
public:
    LmHead() = default;

    [[nodiscard]] static LmHead load(const Checkpoint& ckpt, const MambaConfig& config,
                                     const Embedding& embedding) {
        LmHead h;
        if (!config.tie_word_embeddings) {  // untied: lm_head.weight must be in the checkpoint
            h.proj_ = Linear::load(ckpt, "lm_head", config.vocab_size, config.hidden_size, false);
            h.tied_ = false;
        } else {
            // Tied: the file may omit lm_head.weight, or hold a copy of the table.
            h.proj_ = Linear(embedding.table(), std::nullopt);
            h.tied_ = true;
        }
        return h;
    }

    [[nodiscard]] bool tied() const noexcept { return tied_; }

    /// Keeps the weight in `format`: a tied head shares `embedding`'s table again (call
    /// after `embedding.store_weights(format)`), an untied one converts its own.
    void store_weights(WeightFormat format, const Embedding& embedding) {
        if (tied_)
            proj_ = Linear(embedding.table(), std::nullopt);
        else
            proj_.store_weights(format);
    }

    [[nodiscard]] index vocab_size() const { return proj_.out_features(); }

    /// logits (rows, vocab) = hidden (rows, D) · Wᵀ.
    void forward(ConstStridedMap hidden, StridedMap logits) const { proj_.forward(hidden, logits); }

private:
    Linear proj_;  // (vocab, D)
    bool tied_ = true;
};

}  // namespace ssm
