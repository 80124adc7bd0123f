// config.json in both forms (HuggingFace and original state-spaces), and every
// malformed config rejected with the file named.
#include <filesystem>
#include <fstream>
#include <string>

#include "ssm/io/config.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;

namespace {
fs::path write_config(const fs::path& dir, const std::string& text) {
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << text;
    return dir;
}
}  // namespace

TEST_CASE("reads the HuggingFace config of the bundled checkpoints", "[config]") {
    const auto c = ssm::MambaConfig::load(ssm::test::data_dir() / "mamba-tiny");
    CHECK(c.vocab_size == 1000);
    CHECK(c.hidden_size == 64);
    CHECK(c.num_hidden_layers == 3);
    CHECK(c.state_size == 16);
    CHECK(c.conv_kernel == 4);
    CHECK(c.intermediate_size == 128);
    CHECK(c.time_step_rank == 4);
    CHECK(c.tie_word_embeddings);
    CHECK(c.use_conv_bias);
    CHECK_FALSE(c.use_bias);
    CHECK(c.layer_norm_epsilon == 1e-5);
    CHECK(c.norm == ssm::NormKind::RMSNorm);
    CHECK(c.eos_token_id == 0);
    const auto b = ssm::MambaConfig::load(ssm::test::data_dir() / "mamba-tiny-bf16-sharded" / "config.json");
    CHECK_FALSE(b.tie_word_embeddings);
    CHECK(b.state_size == 8);
}

TEST_CASE("time_step_rank \"auto\" is ceil(hidden / 16); intermediate defaults to expand · hidden", "[config]") {
    const auto dir = ssm::test::scratch_dir("config-auto");
    write_config(dir, R"({"vocab_size": 50280, "hidden_size": 770, "num_hidden_layers": 2, "time_step_rank": "auto"})");
    const auto c = ssm::MambaConfig::load(dir);
    CHECK(c.time_step_rank == 49);
    CHECK(c.intermediate_size == 1540);
    fs::remove_all(dir);
}

TEST_CASE("reads the original state-spaces config form", "[config]") {
    const auto dir = ssm::test::scratch_dir("config-original");
    write_config(dir, R"({"d_model": 1024, "n_layer": 53, "vocab_size": 256, "ssm_cfg": {"d_state": 16, "dt_rank": 80},
                          "rms_norm": false, "residual_in_fp32": true, "fused_add_norm": true,
                          "pad_vocab_size_multiple": 8, "tie_embeddings": false})");
    auto c = ssm::MambaConfig::load(dir);
    CHECK(c.hidden_size == 1024);
    CHECK(c.num_hidden_layers == 53);
    CHECK(c.vocab_size == 256);
    CHECK(c.norm == ssm::NormKind::LayerNorm);
    CHECK(c.intermediate_size == 2048);
    CHECK(c.time_step_rank == 80);
    CHECK_FALSE(c.tie_word_embeddings);
    write_config(dir, R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
                          "rms_norm": true, "pad_vocab_size_multiple": 8})");
    c = ssm::MambaConfig::load(dir);
    CHECK(c.vocab_size == 50280);  // padded up to a multiple of 8
    CHECK(c.time_step_rank == 48);
    CHECK(c.norm == ssm::NormKind::RMSNorm);
    fs::remove_all(dir);
}

TEST_CASE("malformed or missing config.json is an error naming the file", "[config]") {
    const auto dir = ssm::test::scratch_dir("config-bad");
    const auto expect = [&](const std::string& text, const std::string& needle) {
        write_config(dir, text);
        const auto msg = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); });
        INFO(text << " -> " << msg);
        CHECK(msg.find((dir / "config.json").string()) != std::string::npos);
        CHECK(msg.find(needle) != std::string::npos);
    };
    expect("{\"hidden_size\": 64,", "invalid JSON");
    expect("[1, 2]", "not a JSON object");
    expect(R"({"hidden_size": 64, "num_hidden_layers": 2})", "'vocab_size'");
    expect(R"({"vocab_size": 10, "hidden_size": "64", "num_hidden_layers": 2})", "'hidden_size' must be an integer");
    expect(R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 0})", "must be positive");
    expect(R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "time_step_rank": "big"})", "time step rank");
    expect(R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "use_bias": "no"})", "'use_bias'");
    expect(R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "eos_token_id": 10})", "eos_token_id");
    expect(R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "layer_norm_epsilon": -1})", "epsilon");
    fs::remove_all(dir / "config.json");
    CHECK(ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); }).find("config.json") != std::string::npos);
    CHECK(ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir / "nope"); }).find("nope") != std::string::npos);
    fs::remove_all(dir);
}
