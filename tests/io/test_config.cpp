// config.json in both forms (HuggingFace and original state-spaces), and every
// malformed config rejected with the file named.
#include <filesystem>
#include <fstream>
#include <string>

#include "ssm/io/config.hpp"
#include "test_util.hpp"

namespace test_config {

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

// Regression: sizes were multiplied in signed 64 bits before validate() ran (vocab padding,
// expand × hidden, ceil(hidden / 16), head size × rotary fraction), so values near
// INT64_MAX were undefined behaviour or wrapped into "must be positive, got -2"; values
// above INT64_MAX were read as negative. Every size is now range-checked as it is read and
// the error names the key and the value as written.
TEST_CASE("sizes near or past the 64-bit range are refused by key, before any arithmetic", "[config]") {
    const auto dir = ssm::test::scratch_dir("config-range");
    const auto expect = [&](const std::string& text, const std::vector<std::string>& needles) {
        write_config(dir, text);
        const auto msg = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); });
        INFO(text << " -> " << msg);
        CHECK(msg.find((dir / "config.json").string()) != std::string::npos);
        for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    };
    const std::string max = "9223372036854775807";
    // HuggingFace form.
    expect(R"({"vocab_size": )" + max + R"(, "hidden_size": 64, "num_hidden_layers": 2})", {"'vocab_size'", max});
    expect(R"({"vocab_size": 10, "hidden_size": )" + max + R"(, "num_hidden_layers": 2})", {"'hidden_size'", max});
    expect(R"({"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 2, "expand": 4611686018427387904})",
           {"'expand'", "4611686018427387904"});
    expect(R"({"vocab_size": 10, "hidden_size": 18446744073709551615, "num_hidden_layers": 2})",
           {"'hidden_size'", "18446744073709551615"});
    expect(R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "eos_token_id": 18446744073709551615})",
           {"'eos_token_id'", "18446744073709551615"});
    // expand × hidden fits in 64 bits but is no size a model can have.
    expect(R"({"vocab_size": 10, "hidden_size": 2000000000, "num_hidden_layers": 2, "expand": 2000000000})",
           {"intermediate size", "4000000000000000000"});
    // Original state-spaces form: the vocabulary padding wrapped.
    expect(R"({"d_model": 64, "n_layer": 2, "vocab_size": 9223372036854775806, "pad_vocab_size_multiple": 8})",
           {"'vocab_size'", "9223372036854775806"});
    expect(R"({"d_model": 64, "n_layer": 2, "vocab_size": 10, "pad_vocab_size_multiple": )" + max + "}",
           {"'pad_vocab_size_multiple'", max});
    expect(R"({"d_model": 64, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {"expand": )" + max + "}}", {"'expand'", max});
    // lit-gpt form: head_size × rotary_percentage was a double out of range cast to an integer.
    const std::string lit = R"("_mlp_class": "LLaMAMLP", "_norm_class": "RMSNorm", "bias": false,
        "parallel_residual": false, "n_embd": 64, "n_head": 4, "intermediate_size": 96, "vocab_size": 300,
        "mb_per_layer": 2, "local_window": 8, "rotary_percentage": 1.0)";
    expect("{" + lit + R"(, "n_layer": 4, "head_size": )" + max + "}", {"'head_size'", max});
    expect("{" + lit + R"(, "n_layer": 4, "head_size": 16, "padding_multiple": )" + max + "}",
           {"'padding_multiple'", max});
    fs::remove_all(dir);
}

// Regression: a lit-gpt n_layer of 10^12 filled layer_kinds before any check (std::bad_alloc
// after 13 s and 4 GB); the layer count is bounded before anything is allocated for it.
TEST_CASE("a layer count of 10^12 is refused at once", "[config]") {
    const auto dir = ssm::test::scratch_dir("config-layers");
    const std::string lit = R"("_mlp_class": "LLaMAMLP", "_norm_class": "RMSNorm", "bias": false,
        "parallel_residual": false, "n_embd": 64, "n_head": 4, "intermediate_size": 96, "vocab_size": 300,
        "mb_per_layer": 2, "local_window": 8, "head_size": 16, "full_per_layer": 2000000000000)";
    for (const std::string count : {"1000000000000", "100000000"}) {
        for (const std::string& text : {"{" + lit + R"(, "n_layer": )" + count + "}",
                                        R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": )" + count + "}"}) {
            write_config(dir, text);
            const auto msg = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); });
            INFO(msg);
            CHECK(msg.find((dir / "config.json").string()) != std::string::npos);
            CHECK(msg.find(count) != std::string::npos);
            CHECK(msg.find("layer") != std::string::npos);
        }
    }
    fs::remove_all(dir);
}

// Regression: a value nested 200,000 deep where a size belongs crashed the program (stack
// overflow in the JSON serialiser called to print it in the error message). Error messages
// now show a bounded excerpt of a value, made without recursion.
TEST_CASE("a deeply nested value in an error message is shown without recursion", "[config]") {
    const auto dir = ssm::test::scratch_dir("config-deep");
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    for (const std::string& text :
         {R"({"vocab_size": 10, "num_hidden_layers": 2, "hidden_size": )" + deep + "}",
          R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "use_bias": )" + deep + "}",
          R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 2, "time_step_rank": )" + deep + "}",
          R"({"d_model": 64, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {"layer": )" + deep + "}}"}) {
        write_config(dir, text);
        const auto msg = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); });
        CHECK(msg.find((dir / "config.json").string()) != std::string::npos);
        CHECK(msg.size() < 1000);
    }
    fs::remove_all(dir);
}

}  // namespace test_config
