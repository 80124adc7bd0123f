// PyTorch checkpoints (torch.save's ZIP format): every dtype and view written by torch 1.x
// and 2.x against the same tensors as contiguous float32, ZIP64 archives, nested training
// checkpoints, parameters, pickle protocol 4, state-spaces checkpoint folders and sharded
// `pytorch_model.bin.index.json`; damaged and unsupported files are errors naming the file.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "ssm/io/checkpoint.hpp"
#include "ssm/io/torch_file.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;

namespace {

fs::path torch_dir() { return ssm::test::data_dir() / "torch"; }

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every tensor of `expected` is in `file` with the same shape and exactly the same values.
void check_same_tensors(const ssm::TorchFile& file, const ssm::SafetensorsFile& expected) {
    for (const auto& stored : expected.names()) {
        INFO(file.path().string() << ": " << stored);
        REQUIRE(file.contains(stored));
        const auto want = expected.load_f32(stored);
        const auto got = file.load_f32(stored);
        CHECK(std::vector<ssm::index>(got.shape().begin(), got.shape().end()) ==
              std::vector<ssm::index>(want.shape().begin(), want.shape().end()));
        const auto a = got.values(), b = want.values();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
}

}  // namespace

TEST_CASE("torch files: every dtype and view, from torch 1.x and 2.x writers and as ZIP64", "[torch]") {
    const auto expected = ssm::SafetensorsFile::open(torch_dir() / "tensors.expected.safetensors");
    for (const char* name : {"tensors-torch1.pt", "tensors-torch2.pt", "zip64.pt"}) {
        INFO(name);
        const auto f = ssm::TorchFile::open(torch_dir() / name);
        check_same_tensors(f, expected);
        CHECK(f.names().size() == expected.names().size() + 1);  // + the bool mask
        CHECK(f.info("bf16").dtype == ssm::DType::BF16);
        CHECK(f.info("f16").dtype == ssm::DType::F16);
        CHECK(f.info("i64").dtype == ssm::DType::I64);
        CHECK(f.info("mask").dtype == ssm::DType::Bool);
        CHECK(f.load_f32("base").is_view());         // contiguous float32: read in place
        CHECK_FALSE(f.load_f32("transposed").is_view());
        CHECK(f.load_f32("row").is_view());          // a storage offset is still contiguous
        CHECK(f.load_f32("scalar").rank() == 0);
        CHECK(f.load_f32("empty").size() == 0);
        const auto msg = ssm::test::error_of([&] { (void)f.load_f32("mask"); });
        CHECK(msg.find(name) != std::string::npos);
        CHECK(msg.find("'mask'") != std::string::npos);
        CHECK(msg.find("BOOL") != std::string::npos);
        CHECK(ssm::test::error_of([&] { (void)f.load_f32("absent"); }).find("'absent'") != std::string::npos);
    }
}

TEST_CASE("torch files: training checkpoints, parameters and pickle protocol 4", "[torch]") {
    const auto expected = ssm::SafetensorsFile::open(torch_dir() / "nested.expected.safetensors");
    // {"state_dict": {...}, "step": 7, "args": argparse.Namespace(...)}: the state dict is
    // found under its key; the other objects are never called, only skipped.
    const auto nested = ssm::TorchFile::open(torch_dir() / "nested.pt");
    CHECK(nested.names() == std::vector<std::string>{"encoder.bias", "encoder.weight"});
    for (const auto& n : nested.names()) {
        const auto a = nested.load_f32(n).values(), b = expected.load_f32(n).values();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
    const auto p4 = ssm::TorchFile::open(torch_dir() / "protocol4.pt");
    CHECK(p4.names() == nested.names());
    for (const auto& n : p4.names()) {
        const auto a = p4.load_f32(n).values(), b = nested.load_f32(n).values();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
    const auto params = ssm::TorchFile::open(torch_dir() / "parameters.pt");
    CHECK(params.names() == std::vector<std::string>{"b", "w"});
    for (const char* n : {"w", "b"}) {
        const auto a = params.load_f32(n).values();
        const auto b = expected.load_f32(std::string("param.") + n).values();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
    }
}

TEST_CASE("torch files: unsupported forms are errors that say what to do", "[torch]") {
    const auto expect = [](const fs::path& p, std::vector<std::string> needles) {
        INFO(p.string());
        const auto msg = ssm::test::error_of([&] { (void)ssm::TorchFile::open(p); });
        INFO(msg);
        CHECK(msg.find(p.string()) != std::string::npos);
        for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    };
    expect(torch_dir() / "deflated.pt", {"data.pkl", "compressed"});
    expect(torch_dir() / "big-endian.pt", {"big"});
    expect(torch_dir() / "legacy.pt", {"legacy", "re-save"});
    expect(torch_dir() / "tensors.expected.safetensors", {"not a PyTorch checkpoint"});
    expect(torch_dir() / "absent.pt", {"cannot open"});

    // A ZIP archive that torch.save did not write.
    const auto dir = ssm::test::scratch_dir("torch-bad");
    std::string zip = read_all(torch_dir() / "tensors-torch2.pt");
    for (std::size_t at = 0; (at = zip.find("data.pkl", at)) != std::string::npos; ++at) zip[at] = 'x';
    ssm::test::write_bytes(dir / "renamed.pt", zip);
    expect(dir / "renamed.pt", {"data.pkl"});
    fs::remove_all(dir);
}

TEST_CASE("torch files: every truncation and thousands of corruptions fail cleanly", "[torch]") {
    const std::string good = read_all(torch_dir() / "tensors-torch2.pt");
    const auto dir = ssm::test::scratch_dir("torch-damage");
    const auto path = dir / "damaged.pt";
    // Open, then read every tensor: either it works or it is an ssm::Error naming the file.
    const auto attempt = [&](const std::string& bytes) {
        ssm::test::write_bytes(path, bytes);
        try {
            const auto f = ssm::TorchFile::open(path);
            for (const auto& n : f.names()) {
                try {
                    (void)f.load_f32(n);
                } catch (const ssm::Error& e) {
                    CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
                }
            }
            return true;
        } catch (const ssm::Error& e) {
            CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
            return false;
        }
    };
    int opened = 0;
    for (std::size_t n = 0; n < good.size(); n += 7) opened += attempt(good.substr(0, n));
    CHECK(opened == 0);  // no strict prefix is a whole archive
    std::mt19937 rng(20261130);
    std::uniform_int_distribution<std::size_t> where(0, good.size() - 1);
    std::uniform_int_distribution<int> value(0, 255);
    for (int k = 0; k < 3000; ++k) {
        std::string bad = good;
        for (int j = 0; j < 1 + k % 3; ++j) bad[where(rng)] = static_cast<char>(value(rng));
        (void)attempt(bad);
    }
    CHECK(attempt(good));
    fs::remove_all(dir);
}

TEST_CASE("checkpoints: a state-spaces folder with pytorch_model.bin, and bin shards", "[torch][checkpoint]") {
    // The mambabyte-tiny weights as an original checkpoint: `backbone.embedding.weight`
    // and a tied lm_head saved once (both names share one storage).
    const auto torch_ckpt = ssm::Checkpoint::open(ssm::test::data_dir() / "mambabyte-tiny-torch");
    const auto hf = ssm::Checkpoint::open(ssm::test::data_dir() / "mambabyte-tiny");
    CHECK(torch_ckpt.resolve("backbone.embeddings.weight") == "backbone.embedding.weight");
    CHECK(torch_ckpt.file_of("lm_head.weight").filename() == "pytorch_model.bin");
    for (const auto& name : hf.names()) {
        INFO(name);
        const auto& info = hf.info(name);
        const auto a = torch_ckpt.load_f32(name, info.shape), b = hf.load_f32(name, info.shape);
        CHECK(std::equal(a.values().begin(), a.values().end(), b.values().begin(), b.values().end()));
    }
    const ssm::index vocab_by_d[] = {256, 48};
    const auto head = torch_ckpt.load_f32("lm_head.weight", vocab_by_d);
    const auto emb = torch_ckpt.load_f32("backbone.embeddings.weight", vocab_by_d);
    CHECK(head.data() == emb.data());  // one storage, read in place

    // Shards listed in pytorch_model.bin.index.json, and a head file added as an extra.
    const auto dir = ssm::test::scratch_dir("torch-shards");
    fs::copy_file(torch_dir() / "nested.pt", dir / "part-1.bin");
    fs::copy_file(torch_dir() / "protocol4.pt", dir / "part-2.bin");
    std::ofstream(dir / "pytorch_model.bin.index.json")
        << R"({"weight_map": {"encoder.weight": "part-1.bin", "encoder.bias": "part-2.bin"}})";
    auto sharded = ssm::Checkpoint::open(dir);
    CHECK(sharded.file_of("encoder.weight").filename() == "part-1.bin");
    CHECK(sharded.file_of("encoder.bias").filename() == "part-2.bin");
    sharded.add_extra(torch_dir() / "parameters.pt");
    const ssm::index two[] = {2};
    CHECK(sharded.load_f32("b", two).size() == 2);
    const auto msg = ssm::test::error_of([&] { sharded.add_extra(torch_dir() / "nested.pt"); });
    CHECK(msg.find("'encoder.bias' is already in") != std::string::npos);

    // A folder with both kinds is read from its safetensors.
    fs::remove(dir / "pytorch_model.bin.index.json");
    fs::copy_file(torch_dir() / "tensors.expected.safetensors", dir / "model.safetensors");
    fs::copy_file(torch_dir() / "nested.pt", dir / "pytorch_model.bin");
    CHECK(ssm::Checkpoint::open(dir).file_of("f32").filename() == "model.safetensors");
    fs::remove(dir / "model.safetensors");
    CHECK(ssm::Checkpoint::open(dir).file_of("encoder.weight").filename() == "pytorch_model.bin");
    fs::remove_all(dir);
}
