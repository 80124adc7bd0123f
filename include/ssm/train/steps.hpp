// ssm/train/steps.hpp — one micro-batch of each recipe's loss, forward to backward: the
// pieces a training loop or a gradient check strings together after `register_parameters`.
// Each returns the batch's loss and adds its gradient into every registered parameter.
#pragma once

#include <type_traits>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/model/batch.hpp"
#include "ssm/train/losses.hpp"

namespace ssm::train {

/// Whether a model's layers have backward passes (each layer type says so in `trainable`):
/// Mamba-1 (and Falcon-Mamba) stacks, Mamba-2 stacks, and SAMBA hybrids of Mamba-1 and
/// attention.
template <class Model>
concept TrainableModel = Model::backbone_type::layer_type::trainable;

/// Causal-LM cross-entropy over a packed batch (mean over every predicted token, never
/// across sequences), then its backward through the head and the whole model. The
/// gradient added is `grad_scale` times the loss's (a share of a larger batch weighs its
/// mean by its part of the tokens); the loss returned is unscaled.
template <TrainableModel Model>
double causal_lm_step(Model& model, const Batch& batch, double grad_scale = 1.0) {
    typename Model::TrainCache cache;
    model.forward_train(batch, cache);
    const Matrix logits = model.logits_train(cache);
    Matrix dlogits;
    const double loss = causal_lm_loss(logits, batch.tokens(), batch.offsets(), dlogits);
    if (grad_scale != 1.0) dlogits *= static_cast<float>(grad_scale);
    model.backward_logits(cache, cview(dlogits));
    return loss;
}

/// InfoNCE over a bi-encoder's L2-normalised embeddings of a packed batch holding the
/// `queries` query sequences first, then each query's group of `group_size` passages (the
/// first of each group its positive); every passage of the batch is a candidate for every
/// query (in-batch negatives), scores cos/`temperature`. Then the backward.
template <TrainableModel Model>
double info_nce_step(Model& model, const Batch& batch, index queries, index group_size, double temperature) {
    require(queries >= 1 && batch.size() == queries * (1 + group_size), "info_nce_step: the batch holds ", batch.size(),
            " sequences, ", queries, " queries with groups of ", group_size, " need ", queries * (1 + group_size));
    typename Model::TrainCache cache;
    const Matrix emb = model.encode_train(batch, cache);
    const Matrix q = emb.topRows(queries), p = emb.bottomRows(emb.rows() - queries);
    Matrix dq, dp;
    const double loss = info_nce_loss(q, p, group_size, temperature, dq, dp);
    Matrix d_emb(emb.rows(), emb.cols());
    d_emb.topRows(queries) = dq;
    d_emb.bottomRows(emb.rows() - queries) = dp;
    model.backward_encoded(cache, d_emb);
    return loss;
}

}  // namespace ssm::train
