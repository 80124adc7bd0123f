// Loading whole models: the norm kind follows config.json, and a checkpoint that
// disagrees with its config (a shape, a missing tensor, an untied head without
// lm_head.weight) is an error naming the file and tensor.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace test_mamba {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// A copy of mamba-tiny whose config.json has `edit` applied (old → new text), and
/// whose weights are `tensors` (all of the original ones when empty).
fs::path variant(const std::string& tag, const std::string& from, const std::string& to,
                 const std::vector<std::string>& drop = {}) {
    const auto src = ssm::test::data_dir() / "mamba-tiny";
    const auto dir = ssm::test::scratch_dir(tag);
    std::string cfg = read_text(src / "config.json");
    if (!from.empty()) {
        const auto at = cfg.find(from);
        REQUIRE(at != std::string::npos);
        cfg.replace(at, from.size(), to);
    }
    std::ofstream(dir / "config.json") << cfg;
    const auto f = ssm::SafetensorsFile::open(src / "model.safetensors");
    std::vector<ssm::Tensor> keep;
    std::vector<ssm::TensorToWrite> out;
    for (const auto& n : f.names()) {
        if (std::find(drop.begin(), drop.end(), n) != drop.end()) continue;
        keep.push_back(f.load_f32(n));
        const auto& t = keep.back();
        out.push_back(ssm::f32_tensor(n, {t.shape().begin(), t.shape().end()}, t.values()));
    }
    ssm::write_safetensors(dir / "model.safetensors", out);
    return dir;
}

}  // namespace

TEST_CASE("rms_norm: false selects LayerNorm; the RMSNorm model type refuses it", "[model]") {
    const auto dir = variant("layernorm", "\"model_type\"", "\"rms_norm\": false,\n  \"model_type\"");
    const auto msg = ssm::test::error_of([&] { (void)ssm::MambaLM::load(dir); });
    CHECK(msg.find("LayerNorm") != std::string::npos);
    const auto kind = ssm::with_mamba_lm(dir, [](const auto& model) {
        const auto r = model.forward(ssm::Batch::of({{1, 2, 3}}));
        CHECK(r.logits.allFinite());
        return std::decay_t<decltype(model)>::norm_type::kind;
    });
    CHECK(kind == ssm::NormKind::LayerNorm);
    CHECK(ssm::with_mamba_lm(ssm::test::data_dir() / "mamba-tiny",
                             [](const auto& m) { return std::decay_t<decltype(m)>::norm_type::kind; }) ==
          ssm::NormKind::RMSNorm);
    fs::remove_all(dir);
}

TEST_CASE("a checkpoint that disagrees with config.json names the tensor", "[model]") {
    {
        const auto dir = variant("shape", "\"state_size\": 16", "\"state_size\": 8");
        const auto msg = ssm::test::error_of([&] { (void)ssm::MambaLM::load(dir); });
        INFO(msg);
        CHECK(msg.find("model.safetensors") != std::string::npos);
        CHECK(msg.find("backbone.layers.0.mixer.") != std::string::npos);
        CHECK(msg.find("expected shape") != std::string::npos);
        fs::remove_all(dir);
    }
    {
        const auto dir = variant("missing", "", "", {"backbone.layers.2.mixer.dt_proj.bias"});
        const auto msg = ssm::test::error_of([&] { (void)ssm::MambaLM::load(dir); });
        INFO(msg);
        CHECK(msg.find("backbone.layers.2.mixer.dt_proj.bias") != std::string::npos);
        CHECK(msg.find(dir.string()) != std::string::npos);
        fs::remove_all(dir);
    }
    {
        const auto dir = variant("untied", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
        const auto msg = ssm::test::error_of([&] { (void)ssm::MambaLM::load(dir); });
        CHECK(msg.find("lm_head.weight") != std::string::npos);
        fs::remove_all(dir);
    }
    {
        const auto dir = variant("layers", "\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4");
        CHECK(ssm::test::error_of([&] { (void)ssm::MambaLM::load(dir); }).find("backbone.layers.3.") !=
              std::string::npos);
        fs::remove_all(dir);
    }
}

TEST_CASE("a tied checkpoint without lm_head.weight uses the embedding as the head", "[model]") {
    const auto model = ssm::MambaLM::load(ssm::test::data_dir() / "mamba-tiny");
    CHECK(model.head().tied());
    const auto untied = ssm::MambaLM::load(ssm::test::data_dir() / "mamba-tiny-bf16-sharded");
    CHECK_FALSE(untied.head().tied());
}

TEST_CASE("forward and step reject bad batches and states", "[model]") {
    const auto model = ssm::MambaLM::load(ssm::test::data_dir() / "mamba-tiny");
    CHECK(ssm::test::error_of([&] { (void)model.forward(ssm::Batch()); }).find("no sequence") != std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)model.forward(ssm::Batch::of({{1, 1000}})); }).find("position 1") !=
          std::string::npos);
    auto state = model.make_state(2);
    const std::int32_t one[] = {5};
    CHECK(ssm::test::error_of([&] { (void)model.step(one, state); }).find("state of 2") != std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)model.forward(ssm::Batch::of({{1}}), {}, &state); }).find("2 sequences") !=
          std::string::npos);
    // Regression: step indexed a state made by a model with fewer layers out of bounds
    // (forward checked the layer count, step did not).
    auto short_state = model.make_state(1);
    short_state.layers.pop_back();
    CHECK(ssm::test::error_of([&] { (void)model.step(one, short_state); }).find("state has 2 layers, the model 3") !=
          std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)model.forward(ssm::Batch::of({{1}}), {}, &short_state); })
              .find("state has 2 layers") != std::string::npos);
}

}  // namespace test_mamba
