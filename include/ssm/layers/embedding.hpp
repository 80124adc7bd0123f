// ssm/layers/embedding.hpp — token ids -> rows of the embedding table.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ssm/core/tensor.hpp"
#include "ssm/core/threads.hpp"
#include "ssm/core/weights.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/train/parameters.hpp"

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

    // ---- Training ----------------------------------------------------------------------
    // The training forward is `forward`; backward needs only the ids.

    /// Makes the table an owned float32 master (a mapped or bfloat16 table is copied or
    /// widened; forward then gathers from it) with a gradient, registered as `name`.
    void register_parameters(train::Parameters& params, const std::string& name) {
        master_ = Tensor::zeros({vocab_size(), dim()});
        table_.rows_f32(0, vocab_size(), master_.mutable_data());
        table_ = WeightMatrix(master_);
        grad_ = Tensor::zeros({vocab_size(), dim()});
        const auto n = static_cast<std::size_t>(master_.size());
        params.add(name, {vocab_size(), dim()}, {master_.mutable_data(), n}, {grad_.mutable_data(), n}, true);
    }

    /// The float32 master table and its gradient (vocab, dim), empty until trainable; a
    /// tied LM head computes with the one and adds into the other.
    [[nodiscard]] const Tensor& master() const noexcept { return master_; }
    [[nodiscard]] const Tensor& grad() const noexcept { return grad_; }

    /// Backward of the gather: grad[ids[r]] += dout[r] (a scatter-add: a token that occurs
    /// twice receives both rows).
    void backward(std::span<const std::int32_t> ids, ConstStridedMap dout) {
        require(!grad_.empty(), "Embedding::backward: register_parameters was not called");
        check_ids(ids);
        require(dout.rows() == static_cast<index>(ids.size()) && dout.cols() == dim(),
                "Embedding::backward: gradient is (", dout.rows(), ", ", dout.cols(), "), expected (",
                ids.size(), ", ", dim(), ")");
        MatrixMap g = grad_.mutable_matrix();
        for (index r = 0; r < dout.rows(); ++r) g.row(ids[static_cast<std::size_t>(r)]) += dout.row(r);
    }

private:
    WeightMatrix table_;  // (vocab, dim)
    Tensor master_;       // (vocab, dim) float32 master, once trainable (table_ shares it)
    Tensor grad_;         // (vocab, dim), once trainable
};

}  // namespace ssm
