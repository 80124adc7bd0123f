// ssm/model/batch.hpp — a packed batch: all tokens of all sequences back to back.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm {

/// Variable-length sequences packed without padding: `tokens` holds every sequence's
/// ids back to back; `offsets` = [0, L₀, L₀+L₁, …] (size() + 1 entries). Projections
/// run over all tokens at once; the conv and the scan respect the boundaries.
class Batch {
public:
    Batch() = default;

    /// A batch of the given sequences, in order.
    [[nodiscard]] static Batch of(std::span<const std::vector<std::int32_t>> sequences) {
        Batch b;
        for (const auto& s : sequences) b.add(s);
        return b;
    }
    [[nodiscard]] static Batch of(std::initializer_list<std::vector<std::int32_t>> sequences) {
        Batch b;
        for (const auto& s : sequences) b.add(s);
        return b;
    }

    /// Appends one sequence; an empty one is an error (it has no last token).
    void add(std::span<const std::int32_t> sequence) {
        require(!sequence.empty(), "Batch: sequence ", size(), " is empty");
        tokens_.insert(tokens_.end(), sequence.begin(), sequence.end());
        offsets_.push_back(static_cast<index>(tokens_.size()));
    }

    /// Number of sequences.
    [[nodiscard]] index size() const noexcept { return static_cast<index>(offsets_.size()) - 1; }
    [[nodiscard]] bool empty() const noexcept { return size() == 0; }
    /// Number of tokens over all sequences.
    [[nodiscard]] index total_tokens() const noexcept { return static_cast<index>(tokens_.size()); }
    [[nodiscard]] index length(index i) const { return offsets_.at(i + 1) - offsets_.at(i); }
    [[nodiscard]] std::span<const std::int32_t> tokens() const noexcept { return tokens_; }
    [[nodiscard]] std::span<const index> offsets() const noexcept { return offsets_; }
    [[nodiscard]] std::span<const std::int32_t> sequence(index i) const {
        return std::span(tokens_).subspan(static_cast<std::size_t>(offsets_.at(i)),
                                          static_cast<std::size_t>(length(i)));
    }

private:
    std::vector<std::int32_t> tokens_;
    std::vector<index> offsets_{0};
};

}  // namespace ssm
