// tests/model/parity_check.hpp — whole-model checks against a reference.safetensors, shared
// by the Mamba and SAMBA parity tests: every hidden state and the logits of each sequence
// run alone, and all sequences packed into one batch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ssm/core/dtype.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/model/batch.hpp"
#include "ssm/model/model.hpp"
#include "test_util.hpp"

namespace ssm::test {

/// A float32 copy of the checkpoint `weights` (one file, safetensors or PyTorch) with
/// every matrix (a rank-2 `*.weight`: the embedding, every Linear, an untied head) rounded
/// to bfloat16 and widened back, exactly what `store_weights_bf16()` keeps; everything else
/// (norms, conv, A_log, D, biases) unchanged. Written as `dir/model.safetensors` beside a
/// copy of `config` (config.json or lit_config.json). Loading `dir` and running the
/// float32 path is the reference for the bf16 path at float32 precision.
inline std::filesystem::path bf16_rounded_copy(const std::filesystem::path& weights,
                                               const std::filesystem::path& config,
                                               const std::filesystem::path& dir) {
    const auto file = TensorFile::open(weights);
    const auto names = file.names();
    std::vector<std::vector<float>> values;  // outlive the write: TensorToWrite views them
    values.reserve(names.size());
    std::vector<TensorToWrite> out;
    std::size_t rounded = 0;
    for (const auto& name : names) {
        const Tensor t = file.load_f32(name);
        auto& v = values.emplace_back(t.values().begin(), t.values().end());
        if (t.rank() == 2 && name.ends_with(".weight")) {
            for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
            ++rounded;
        }
        out.push_back(f32_tensor(name, {t.shape().begin(), t.shape().end()}, v));
    }
    REQUIRE(rounded >= 3);
    std::filesystem::copy_file(config, dir / config.filename());
    write_safetensors(dir / "model.safetensors", out);
    return dir;
}

/// Each `seq{i}` alone: the residual stream after every layer (`seq{i}.hidden.{j}`), the
/// final hidden state and the logits, each within `tol` (relative).
template <class Model>
void check_sequences_one_by_one(const Model& model, const SafetensorsFile& ref, int nseq,
                                double tol = 1e-5) {
    const auto layers = model.config().num_hidden_layers;
    for (int i = 0; i < nseq; ++i) {
        const std::string p = "seq" + std::to_string(i);
        const auto ids = ids_of(ref, p + ".input_ids");
        const auto r = model.forward(Batch::of({ids}), {Logits::All, true});
        INFO(p << " (" << ids.size() << " tokens)");
        REQUIRE(static_cast<index>(r.layer_outputs.size()) == layers);
        for (index j = 0; j < layers; ++j) {
            INFO("hidden." << j);
            CHECK(rel_error(span_of(r.layer_outputs[static_cast<std::size_t>(j)]),
                            ref.load_f32(p + ".hidden." + std::to_string(j)).values()) < tol);
        }
        CHECK(rel_error(span_of(r.hidden),
                        ref.load_f32(p + ".hidden." + std::to_string(layers)).values()) < tol);
        CHECK(rel_error(span_of(r.logits), ref.load_f32(p + ".logits").values()) < tol);
    }
}

/// All sequences packed into one batch (in reverse order, so boundaries move): equal to
/// each run alone (within `same_tol`: only float32 rounding differs, as a batch's row count
/// picks the matrix-product path), and the logits to the reference (within `tol`);
/// `Logits::Last` to the last row.
template <class Model>
void check_packed_batch(const Model& model, const SafetensorsFile& ref, int nseq, double tol = 1e-5,
                        double same_tol = 1e-6) {
    // Sequences packed in reverse order, so boundaries fall at different positions.
    std::vector<std::vector<std::int32_t>> seqs;
    for (int i = nseq - 1; i >= 0; --i)
        seqs.push_back(ids_of(ref, "seq" + std::to_string(i) + ".input_ids"));
    const auto batch = Batch::of(seqs);
    const auto packed = model.forward(batch, {Logits::All, false});
    const auto last = model.forward(batch, {Logits::Last, false});
    for (int k = 0; k < nseq; ++k) {
        const int i = nseq - 1 - k;
        const std::string p = "seq" + std::to_string(i);
        INFO("packed " << p);
        const auto begin = batch.offsets()[static_cast<std::size_t>(k)];
        const auto len = batch.length(k);
        const auto single =
            model.forward(Batch::of({seqs[static_cast<std::size_t>(k)]}), {Logits::All, false});
        // Packed = one by one, up to summation order inside the products.
        CHECK(rel_error(rows_of(packed.hidden, begin, len), span_of(single.hidden)) < same_tol);
        CHECK(rel_error(rows_of(packed.logits, begin, len), ref.load_f32(p + ".logits").values()) <
              tol);
        CHECK(rel_error(rows_of(last.logits, k, 1), rows_of(single.logits, len - 1, 1)) < same_tol);
    }
}

}  // namespace ssm::test
