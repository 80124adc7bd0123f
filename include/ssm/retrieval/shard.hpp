// ssm/retrieval/shard.hpp — the parts of sharded encoding and sharded search that need no
// communication: how a corpus is split across processes (ranks) by token count, how one
// rank encodes its part, how the gathered parts go back into input order, and how the
// ranks' top-k lists merge into the global top-k. `ssm/retrieval/mpi.hpp` moves the
// pieces between processes; everything here is plain C++ and is tested without MPI.
//
// The split follows `encode_sequences`: sequences sorted by length (stably) and packed
// greedily into batches of about `batch_tokens` tokens. Each part is a run of whole
// batches, chosen so that the parts hold about equal numbers of tokens (a Mamba
// encoder's cost is linear in tokens). A rank therefore computes exactly the batches one
// process would compute, and the gathered embeddings are bitwise equal to the
// single-process ones (at the same thread count: a GEMM's blocking may depend on it).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/retrieval/encode.hpp"
#include "ssm/retrieval/top_k.hpp"

namespace ssm {

/// A failure that every process of a sharded job agreed on: thrown on every rank, with the
/// message of the lowest failing rank, so that all stop at the same point.
struct PeerFailure : Error {
    using Error::Error;
};

/// How `parts` processes share the encoding of a list of sequences.
struct ShardPlan {
    std::vector<index> order;   // (n): sequence indices sorted by length, stably
    std::vector<index> bounds;  // (parts + 1): part r encodes order[bounds[r] .. bounds[r + 1])
    std::vector<index> tokens;  // (parts): tokens of each part

    [[nodiscard]] index parts() const noexcept { return static_cast<index>(tokens.size()); }
    [[nodiscard]] index begin(index part) const { return bounds[static_cast<std::size_t>(part)]; }
    [[nodiscard]] index end(index part) const { return bounds[static_cast<std::size_t>(part) + 1]; }
    [[nodiscard]] index size(index part) const { return end(part) - begin(part); }
    /// The input indices of part `part`'s sequences, in the order it encodes them.
    [[nodiscard]] std::span<const index> members(index part) const {
        return std::span<const index>(order).subspan(static_cast<std::size_t>(begin(part)),
                                                     static_cast<std::size_t>(size(part)));
    }
};

/// Splits sequences of the given `lengths` (tokens, each >= 1) into `parts` runs of whole
/// `encode_sequences` batches (of `batch_tokens`) holding about equal numbers of tokens.
/// Parts may be empty when there are fewer batches than parts.
[[nodiscard]] inline ShardPlan plan_shards(std::span<const index> lengths, index batch_tokens, index parts) {
    require(batch_tokens > 0, "plan_shards: batch_tokens must be > 0, got ", batch_tokens);
    require(parts >= 1, "plan_shards: parts must be >= 1, got ", parts);
    const index n = static_cast<index>(lengths.size());
    ShardPlan plan;
    plan.order.resize(static_cast<std::size_t>(n));
    std::iota(plan.order.begin(), plan.order.end(), index{0});
    std::stable_sort(plan.order.begin(), plan.order.end(), [&](index a, index b) {
        return lengths[static_cast<std::size_t>(a)] < lengths[static_cast<std::size_t>(b)];
    });
    // Batch boundaries exactly as encode_sequences packs: add while the batch is empty or
    // the sequence still fits. cum[b] = tokens before batch b.
    std::vector<index> starts, cum;
    index total = 0;
    {
        index in_batch = 0;
        for (index i = 0; i < n; ++i) {
            const index len = lengths[static_cast<std::size_t>(plan.order[static_cast<std::size_t>(i)])];
            require(len >= 1, "plan_shards: sequence ", plan.order[static_cast<std::size_t>(i)], " is empty");
            if (i == 0 || in_batch + len > batch_tokens) {
                starts.push_back(i);
                cum.push_back(total);
                in_batch = 0;
            }
            in_batch += len;
            total += len;
        }
        starts.push_back(n);
        cum.push_back(total);
    }
    const index batches = static_cast<index>(starts.size()) - 1;
    // Cut r (1 <= r < parts) at the batch boundary whose token count is nearest to
    // total * r / parts, never before the previous cut.
    plan.bounds.assign(static_cast<std::size_t>(parts) + 1, 0);
    std::size_t b = 0;
    for (index r = 1; r < parts; ++r) {
        const double target = static_cast<double>(total) * static_cast<double>(r) / static_cast<double>(parts);
        while (b < static_cast<std::size_t>(batches) && static_cast<double>(cum[b + 1]) <= target) ++b;
        if (b < static_cast<std::size_t>(batches) &&
            static_cast<double>(cum[b + 1]) - target < target - static_cast<double>(cum[b]))
            ++b;
        plan.bounds[static_cast<std::size_t>(r)] = starts[b];
    }
    plan.bounds[static_cast<std::size_t>(parts)] = n;
    plan.tokens.resize(static_cast<std::size_t>(parts));
    for (index r = 0; r < parts; ++r) {
        index t = 0;
        for (const index i : plan.members(r)) t += lengths[static_cast<std::size_t>(i)];
        plan.tokens[static_cast<std::size_t>(r)] = t;
    }
    return plan;
}

/// The token counts of `sequences`, for `plan_shards`.
[[nodiscard]] inline std::vector<index> sequence_lengths(std::span<const std::vector<std::int32_t>> sequences) {
    std::vector<index> lengths;
    lengths.reserve(sequences.size());
    for (const auto& s : sequences) lengths.push_back(static_cast<index>(s.size()));
    return lengths;
}

/// Encodes part `part` of `plan`: one row per member, in the plan's order
/// (`plan.members(part)`), with the batches one process encoding all of `sequences` with
/// the same `opt.batch_tokens` would form. `plan` must come from these sequences' lengths
/// and that batch size.
template <class M>
[[nodiscard]] Matrix encode_shard(const M& model, std::span<const std::vector<std::int32_t>> sequences,
                                  const ShardPlan& plan, index part, const EncodeOptions& opt = {}) {
    require(part >= 0 && part < plan.parts(), "encode_shard: part ", part, " of ", plan.parts());
    require(static_cast<index>(sequences.size()) == static_cast<index>(plan.order.size()),
            "encode_shard: the plan is for ", plan.order.size(), " sequences, got ", sequences.size());
    std::vector<std::vector<std::int32_t>> mine;
    mine.reserve(static_cast<std::size_t>(plan.size(part)));
    for (const index i : plan.members(part)) mine.push_back(sequences[static_cast<std::size_t>(i)]);
    return encode_sequences(model, mine, opt);  // already sorted: the stable sort keeps the order
}

/// Rows in the plan's order (the parts' rows one after another) → rows in input order.
[[nodiscard]] inline Matrix unshard_rows(const Matrix& in_plan_order, const ShardPlan& plan) {
    const index n = static_cast<index>(plan.order.size());
    require(in_plan_order.rows() == n, "unshard_rows: ", in_plan_order.rows(), " rows for a plan of ", n,
            " sequences");
    Matrix out(n, in_plan_order.cols());
    for (index i = 0; i < n; ++i) out.row(plan.order[static_cast<std::size_t>(i)]) = in_plan_order.row(i);
    return out;
}

/// Merges top-k lists of disjoint parts of a corpus, whose ids are already global
/// document indices, into the k best, best first; equal scores rank the lower id first
/// (as `exact_top_k` does), so merging the parts of a split corpus gives the whole
/// corpus's exact top-k. Entries with a negative id (a list shorter than its width) are
/// skipped; a query with fewer than k candidates in all is padded with id -1 and score
/// -inf. Every part must have the same number of queries; the result has
/// min(k, the parts' columns added up) columns.
[[nodiscard]] inline TopK merge_top_k(std::span<const TopK> parts, index k) {
    require(k >= 0, "merge_top_k: k must be >= 0, got ", k);
    const index nq = parts.empty() ? 0 : parts.front().ids.rows();
    index width = 0;
    for (const auto& p : parts) {
        require(p.ids.rows() == nq && p.scores.rows() == nq && p.scores.cols() == p.ids.cols(),
                "merge_top_k: the parts disagree on the number of queries (", p.ids.rows(), " vs ", nq, ")");
        width += p.ids.cols();
    }
    const index kk = std::min(k, width);
    TopK out;
    out.ids.resize(nq, kk);
    out.scores.resize(nq, kk);
    std::vector<detail::ScoredDoc> candidates;
    for (index q = 0; q < nq; ++q) {
        candidates.clear();
        for (const auto& p : parts)
            for (index j = 0; j < p.ids.cols(); ++j)
                if (p.ids(q, j) >= 0) candidates.push_back({p.scores(q, j), p.ids(q, j)});
        const auto found = std::min<std::size_t>(static_cast<std::size_t>(kk), candidates.size());
        std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(found),
                          candidates.end(), detail::ranks_before);
        for (index j = 0; j < kk; ++j) {
            const bool have = static_cast<std::size_t>(j) < found;
            out.ids(q, j) = have ? candidates[static_cast<std::size_t>(j)].doc : index{-1};
            out.scores(q, j) =
                have ? candidates[static_cast<std::size_t>(j)].score : -std::numeric_limits<float>::infinity();
        }
    }
    return out;
}

/// Replaces each id of `hits` that is a row of a shard (0 .. global.size()) by the global
/// document index `global[id]`; negative ids (padding) stay.
inline void to_global_ids(TopK& hits, std::span<const index> global) {
    for (index i = 0; i < hits.ids.size(); ++i) {
        index& id = hits.ids.data()[i];
        if (id < 0) continue;
        require(id < static_cast<index>(global.size()), "to_global_ids: row ", id, " of a shard of ",
                global.size());
        id = global[static_cast<std::size_t>(id)];
    }
}

}  // namespace ssm
