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
    /// The projection (vocab, D): the embedding table itself when tied.
    [[nodiscard]] const Linear& projection() const noexcept { return proj_; }

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

    // ---- Training ----------------------------------------------------------------------

    /// Makes the head trainable. Tied: computes with the embedding's master table and adds
    /// its gradient into the embedding's (one shared buffer; nothing is registered, so call
    /// after `embedding.register_parameters`). Untied: registers `lm_head.weight`.
    void register_parameters(train::Parameters& params, const Embedding& embedding) {
        if (tied_) {
            require(!embedding.master().empty(),
                    "LmHead: register the embedding's parameters before a tied head's");
            proj_ = Linear(embedding.table(), std::nullopt);
            proj_.share_parameters(embedding.master(), embedding.grad());
        } else {
            proj_.register_parameters(params, "lm_head");
        }
    }

    /// Backward of logits = hidden · Wᵀ: dW += dlogitsᵀ hidden (into the embedding's
    /// gradient when tied); d_hidden (rows, D) written (added with `accumulate`).
    void backward(ConstStridedMap hidden, ConstStridedMap d_logits, StridedMap d_hidden, bool accumulate = false) {
        proj_.backward(hidden, d_logits, d_hidden, accumulate);
    }

private:
    Linear proj_;  // (vocab, D)
    bool tied_ = true;
};

}  // namespace ssm
