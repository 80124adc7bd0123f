// ssm/layers/embedding.hpp — token ids -> rows of the embedding table.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/io/checkpoint.hpp"

namespace ssm {

/// The token embedding table (vocab, dim); also the LM head's weight when tied. Stored
/// as float32, or as bfloat16 or int8 blocks after `store_weights` (rows are widened as
/// they are gathered).
class Embedding {
public:
    Embedding() = default;
    explicit Embedding(Tensor table) : table_(std::move(table)) {}

    [[nodiscard]] static Embedding load(const Checkpoint& ckpt, const std::string& name, index vocab,
                                        index dim) {
        const index shape[] = {vocab, dim};
        return Embedding(ckpt.load_f32(name, shape));
    }

    [[nodiscard]] index vocab_size() const { return table_.rows(); }
    [[nodiscard]] index dim() const { return table_.cols(); }
    [[nodiscard]] const WeightMatrix& table() const noexcept { return table_; }

    /// Keeps the table in bfloat16 from now on.
    void store_bf16() { store_weights(WeightFormat::BF16); }

    /// Keeps the table in `format` from now on (see `WeightFormat`).
    void store_weights(WeightFormat format) { table_ = table_.to(format); }

    /// Throws naming the position of the first id outside [0, vocab).
    void check_ids(std::span<const std::int32_t> ids) const {
        for (std::size_t i = 0; i < ids.size(); ++i)
            if (ids[i] < 0 || ids[i] >= vocab_size())
                fail("token id ", ids[i], " at position ", i, " is outside the vocabulary [0, ",
                     vocab_size(), ")");
    }

    /// out (ids.size(), dim) = table[ids].
    void forward(std::span<const std::int32_t> ids, StridedMap out) const {
        check_ids(ids);
        require(out.rows() == static_cast<index>(ids.size()) && out.cols() == dim(),
                "Embedding: output is (", out.rows(), ", ", out.cols(), "), expected (", ids.size(),
                ", ", dim(), ")");
        parallel_for(out.rows(), 256, [&](index begin, index end) {
            for (index r = begin; r < end; ++r)
                table_.rows_f32(ids[static_cast<std::size_t>(r)], 1, out.row(r).data());
        });
    }

private:
    WeightMatrix table_;  // (vocab, dim)
};

}  // namespace ssm
