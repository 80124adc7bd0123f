// ssm/train/losses.hpp — the training losses of the systems the library serves, each a
// pure function that returns the loss and writes its gradient w.r.t. its input:
//
//   causal_lm_loss      next-token cross-entropy over a packed batch (Mamba, MambaByte, SAMBA)
//   info_nce_loss       contrastive loss with in-batch negatives (Mamba Retriever / Tevatron)
//   listwise_softmax_loss  softmax cross-entropy over groups of scores (RankMamba's LCE)
//
// Log-softmax is taken after subtracting the row maximum, in double (inputs are float32,
// gradients are written as float32). Per-row results are reduced in a fixed order, so the
// loss does not depend on the thread count. A loss that is not finite is an error that
// names the first row whose input is not finite (or says the inputs were finite).
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"

namespace ssm::train {

namespace detail {

[[nodiscard]] inline StridedMap strided(Matrix& m) {
    return {m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.cols())};
}

/// Fails when `x` holds a value that is not finite, naming its first such row.
template <class Map>
void require_finite_rows(double loss, const char* what, const Map& x, const char* input) {
    for (index r = 0; r < x.rows(); ++r)
        if (!x.row(r).allFinite())
            fail(what, ": loss is ", loss, "; ", input, " row ", r, " is not finite");
}

}  // namespace detail

/// The next-token targets of a packed batch (see `causal_lm_loss`).
struct NextTokenTargets {
    std::vector<std::int32_t> target;  // (T) ids[t+1] inside t's sequence; −1 on its last token
    index count = 0;                   // predictions: Σ over sequences of (length − 1)
};

/// The targets of the T tokens `ids` packed as `offsets` = [0, L₀, L₀+L₁, …, T], checked:
/// offsets that are not [0, …, T] increasing, an empty sequence, an id outside [0, vocab)
/// or a batch with nothing to predict (every sequence of length 1) is an error naming it.
[[nodiscard]] inline NextTokenTargets next_token_targets(std::span<const std::int32_t> ids,
                                                         std::span<const index> offsets,
                                                         index vocab) {
    const auto T = static_cast<index>(ids.size());
    require(offsets.size() >= 2 && offsets.front() == 0 && offsets.back() == T,
            "causal LM loss: offsets must run from 0 to the token count ", T, " (given ",
            offsets.size(), " offsets", offsets.empty() ? "" : ", last ",
            offsets.empty() ? 0 : offsets.back(), ")");
    NextTokenTargets out;
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s) {
        require(offsets[s + 1] > offsets[s], "causal LM loss: sequence ", s, " is empty (offsets ",
                offsets[s], ", ", offsets[s + 1], ")");
        out.count += offsets[s + 1] - offsets[s] - 1;
    }
    for (index t = 0; t < T; ++t)
        require(ids[static_cast<std::size_t>(t)] >= 0 && ids[static_cast<std::size_t>(t)] < vocab,
                "causal LM loss: token id ", ids[static_cast<std::size_t>(t)], " at position ", t,
                " is outside the vocabulary of ", vocab);
    require(out.count > 0, "causal LM loss: nothing to predict (all ", offsets.size() - 1,
            " sequences have length 1)");
    out.target.assign(static_cast<std::size_t>(T), -1);
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s)
        for (index t = offsets[s]; t + 1 < offsets[s + 1]; ++t)
            out.target[static_cast<std::size_t>(t)] = ids[static_cast<std::size_t>(t + 1)];
    return out;
}

/// Cross-entropy of the rows of `logits` (rows, V) against `targets` (rows), a target of
/// −1 meaning "no prediction" (zero loss, zero gradient). Returns the **sum** over the
/// predicting rows and writes `dlogits` (rows, V) = scale · (softmax − one-hot).
///
/// `causal_lm_loss` is this over all T rows with scale = 1/count, divided by count. Called
/// on blocks of rows with the batch's count, it lets the caller project hidden states to
/// logits a block at a time, holding (block, V) floats instead of (T, V) — at V = 50280
/// and T = 2048, 800 MB of logits and gradients.
[[nodiscard]] inline double cross_entropy_rows(ConstStridedMap logits,
                                               std::span<const std::int32_t> targets, double scale,
                                               StridedMap dlogits) {
    const index rows = logits.rows(), V = logits.cols();
    require(static_cast<index>(targets.size()) == rows, "causal LM loss: logits have ", rows,
            " rows but there are ", targets.size(), " targets");
    require(dlogits.rows() == rows && dlogits.cols() == V, "causal LM loss: dlogits is (",
            dlogits.rows(), ", ", dlogits.cols(), "), logits are (", rows, ", ", V, ")");
    for (index t = 0; t < rows; ++t)
        require(
            targets[static_cast<std::size_t>(t)] >= -1 && targets[static_cast<std::size_t>(t)] < V,
            "causal LM loss: target ", targets[static_cast<std::size_t>(t)], " of row ", t,
            " is outside the vocabulary of ", V);
    std::vector<double> row_loss(static_cast<std::size_t>(rows), 0.0);
    parallel_for(
        rows, std::max<index>(1, 16384 / std::max<index>(1, V)), [&](index begin, index end) {
            Eigen::Array<double, 1, Eigen::Dynamic> e(V);  // (V) exp(l − max) of one row, in double
            for (index t = begin; t < end; ++t) {
                auto d = dlogits.row(t);
                const std::int32_t y = targets[static_cast<std::size_t>(t)];
                if (y < 0) {
                    d.setZero();
                    continue;
                }
                const auto l = logits.row(t).array().template cast<double>();
                const double m = l.maxCoeff();
                e = (l - m).exp();
                const double sum = e.sum();
                row_loss[static_cast<std::size_t>(t)] = m + std::log(sum) - l(y);
                e *= scale / sum;  // softmax · scale
                e(y) -= scale;
                d.array() = e.template cast<float>();
            }
        });
    double loss = 0.0;
    for (double v : row_loss) loss += v;
    if (!std::isfinite(loss)) {
        detail::require_finite_rows(loss, "causal LM loss", logits, "logits");
        fail("causal LM loss: loss is ", loss, " although every logit is finite");
    }
    return loss;
}

/// Causal language-model cross-entropy over a packed batch.
///
/// `logits` (T, V) for the T tokens of the batch; `ids` (T) the tokens; `offsets` =
/// [0, L₀, L₀+L₁, …, T] the sequence boundaries (as `Batch::offsets()`). Token t predicts
/// token t+1 of its own sequence, so a sequence of length L contributes L−1 predictions
/// and its last row none. Returns the mean of −log softmax(logits[t])[ids[t+1]] over every
/// prediction of every sequence, and writes `dlogits` (T, V) = its gradient: (softmax −
/// one-hot) / count on predicting rows, zero on each sequence's last row.
///
/// Errors: shapes that disagree, offsets that are not [0, …, T] increasing, an empty
/// sequence, an id outside [0, V), a batch with nothing to predict (every sequence of
/// length 1), a loss that is not finite.
[[nodiscard]] inline double causal_lm_loss(ConstStridedMap logits,
                                           std::span<const std::int32_t> ids,
                                           std::span<const index> offsets, StridedMap dlogits) {
    const index T = logits.rows();
    require(static_cast<index>(ids.size()) == T, "causal_lm_loss: logits have ", T,
            " rows but ids has ", ids.size(), " tokens");
    const NextTokenTargets t = next_token_targets(ids, offsets, logits.cols());
    const double inv_count = 1.0 / static_cast<double>(t.count);
    return cross_entropy_rows(logits, t.target, inv_count, dlogits) * inv_count;
}

/// `causal_lm_loss` on whole matrices; `dlogits` is resized to logits' shape.
[[nodiscard]] inline double causal_lm_loss(const Matrix& logits, std::span<const std::int32_t> ids,
                                           std::span<const index> offsets, Matrix& dlogits) {
    dlogits.resize(logits.rows(), logits.cols());
    return causal_lm_loss(cview(logits), ids, offsets, detail::strided(dlogits));
}

/// InfoNCE with in-batch negatives, as Tevatron trains Mamba Retriever.
///
/// `q` (nq, D) query embeddings and `p` (nq·G, D) passage embeddings, both already
/// L2-normalised; passages come in groups of `group_size` G, query i's group is rows
/// [i·G, (i+1)·G) of `p` and its first passage (row i·G) is the positive. Scores
/// S = q·pᵀ / τ (nq, nq·G) cover every passage of every group, so the other queries'
/// passages are negatives too. Returns mean_i (logsumexp(S_i) − S_i,iG) and writes
/// `dq` (nq, D) and `dp` (nq·G, D), the gradients w.r.t. the normalised embeddings (the
/// normalisation's own backward belongs to the bi-encoder head).
///
/// Errors: G < 1, no queries, a passage count other than nq·G, widths that disagree,
/// τ not positive and finite, a loss that is not finite.
[[nodiscard]] inline double info_nce_loss(ConstStridedMap q, ConstStridedMap p, index group_size,
                                          double temperature, StridedMap dq, StridedMap dp) {
    const index nq = q.rows(), D = q.cols();
    require(group_size >= 1, "info_nce_loss: group size must be at least 1, got ", group_size);
    require(nq >= 1, "info_nce_loss: no queries");
    require(p.rows() == nq * group_size, "info_nce_loss: ", p.rows(), " passages for ", nq,
            " queries and group size ", group_size, " (expected ", nq * group_size, ")");
    require(p.cols() == D, "info_nce_loss: queries have width ", D, " but passages ", p.cols());
    require(std::isfinite(temperature) && temperature > 0.0,
            "info_nce_loss: temperature must be positive, got ", temperature);
    require(dq.rows() == nq && dq.cols() == D, "info_nce_loss: dq is (", dq.rows(), ", ", dq.cols(),
            "), queries are (", nq, ", ", D, ")");
    require(dp.rows() == p.rows() && dp.cols() == D, "info_nce_loss: dp is (", dp.rows(), ", ",
            dp.cols(), "), passages are (", p.rows(), ", ", D, ")");

    using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const MatrixD qd = q.cast<double>(), pd = p.cast<double>();
    const double inv_tau = 1.0 / temperature;
    MatrixD s = (qd * pd.transpose()) * inv_tau;  // (nq, nq·G) scores
    double loss = 0.0;
    for (index i = 0; i < nq; ++i) {
        auto row = s.row(i);
        const double m = row.maxCoeff();
        const double target_score = row(i * group_size);
        row.array() = (row.array() - m).exp();
        const double sum = row.sum();
        const index target = i * group_size;
        loss += m + std::log(sum) - target_score;
        row /= sum;  // softmax
        row(target) -= 1.0;
    }
    const double inv_nq = 1.0 / static_cast<double>(nq);
    loss *= inv_nq;
    if (!std::isfinite(loss)) {
        detail::require_finite_rows(loss, "info_nce_loss", q, "queries");
        detail::require_finite_rows(loss, "info_nce_loss", p, "passages");
        fail("info_nce_loss: loss is ", loss, " although every embedding is finite");
    }
    s *= inv_nq * inv_tau;  // dL/d(q·pᵀ)
    dq = (s * pd).cast<float>();
    dp = (s.transpose() * qd).cast<float>();
    return loss;
}

/// `info_nce_loss` on whole matrices; `dq` and `dp` are resized to the inputs' shapes.
[[nodiscard]] inline double info_nce_loss(const Matrix& q, const Matrix& p, index group_size,
                                          double temperature, Matrix& dq, Matrix& dp) {
    dq.resize(q.rows(), q.cols());
    dp.resize(p.rows(), p.cols());
    return info_nce_loss(cview(q), cview(p), group_size, temperature, detail::strided(dq),
                         detail::strided(dp));
}

/// Listwise softmax cross-entropy, RankMamba's LCE.
///
/// `scores` (ngroups·G): the reranker's scores of ngroups groups of `group_size` G pairs,
/// each group's first pair the positive. Returns mean over groups of (logsumexp(group) −
/// group[0]) and writes `dscores` (ngroups·G) = (softmax − one-hot) / ngroups per group.
///
/// Errors: G < 2 (a group needs a negative), a score count that is not a positive
/// multiple of G, a `dscores` of another size, a loss that is not finite.
[[nodiscard]] inline double listwise_softmax_loss(std::span<const float> scores, index group_size,
                                                  std::span<float> dscores) {
    require(
        group_size >= 2,
        "listwise_softmax_loss: group size must be at least 2 (a positive and a negative), got ",
        group_size);
    const index n = static_cast<index>(scores.size());
    require(n > 0 && n % group_size == 0, "listwise_softmax_loss: ", n,
            " scores do not form whole groups of ", group_size);
    require(dscores.size() == scores.size(), "listwise_softmax_loss: dscores has ", dscores.size(),
            " entries, scores ", scores.size());
    const index ngroups = n / group_size;
    const double inv_groups = 1.0 / static_cast<double>(ngroups);
    double loss = 0.0;
    std::vector<double> e(static_cast<std::size_t>(group_size));
    for (index g = 0; g < ngroups; ++g) {
        const float* s = scores.data() + g * group_size;
        float* d = dscores.data() + g * group_size;
        double m = s[0];
        for (index j = 1; j < group_size; ++j) m = std::max(m, static_cast<double>(s[j]));
        double sum = 0.0;
        for (index j = 0; j < group_size; ++j)
            sum += e[static_cast<std::size_t>(j)] = std::exp(s[j] - m);
        const double lse = m + std::log(sum);
        loss += lse - s[0];
        if (!std::isfinite(lse - s[0])) {
            for (index j = 0; j < group_size; ++j)
                require(std::isfinite(s[j]), "listwise_softmax_loss: loss is not finite; score ",
                        g * group_size + j, " (group ", g, ") is ", s[j]);
            fail("listwise_softmax_loss: loss of group ", g,
                 " is not finite although its scores are");
        }
        for (index j = 0; j < group_size; ++j)
            d[j] = static_cast<float>(
                (e[static_cast<std::size_t>(j)] / sum - (j == 0 ? 1.0 : 0.0)) * inv_groups);
    }
    return loss * inv_groups;
}

}  // namespace ssm::train
