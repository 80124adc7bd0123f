// ssm/retrieval/top_k.hpp — exact maximum-inner-product search: for each query, the k
// documents whose embeddings have the largest dot product with it (cosine similarity
// when the rows are L2-normalised).
//
// Blocked: scores are computed tile by tile, (query block x document block), with one
// GEMM per tile (`serial_product`: AVX2 register tiles or Eigen's product) into a buffer
// of bounded size, and each query keeps its k best so far in a bounded heap, so memory is
// O(nq * k + threads * tile), never the nq x nd matrix.
// Threads take whole query blocks (ssm::parallel_for), and, when there are fewer query
// blocks than threads, parts of the corpus too (merged at the end); the results do not
// depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "ssm/core/error.hpp"
#include "ssm/core/gemm_f32.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"

namespace ssm {

/// The result of `exact_top_k`.
struct TopK {
    Eigen::Matrix<index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>
        ids;        // (nq, k): doc rows, best first
    Matrix scores;  // (nq, k): their dot products
};

/// Tile shape of `exact_top_k`: each thread holds one (query_rows, doc_rows) float tile.
struct TopKTiles {
    index query_rows = 64;  // queries per block (and per GEMM)
    index doc_rows = 2048;  // documents per block
};

namespace detail {

struct ScoredDoc {
    float score;
    index doc;
};

/// `a` ranks before `b`: higher score, ties broken by the lower document index.
[[nodiscard]] inline bool ranks_before(const ScoredDoc& a, const ScoredDoc& b) noexcept {
    return a.score > b.score || (a.score == b.score && a.doc < b.doc);
}

/// A heap of `k` entries whose root is the one ranked last: replaces the root by `item`
/// and restores the heap.
inline void replace_last_ranked(ScoredDoc* heap, index k, ScoredDoc item) noexcept {
    index i = 0;
    while (true) {
        const index left = 2 * i + 1;
        if (left >= k) break;
        index child = left;
        if (left + 1 < k && ranks_before(heap[left], heap[left + 1])) child = left + 1;
        if (!ranks_before(item, heap[child])) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = item;
}

/// Offers the scores `row[0..n)` of documents first_doc, first_doc + 1, ... to `heap`,
/// which holds `size` entries (capacity k) of documents with lower indices. Returns the
/// new size. NaN scores rank last (as -inf).
inline index offer_scores(ScoredDoc* heap, index size, index k, const float* row, index n,
                          index first_doc) noexcept {
    constexpr float lowest = -std::numeric_limits<float>::infinity();
    index j = 0;
    for (; j < n && size < k; ++j) {
        const float s = std::isnan(row[j]) ? lowest : row[j];
        heap[size++] = ScoredDoc{s, first_doc + j};
        std::push_heap(heap, heap + size, ranks_before);
    }
    // Later documents have higher indices, so one that only ties the last-ranked entry
    // ranks after it: strictly greater scores enter.
    for (; j < n; ++j) {
        if (row[j] > heap[0].score) replace_last_ranked(heap, k, ScoredDoc{row[j], first_doc + j});
    }
    return size;
}

}  // namespace detail

/// For each row of `queries` (nq, D), the min(k, nd) rows of `docs` (nd, D) with the
/// largest dot products, best first; equal scores rank the lower document index first.
/// `tiles` sets the block shape (the results do not depend on it beyond float rounding of
/// the dot products). k >= 0; queries and docs must have the same number of columns.
/// A NaN score ranks below every other score and is reported as -inf.
[[nodiscard]] inline TopK exact_top_k(const Matrix& queries, const Matrix& docs, index k,
                                      const TopKTiles& tiles) {
    require(queries.cols() == docs.cols(), "exact_top_k: queries have ", queries.cols(),
            " columns but documents have ", docs.cols());
    require(k >= 0, "exact_top_k: k must be >= 0, got ", k);
    require(tiles.query_rows >= 1 && tiles.doc_rows >= 1,
            "exact_top_k: tile shape must be positive, got (", tiles.query_rows, ", ",
            tiles.doc_rows, ")");
    const index nq = queries.rows();
    const index nd = docs.rows();
    const index kk = std::min(k, nd);
    TopK out;
    out.ids.resize(nq, kk);
    out.scores.resize(nq, kk);
    if (nq == 0 || kk == 0) return out;

    const index qb = std::min(tiles.query_rows, nq);
    const index db = std::min(tiles.doc_rows, nd);
    const index qblocks = (nq + qb - 1) / qb;
    const index dblocks = (nd + db - 1) / db;
    // With fewer query blocks than threads (a handful of queries), the documents are split
    // too: every (query block, document part) keeps its own k best, merged at the end, so
    // all threads read the corpus. Parts are runs of whole document blocks.
    const index wanted_parts = std::min(dblocks, (num_threads() + qblocks - 1) / qblocks);
    const index blocks_per_part = (dblocks + wanted_parts - 1) / wanted_parts;
    const index parts = (dblocks + blocks_per_part - 1) / blocks_per_part;  // none empty
    const index part_docs = blocks_per_part * db;
    // found[(part * nq + q) * kk ...]: the k best of part `part` for query q (fewer when
    // the part has fewer than k documents), in heap order.
    std::vector<detail::ScoredDoc> found(static_cast<std::size_t>(parts * nq * kk));
    const auto part_size = [&](index part) {
        return std::min(kk, std::min(nd, (part + 1) * part_docs) - part * part_docs);
    };

    parallel_for(qblocks * parts, 1, [&](index w0, index w1) {
        Matrix tile(qb, db);  // scores of one query block against one document block
        for (index w = w0; w < w1; ++w) {
            const index q0 = (w / parts) * qb, qn = std::min(qb, nq - q0);
            const index part = w % parts;
            const index d_begin = part * part_docs, d_end = std::min(nd, d_begin + part_docs);
            detail::ScoredDoc* heaps = found.data() + (part * nq + q0) * kk;
            index size = 0;  // every heap of the block holds the same number of entries
            for (index d0 = d_begin; d0 < d_end; d0 += db) {
                const index dn = std::min(db, d_end - d0);
                auto scores = tile.topLeftCorner(qn, dn);
                serial_product(scores, queries.middleRows(q0, qn), false, docs.middleRows(d0, dn), true, false);
                index new_size = size;
                for (index i = 0; i < qn; ++i)
                    new_size = detail::offer_scores(heaps + i * kk, size, kk, &scores(i, 0), dn, d0);
                size = new_size;
            }
        }
    });

    // Per query: the k best of the parts' candidates, best first.
    parallel_for(nq, 64, [&](index q0, index q1) {
        std::vector<detail::ScoredDoc> candidates;
        for (index q = q0; q < q1; ++q) {
            candidates.clear();
            for (index part = 0; part < parts; ++part) {
                const detail::ScoredDoc* heap = found.data() + (part * nq + q) * kk;
                candidates.insert(candidates.end(), heap, heap + part_size(part));
            }
            std::partial_sort(candidates.begin(), candidates.begin() + kk, candidates.end(),
                              detail::ranks_before);
            for (index j = 0; j < kk; ++j) {
                out.ids(q, j) = candidates[static_cast<std::size_t>(j)].doc;
                out.scores(q, j) = candidates[static_cast<std::size_t>(j)].score;
            }
        }
    });
    return out;
}

/// `exact_top_k` with the default tile shape.
[[nodiscard]] inline TopK exact_top_k(const Matrix& queries, const Matrix& docs, index k) {
    return exact_top_k(queries, docs, k, TopKTiles{});
}

/// Scales every row of `m` to unit L2 norm; a zero row stays zero.
inline void normalize_rows(Matrix& m) {
    parallel_for(m.rows(), 1024, [&](index begin, index end) {
        for (index r = begin; r < end; ++r) {
            const float norm = m.row(r).norm();
            if (norm > 0) m.row(r) /= norm;
        }
    });
}

}  // namespace ssm
