// ssm/retrieval/vector_index.hpp — what a searchable collection of document embeddings
// offers (the `VectorIndex` concept), and `ExactIndex`, the exact one: `exact_top_k` over
// the vectors it holds. `ssm::FaissIndex` (ssm/retrieval/faiss_index.hpp, with FAISS)
// models the same concept, so code written against one works with the other.
#pragma once

#include <concepts>
#include <utility>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/retrieval/top_k.hpp"

namespace ssm {

/// A searchable set of `size()` vectors of `dim()` floats, numbered 0, 1, ... in the order
/// they were added. `search(queries (nq, dim), k)` returns min(k, size()) ids and scores
/// (inner products) per query, best first; an approximate index that finds fewer than k
/// reports id -1 and score -inf in the remaining places.
template <class I>
concept VectorIndex = requires(I& idx, const I& cidx, const Matrix& m, ssm::index k) {
    { cidx.dim() } -> std::convertible_to<ssm::index>;
    { cidx.size() } -> std::convertible_to<ssm::index>;
    idx.add(m);
    { cidx.search(m, k) } -> std::same_as<TopK>;
};

/// Exact maximum-inner-product search (cosine on L2-normalised rows): every query is
/// scored against every vector; ties rank the lower id first.
class ExactIndex {
public:
    explicit ExactIndex(ssm::index dim) : vectors_(0, dim) {
        require(dim >= 1, "ExactIndex: dimension must be >= 1, got ", dim);
    }
    /// Takes `vectors` (n, dim) as they are (no copy when moved in).
    explicit ExactIndex(Matrix vectors) : vectors_(std::move(vectors)) {
        require(vectors_.cols() >= 1, "ExactIndex: dimension must be >= 1, got ", vectors_.cols());
    }

    [[nodiscard]] ssm::index dim() const noexcept { return vectors_.cols(); }
    [[nodiscard]] ssm::index size() const noexcept { return vectors_.rows(); }
    [[nodiscard]] const Matrix& vectors() const noexcept { return vectors_; }

    /// Appends `more` (m, dim): they get ids size() .. size() + m - 1.
    void add(const Matrix& more) {
        require(more.cols() == dim(), "ExactIndex::add: vectors of dimension ", more.cols(),
                " for an index of dimension ", dim());
        if (more.rows() == 0) return;
        Matrix grown(size() + more.rows(), dim());
        grown.topRows(size()) = vectors_;
        grown.bottomRows(more.rows()) = more;
        vectors_ = std::move(grown);
    }

    [[nodiscard]] TopK search(const Matrix& queries, ssm::index k) const {
        require(queries.cols() == dim(), "ExactIndex::search: queries of dimension ", queries.cols(),
                " for an index of dimension ", dim());
        return exact_top_k(queries, vectors_, k);
    }

private:
    Matrix vectors_;  // (size, dim)
};

static_assert(VectorIndex<ExactIndex>);

}  // namespace ssm
