// The model family a config.json describes: read from `model_type`, `architectures` or
// `ssm_cfg.layer`; families the library does not implement refused by name at load;
// Mamba-2 configs in both forms, with `Infinity` written either way Python writes it.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "ssm/io/config.hpp"
#include "test_util.hpp"

namespace test_config_family {

namespace fs = std::filesystem;

namespace {

fs::path write_config(const std::string& tag, const std::string& text) {
    const auto dir = ssm::test::scratch_dir(tag);
    std::ofstream(dir / "config.json") << text;
    return dir;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const char* kSizes = R"("vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2)";

}  // namespace

TEST_CASE("config family: model_type and architectures decide it", "[config_family]") {
    struct Case {
        std::string keys;
        ssm::ModelFamily family;
    };
    const Case cases[] = {
        {R"("model_type": "mamba")", ssm::ModelFamily::Mamba1},
        {R"("model_type": "falcon_mamba")", ssm::ModelFamily::FalconMamba},
        {R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 1)", ssm::ModelFamily::Mamba2},
        {R"("architectures": ["FalconMambaForCausalLM"])", ssm::ModelFamily::FalconMamba},
        {R"("architectures": ["Mamba2ForCausalLM"], "num_heads": 4, "head_dim": 16, "n_groups": 2)",
         ssm::ModelFamily::Mamba2},
        {R"("architectures": ["MambaForCausalLM"])", ssm::ModelFamily::Mamba1},
        {R"("use_bias": false)", ssm::ModelFamily::Mamba1},  // names no family: Mamba-1, as before
    };
    for (const auto& c : cases) {
        INFO(c.keys);
        const auto dir = write_config("family", std::string("{") + kSizes + ", " + c.keys + "}");
        const auto config = ssm::MambaConfig::load(dir);
        CHECK(config.family == c.family);
        fs::remove_all(dir);
    }
    // The bundled checkpoints.
    CHECK(ssm::MambaConfig::load(ssm::test::data_dir() / "mamba-tiny").family == ssm::ModelFamily::Mamba1);
    CHECK(ssm::MambaConfig::load(ssm::test::data_dir() / "mambabyte-tiny-torch").family == ssm::ModelFamily::Mamba1);
    CHECK(ssm::MambaConfig::load(ssm::test::data_dir() / "samba-tiny").family == ssm::ModelFamily::Samba);
}

TEST_CASE("config family: an unsupported family fails at load with its name and the supported list",
          "[config_family]") {
    for (const std::string keys : {R"("model_type": "jamba")", R"("model_type": "bamba")",
                                   R"("model_type": "no-such-model")", R"("architectures": ["JambaForCausalLM"])"}) {
        INFO(keys);
        const auto dir = write_config("family-bad", std::string("{") + kSizes + ", " + keys + "}");
        const std::string e = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); });
        CHECK(has(e, "config.json"));
        CHECK((has(e, "\"jamba\"") || has(e, "\"bamba\"") || has(e, "\"no-such-model\"") ||
               has(e, "\"JambaForCausalLM\"")));
        CHECK(has(e, "supported: mamba, mamba2, falcon_mamba"));
        CHECK(e.find('\n') == std::string::npos);
        fs::remove_all(dir);
    }
    const auto layer = write_config("family-layer", R"({"d_model": 32, "n_layer": 2, "vocab_size": 100,
                                                      "ssm_cfg": {"layer": "Mamba3"}})");
    CHECK(has(ssm::test::error_of([&] { (void)ssm::MambaConfig::load(layer); }), "\"Mamba3\""));
    fs::remove_all(layer);
    const auto hybrid = write_config("family-hybrid", R"({"d_model": 32, "n_layer": 2, "vocab_size": 100,
                                                       "attn_layer_idx": [1], "ssm_cfg": {"layer": "Mamba2"}})");
    CHECK(has(ssm::test::error_of([&] { (void)ssm::MambaConfig::load(hybrid); }), "attn_layer_idx"));
    fs::remove_all(hybrid);
    // Blocks with an MLP (mamba_ssm's d_intermediate > 0) would load without it: refused.
    const auto mlp = write_config("family-mlp", R"({"d_model": 32, "d_intermediate": 64, "n_layer": 2,
                                                   "vocab_size": 100, "ssm_cfg": {"layer": "Mamba1"}})");
    const std::string e = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(mlp); });
    CHECK(has(e, "d_intermediate"));
    CHECK(has(e, "config.json"));
    fs::remove_all(mlp);
}

TEST_CASE("config family: the bundled Mamba-2 and Falcon-Mamba checkpoints are not read as Mamba-1",
          "[config_family]") {
    const auto f = ssm::MambaConfig::load(ssm::test::data_dir() / "falcon-mamba-tiny");
    CHECK(f.family == ssm::ModelFamily::FalconMamba);
    CHECK(f.mixer_rms_eps == 1e-6);
    CHECK(f.time_step_rank == 3);

    const auto m = ssm::MambaConfig::load(ssm::test::data_dir() / "mamba2-tiny");
    CHECK(m.family == ssm::ModelFamily::Mamba2);
    CHECK(m.hidden_size == 32);
    CHECK(m.intermediate_size == 64);
    CHECK(m.state_size == 16);
    CHECK(m.mamba2.num_heads == 4);
    CHECK(m.mamba2.head_dim == 16);
    CHECK(m.mamba2.n_groups == 1);
    CHECK(m.mamba2.ssm_size == 64);
    CHECK(m.mamba2.chunk_size == 16);
    CHECK(m.mamba2.dt_min == 0.0);
    CHECK(std::isinf(m.mamba2.dt_max));  // written as {"__float__": "Infinity"}
    CHECK(m.tie_word_embeddings);

    const auto l = ssm::MambaConfig::load(ssm::test::data_dir() / "mamba2-tiny-long");
    CHECK(l.mamba2.dt_min == 0.004);
    CHECK(l.mamba2.dt_max == 0.05);
    CHECK(l.use_bias);
    CHECK_FALSE(l.use_conv_bias);
    CHECK_FALSE(l.tie_word_embeddings);
}

TEST_CASE("config family: Mamba-2 in the original mamba_ssm form, with a bare Infinity", "[config_family]") {
    // As state-spaces/mamba2-130m's config.json, with d_ssm and the dt_limit Python's json writes.
    const auto dir = write_config("mamba2-original", R"({"d_model": 768, "d_intermediate": 0, "n_layer": 24,
        "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2", "d_ssm": 1024, "ngroups": 2,
        "dt_limit": [0.0, Infinity], "chunk_size": 128}, "attn_layer_idx": [], "attn_cfg": {},
        "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 16,
        "tie_embeddings": true, "note": "Infinity in a string stays a string"})");
    const auto c = ssm::MambaConfig::load(dir);
    CHECK(c.family == ssm::ModelFamily::Mamba2);
    CHECK(c.vocab_size == 50288);
    CHECK(c.state_size == 128);  // mamba_ssm's Mamba2 default
    CHECK(c.intermediate_size == 1536);
    CHECK(c.mamba2.ssm_size == 1024);
    CHECK(c.mamba2.head_dim == 64);
    CHECK(c.mamba2.num_heads == 16);
    CHECK(c.mamba2.n_groups == 2);
    CHECK(c.mamba2.chunk_size == 128);
    CHECK(std::isinf(c.mamba2.dt_max));
    CHECK(c.mamba2.norm_epsilon == 1e-5);
    CHECK(c.tie_word_embeddings);
    fs::remove_all(dir);
}

TEST_CASE("config family: inconsistent Mamba-2 configs are refused with the file named", "[config_family]") {
    const std::string bad[] = {
        R"("model_type": "mamba2", "num_heads": 3, "head_dim": 16)",                    // 48 != 64
        R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 3)",     // 4 heads, 3 groups
        R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 1, "time_step_limit": [0.1, 0.01])",
        R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 1, "time_step_limit": "big")",
        R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 1, "chunk_size": 0)",
        R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 1, "state_size": 4611686018427387904)",
        R"("model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 4611686018427387904)",
        R"("model_type": 7)",
        R"("model_type": "falcon_mamba", "mixer_rms_eps": -1)",
    };
    for (const auto& keys : bad) {
        INFO(keys);
        const auto dir = write_config("mamba2-bad", std::string("{") + kSizes + ", " + keys + "}");
        CHECK(has(ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir); }), "config.json"));
        fs::remove_all(dir);
    }
}

}  // namespace test_config_family
