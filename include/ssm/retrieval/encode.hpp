// ssm/retrieval/encode.hpp — encoding many sequences (a corpus, a set of queries, a list
// of pairs) with a per-sequence head: sorted by length into packed batches, no padding.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/progress.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/workspace.hpp"
#include "ssm/model/batch.hpp"

namespace ssm {

struct EncodeOptions {
    index batch_tokens = 16384;  // tokens per packed batch (one longer sequence goes alone)
    Progress* progress = nullptr; // advanced by the tokens of each finished batch
};

/// Runs `model.encode` over `sequences` and returns one row per sequence, in input order.
/// Sequences are sorted by length and packed into batches of about `batch_tokens` tokens,
/// so similar lengths share a batch and no padding is ever computed; the result does not
/// depend on the batching (each sequence is independent). Ids are checked up front, so a
/// bad id is reported before any work, with the sequence's index.
/// No sequences give an empty (0 × 0) matrix.
template <class M>
[[nodiscard]] Matrix encode_sequences(const M& model, std::span<const std::vector<std::int32_t>> sequences,
                                      const EncodeOptions& opt = {}) {
    require(opt.batch_tokens > 0, "encode_sequences: batch_tokens must be > 0, got ", opt.batch_tokens);
    const index n = static_cast<index>(sequences.size());
    for (index i = 0; i < n; ++i) {
        const auto& s = sequences[static_cast<std::size_t>(i)];
        require(!s.empty(), "sequence ", i, " is empty");
        try {
            model.embedding().check_ids(s);
        } catch (const Error& e) {
            fail("sequence ", i, ": ", e.what());
        }
    }
    std::vector<index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), index{0});
    std::stable_sort(order.begin(), order.end(), [&](index a, index b) {
        return sequences[static_cast<std::size_t>(a)].size() < sequences[static_cast<std::size_t>(b)].size();
    });

    Matrix out;
    Workspace ws;
    std::size_t next = 0;
    while (next < order.size()) {
        Batch batch;
        std::vector<index> rows;
        index tokens = 0;
        while (next < order.size()) {
            const auto& s = sequences[static_cast<std::size_t>(order[next])];
            const auto len = static_cast<index>(s.size());
            if (!rows.empty() && tokens + len > opt.batch_tokens) break;
            batch.add(s);
            rows.push_back(order[next++]);
            tokens += len;
        }
        const Matrix part = model.encode(batch, ws);
        if (out.size() == 0) out.resize(n, part.cols());
        for (std::size_t k = 0; k < rows.size(); ++k) out.row(rows[k]) = part.row(static_cast<index>(k));
        if (opt.progress) opt.progress->advance(tokens);
    }
    return out;
}

}  // namespace ssm
