// Checkpoints: single file, folder, shards with an index; name aliases; shape checks;
// missing tensors, broken indexes and missing shards named in the error.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ssm/io/checkpoint.hpp"
#include "test_util.hpp"

namespace test_checkpoint {

namespace fs = std::filesystem;

TEST_CASE("opens a folder, a single file, and a sharded BF16 checkpoint", "[checkpoint]") {
    const auto tiny = ssm::test::data_dir() / "mamba-tiny";
    const auto folder = ssm::Checkpoint::open(tiny);
    const auto file = ssm::Checkpoint::open(tiny / "model.safetensors");
    CHECK(folder.names() == file.names());
    const ssm::index shape[] = {1000, 64};
    CHECK(folder.load_f32("backbone.embeddings.weight", shape).is_view());

    const auto sharded = ssm::Checkpoint::open(ssm::test::data_dir() / "mamba-tiny-bf16-sharded");
    CHECK(sharded.names().size() == 23);
    CHECK(sharded.file_of("lm_head.weight").filename() == "model-00003-of-00004.safetensors");
    CHECK(sharded.info("backbone.norm_f.weight").dtype == ssm::DType::BF16);
    const ssm::index head[] = {500, 32};
    CHECK(sharded.load_f32("lm_head.weight", head).size() == 500 * 32);
}

TEST_CASE("aliases: lit-gpt (SAMBA) names resolve to canonical ones", "[checkpoint]") {
    const auto has = [](const std::string& canonical, const std::string& stored) {
        const auto a = ssm::checkpoint_aliases(canonical);
        return std::find(a.begin(), a.end(), stored) != a.end();
    };
    const std::pair<const char*, const char*> pairs[] = {
        {"backbone.embeddings.weight", "transformer.wte.weight"},
        {"backbone.norm_f.weight", "transformer.ln_f.weight"},
        {"backbone.layers.11.norm.weight", "transformer.h.11.norm_1.weight"},
        {"backbone.layers.3.mlp_norm.weight", "transformer.h.3.norm_2.weight"},
        {"backbone.layers.0.mixer.A_log", "transformer.h.0.attn.A_log"},
        {"backbone.layers.0.mixer.conv1d.bias", "transformer.h.0.attn.conv1d.bias"},
        {"backbone.layers.1.mixer.qkv_proj.weight", "transformer.h.1.attn.attn.weight"},
        {"backbone.layers.1.mixer.o_proj.weight", "transformer.h.1.attn.proj.weight"},
        {"backbone.layers.2.mlp.gate_proj.weight", "transformer.h.2.mlp.swiglu.w1.weight"},
        {"backbone.layers.2.mlp.up_proj.weight", "transformer.h.2.mlp.fc_2.weight"},
        {"backbone.layers.2.mlp.down_proj.weight", "transformer.h.2.mlp.swiglu.w3.weight"}};
    for (const auto& [canonical, stored] : pairs) {
        INFO(canonical << " as " << stored);
        CHECK(has(canonical, stored));
    }
    CHECK_FALSE(has("backbone.layers.2.mlp.down_proj.weight", "transformer.h.2.mlp.swiglu.w1.weight"));
    CHECK_FALSE(has("lm_head.weight", "transformer.wte.weight"));
}

TEST_CASE("aliases: original state-spaces and prefix-less names resolve to canonical ones", "[checkpoint]") {
    const auto aliases = ssm::checkpoint_aliases("backbone.embeddings.weight");
    CHECK(std::find(aliases.begin(), aliases.end(), "backbone.embedding.weight") != aliases.end());
    CHECK(std::find(aliases.begin(), aliases.end(), "embeddings.weight") != aliases.end());
    const auto dir = ssm::test::scratch_dir("ckpt-alias");
    const std::vector<float> v(6, 1.0f), w(2, 2.0f);
    ssm::write_safetensors(dir / "model.safetensors",
                           std::vector{ssm::f32_tensor("backbone.embedding.weight", {3, 2}, v),
                                       ssm::f32_tensor("norm_f.weight", {2}, w)});
    const auto c = ssm::Checkpoint::open(dir);
    CHECK(c.resolve("backbone.embeddings.weight") == "backbone.embedding.weight");
    CHECK(c.resolve("backbone.norm_f.weight") == "norm_f.weight");
    const ssm::index shape[] = {2};
    CHECK(c.load_f32("backbone.norm_f.weight", shape).values()[0] == 2.0f);
    CHECK_FALSE(c.resolve("lm_head.weight"));
    fs::remove_all(dir);
}

TEST_CASE("shape mismatches and missing tensors name the file, tensor and expectation", "[checkpoint]") {
    const auto tiny = ssm::test::data_dir() / "mamba-tiny";
    const auto c = ssm::Checkpoint::open(tiny);
    const ssm::index wrong[] = {1000, 65};
    auto msg = ssm::test::error_of([&] { (void)c.load_f32("backbone.embeddings.weight", wrong); });
    CHECK(msg.find("model.safetensors") != std::string::npos);
    CHECK(msg.find("backbone.embeddings.weight") != std::string::npos);
    CHECK(msg.find("[1000, 65]") != std::string::npos);
    CHECK(msg.find("[1000, 64]") != std::string::npos);
    const ssm::index any[] = {1};
    msg = ssm::test::error_of([&] { (void)c.load_f32("backbone.layers.7.norm.weight", any); });
    CHECK(msg.find(tiny.string()) != std::string::npos);
    CHECK(msg.find("backbone.layers.7.norm.weight") != std::string::npos);
    CHECK(msg.find("missing") != std::string::npos);
}

TEST_CASE("broken folders, indexes and shards are errors naming what is wrong", "[checkpoint]") {
    const auto src = ssm::test::data_dir() / "mamba-tiny-bf16-sharded";
    const auto dir = ssm::test::scratch_dir("ckpt-bad");
    const auto expect = [&](const fs::path& p, const std::string& needle) {
        const auto msg = ssm::test::error_of([&] { (void)ssm::Checkpoint::open(p); });
        INFO(msg);
        CHECK(msg.find(needle) != std::string::npos);
    };
    expect(dir / "absent", "absent");
    expect(dir, "no model.safetensors");
    std::ofstream(dir / "pytorch_model.bin") << "x";
    expect(dir, "pytorch_model.bin: not a PyTorch checkpoint");
    fs::remove(dir / "pytorch_model.bin");

    for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dir / e.path().filename());
    CHECK_NOTHROW(ssm::Checkpoint::open(dir));
    fs::remove(dir / "model-00003-of-00004.safetensors");
    expect(dir, "model-00003-of-00004.safetensors");
    fs::copy_file(src / "model-00003-of-00004.safetensors", dir / "model-00003-of-00004.safetensors");

    std::ofstream(dir / "model.safetensors.index.json") << "{\"weight_map\": ";
    expect(dir, "invalid JSON");
    std::ofstream(dir / "model.safetensors.index.json") << R"({"metadata": {}})";
    expect(dir, "weight_map");
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map": {"lm_head.weight": "model-00001-of-00004.safetensors"}})";
    expect(dir, "lm_head.weight");
    std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"x": "../escape.safetensors"}})";
    expect(dir, "not a file in the folder");
    // A shard name longer than the file system allows: an ssm::Error naming it, not a
    // std::filesystem exception (found by fuzz_safetensors_index).
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map": {"x": ")" << std::string(400, 'y') << R"(.safetensors"}})";
    expect(dir, "does not exist");
    // Regression: a shard (or index) that is a named pipe blocked forever in the read that
    // sniffs a file's format, before the mapping's regular-file check could refuse it.
    fs::remove(dir / "model-00002-of-00004.safetensors");
    REQUIRE(::mkfifo((dir / "model-00002-of-00004.safetensors").c_str(), 0600) == 0);
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map": {"lm_head.weight": "model-00002-of-00004.safetensors"}})";
    expect(dir, "model-00002-of-00004.safetensors: not a regular file");
    expect(dir / "model-00002-of-00004.safetensors", "model-00002-of-00004.safetensors: not a regular file");
    fs::remove(dir / "model.safetensors.index.json");
    REQUIRE(::mkfifo((dir / "model.safetensors.index.json").c_str(), 0600) == 0);
    expect(dir, "model.safetensors.index.json: not a regular file");
    fs::remove_all(dir);
}

}  // namespace test_checkpoint
