// Model::store_weights_int8: a model whose weight matrices are int8 blocks equals, to float32
// rounding, the float32 model built from the same widened weights (prefill, packed batches
// and decoding, on every Linear path), and stays within its documented distance of the
// transformers references (logits, greedy agreement).
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "model/generation_check.hpp"
#include "test_util.hpp"

namespace test_int8_weights {

namespace {

using ssm::test::ids_of;
using ssm::test::rel_error;
using ssm::test::span_of;

/// A copy of the checkpoint in `dir` whose 2-D weight matrices (what `store_weights_int8`
/// quantises: embedding, projections, an untied head) hold their int8-widened values.
std::filesystem::path widened_copy(const std::filesystem::path& dir) {
    const auto out = ssm::test::scratch_dir("int8-widened");
    std::filesystem::copy_file(dir / "config.json", out / "config.json");
    const auto ckpt = ssm::Checkpoint::open(dir);
    std::vector<std::vector<float>> values;
    std::vector<std::vector<ssm::index>> shapes;
    std::vector<std::string> names = ckpt.names();
    for (const auto& name : names) {
        const auto& info = ckpt.info(name);
        const ssm::Tensor t = ckpt.load_f32(name, info.shape);
        std::vector<float> v(t.values().begin(), t.values().end());
        const bool matrix = info.shape.size() == 2 && name.find("conv1d") == std::string::npos &&
                            name.find("A_log") == std::string::npos;
        if (matrix) ssm::WeightMatrix(ssm::Tensor::from(info.shape, v)).to_int8().rows_f32(0, info.shape[0], v.data());
        values.push_back(std::move(v));
        shapes.push_back(info.shape);
    }
    std::vector<ssm::TensorToWrite> tensors;
    for (std::size_t i = 0; i < names.size(); ++i) tensors.push_back(ssm::f32_tensor(names[i], shapes[i], values[i]));
    ssm::write_safetensors(out / "model.safetensors", tensors);
    return out;
}

}  // namespace

TEST_CASE("int8 weights: the model equals the float32 model with the widened weights", "[int8]") {
    // mamba-tiny: tied head (the int8 table serves both); the sharded one: untied head.
    for (const char* folder : {"mamba-tiny", "mamba-tiny-bf16-sharded"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        auto q = ssm::MambaLM::load(dir);
        q.store_weights_int8();
        REQUIRE(q.embedding().table().is_int8());
        const auto widened_dir = widened_copy(dir);
        const auto w = ssm::MambaLM::load(widened_dir);

        // Prefill: one sequence, and a packed batch (the GEMM path: 32+ rows).
        const auto a = ids_of(ref, "seq0.input_ids"), b = ids_of(ref, "seq1.input_ids");
        const auto batch = ssm::Batch::of({a, b});
        const auto rq = q.forward(batch, {ssm::Logits::All, false});
        const auto rw = w.forward(batch, {ssm::Logits::All, false});
        CHECK(rel_error(span_of(rq.logits), span_of(rw.logits)) < 1e-5);

        // Decoding (the few-rows path): 24 greedy steps from the same prompt.
        auto sq = q.make_state(1), sw = w.make_state(1);
        ssm::Matrix lq = q.forward(ssm::Batch::of({b}), {ssm::Logits::Last, false}, &sq).logits;
        ssm::Matrix lw = w.forward(ssm::Batch::of({b}), {ssm::Logits::Last, false}, &sw).logits;
        for (int i = 0; i < 24; ++i) {
            INFO("step " << i);
            REQUIRE(rel_error(span_of(lq), span_of(lw)) < 1e-5);
            Eigen::Index next = 0;
            lw.row(0).maxCoeff(&next);
            const std::int32_t tok[] = {static_cast<std::int32_t>(next)};
            lq = q.step(tok, sq);
            lw = w.step(tok, sw);
        }
        std::filesystem::remove_all(widened_dir);
    }
}

TEST_CASE("int8 weights: logits within the documented distance of the float32 references", "[int8]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    auto model = ssm::MambaLM::load(dir);
    model.store_weights_int8();
    double worst = 0;
    for (int s = 0; s < 4; ++s) {
        const std::string key = "seq" + std::to_string(s);
        const auto r = model.forward(ssm::Batch::of({ids_of(ref, key + ".input_ids")}), {ssm::Logits::All, false});
        worst = std::max(worst, rel_error(span_of(r.logits), ref.load_f32(key + ".logits").values()));
    }
    // The weights did change; the bound is the one docs/benchmarks.md states (measured
    // 1.4e-2 on these random weights; bfloat16 weights land near half that).
    CHECK(worst > 1e-6);
    CHECK(worst < 2e-2);
    // Greedy decoding agrees with the float64 reference, or parts from it at a near-tie.
    ssm::test::check_generation(model, ref, 2e-2, 0.05);
}

/// The largest relative error, over the reference sequences of `dir` (seq0, seq1, ...), of
/// the logits that decoding one token at a time through the recurrent state gives (the
/// few-rows path).
double decoding_error(const ssm::MambaLM& model, const std::filesystem::path& dir) {
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    double worst = 0;
    int sequences = 0;
    for (int s = 0; ref.contains("seq" + std::to_string(s) + ".input_ids"); ++s, ++sequences) {
        const std::string key = "seq" + std::to_string(s);
        const auto ids = ids_of(ref, key + ".input_ids");
        auto state = model.make_state(1);
        ssm::Matrix logits(static_cast<ssm::index>(ids.size()), model.vocab_size());
        for (std::size_t i = 0; i < ids.size(); ++i) logits.row(static_cast<ssm::index>(i)) = model.step({&ids[i], 1}, state);
        worst = std::max(worst, rel_error(span_of(logits), ref.load_f32(key + ".logits").values()));
    }
    REQUIRE(sequences >= 2);
    return worst;
}

TEST_CASE("int8 weights with int8 activations: decoding within the documented distance of the references", "[int8]") {
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const auto f32 = ssm::MambaLM::load(dir);
        auto weights_only = f32, both = f32;
        weights_only.store_weights(ssm::WeightFormat::Int8);
        both.store_weights(ssm::WeightFormat::Int8Activations);
        REQUIRE(both.embedding().table().format() == ssm::WeightFormat::Int8Activations);
        const double e32 = decoding_error(f32, dir), e8 = decoding_error(weights_only, dir),
                     e88 = decoding_error(both, dir);
        INFO("decoding logits, relative error: float32 " << e32 << ", int8 weights " << e8
                                                         << ", int8 weights and activations " << e88);
        // Measured: mamba-tiny 1.39e-2 → 1.98e-2, mambabyte-tiny 1.02e-2 → 1.46e-2 (int8
        // weights → and activations); docs/benchmarks.md states the bound of 3e-2.
        CHECK(e32 < 1e-5);
        CHECK(e88 > e8);  // the activations were rounded too
        CHECK(e88 < 3e-2);
        ssm::test::check_generation(both, ref, 3e-2, 0.1);
    }
}

}  // namespace test_int8_weights
