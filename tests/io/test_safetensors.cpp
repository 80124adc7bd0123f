// safetensors: reading the bundled checkpoints (zero-copy F32, BF16 conversion, I64),
// write → read round trips, atomic writes, and every malformed file rejected with an
// error naming the file and the tensor.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "ssm/io/safetensors.hpp"
#include "test_util.hpp"

namespace test_safetensors {

namespace fs = std::filesystem;

namespace {

/// A file made of an 8-byte length, `header` as given, and `data_bytes` zero bytes.
std::string raw_file(const std::string& header, std::size_t data_bytes, std::uint64_t length_override = 0) {
    std::string out(8, '\0');
    const std::uint64_t n = length_override ? length_override : header.size();
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + std::string(data_bytes, '\0');
}

std::string error_opening(const fs::path& p) {
    return ssm::test::error_of([&] { (void)ssm::SafetensorsFile::open(p); });
}

}  // namespace

TEST_CASE("reads the bundled F32 checkpoint without copying", "[safetensors]") {
    const auto f = ssm::SafetensorsFile::open(ssm::test::data_dir() / "mamba-tiny" / "model.safetensors");
    CHECK(f.contains("backbone.embeddings.weight"));
    CHECK(f.metadata().at("format") == "pt");
    const auto& info = f.info("backbone.layers.0.mixer.A_log");
    CHECK(info.dtype == ssm::DType::F32);
    CHECK(info.shape == std::vector<ssm::index>{128, 16});
    const ssm::Tensor t = f.load_f32("backbone.layers.0.mixer.A_log");
    CHECK(t.is_view());
    CHECK(reinterpret_cast<const void*>(t.data()) == reinterpret_cast<const void*>(f.bytes("backbone.layers.0.mixer.A_log").data()));
    CHECK(t.size() == 128 * 16);
    const auto names = f.names();
    CHECK(std::is_sorted(names.begin(), names.end()));
    CHECK(names.size() == 32);
}

TEST_CASE("converts BF16 to float exactly and reads I64 ids", "[safetensors]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny-bf16-sharded";
    const auto f = ssm::SafetensorsFile::open(dir / "model-00001-of-00004.safetensors");
    const auto& info = f.info("backbone.embeddings.weight");
    REQUIRE(info.dtype == ssm::DType::BF16);
    const ssm::Tensor t = f.load_f32("backbone.embeddings.weight");
    CHECK_FALSE(t.is_view());
    const auto raw = f.bytes("backbone.embeddings.weight");
    for (std::size_t i = 0; i < static_cast<std::size_t>(t.size()); i += 97) {
        std::uint16_t bits;
        std::memcpy(&bits, raw.data() + 2 * i, 2);
        std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
        float expect;
        std::memcpy(&expect, &wide, 4);
        REQUIRE(t.data()[i] == expect);
    }
    const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
    CHECK(ref.load_i64("seq0.input_ids").size() == 9);
    CHECK(ssm::test::error_of([&] { (void)ref.load_i64("seq0.logits"); }).find("seq0.logits") != std::string::npos);
}

TEST_CASE("write then read round-trips F32, BF16, F16, I64 and metadata", "[safetensors]") {
    const auto dir = ssm::test::scratch_dir("st-roundtrip");
    const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, 1e-3f, 7.0f};
    const std::vector<std::uint16_t> bf16 = {ssm::f32_to_bf16(1.0f), ssm::f32_to_bf16(-0.5f)};
    const std::vector<std::uint16_t> f16 = {ssm::f32_to_f16(2.0f), ssm::f32_to_f16(0.125f), ssm::f32_to_f16(-3.0f)};
    const std::vector<std::int64_t> i64 = {1, -2, 1LL << 40};
    const std::vector<ssm::TensorToWrite> tensors = {
        ssm::f32_tensor("a.weight", {2, 3}, f32),
        {"b", ssm::DType::BF16, {2}, std::as_bytes(std::span(bf16))},
        {"c", ssm::DType::F16, {3, 1}, std::as_bytes(std::span(f16))},
        {"ids", ssm::DType::I64, {3}, std::as_bytes(std::span(i64))},
        {"empty", ssm::DType::F32, {0, 4}, {}},
    };
    const auto path = dir / "out.safetensors";
    ssm::write_safetensors(path, tensors, {{"format", "pt"}});
    const auto f = ssm::SafetensorsFile::open(path);
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.load_f32("a.weight").values()[1] == -2.25f);
    CHECK(f.load_f32("a.weight").is_view());
    CHECK(f.load_f32("b").values()[1] == -0.5f);
    CHECK(f.load_f32("c").values()[2] == -3.0f);
    CHECK(f.load_i64("ids") == i64);
    CHECK(f.info("empty").shape == std::vector<ssm::index>{0, 4});
    // Data starts 8-byte aligned.
    CHECK(reinterpret_cast<std::uintptr_t>(f.bytes("a.weight").data()) % 8 == 0);
    // Only the file itself is left in the folder.
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
    fs::remove_all(dir);
}

TEST_CASE("writes are atomic: an existing file is replaced whole, a failed write leaves nothing", "[safetensors]") {
    const auto dir = ssm::test::scratch_dir("st-atomic");
    const auto path = dir / "x.safetensors";
    const std::vector<float> v1 = {1, 2, 3}, v2 = {4, 5};
    ssm::write_safetensors(path, std::vector{ssm::f32_tensor("v", {3}, v1)});
    ssm::write_safetensors(path, std::vector{ssm::f32_tensor("v", {2}, v2)});
    CHECK(ssm::SafetensorsFile::open(path).load_f32("v").values()[1] == 5.0f);
    // A size mismatch is refused before anything is written.
    const auto bad = dir / "bad.safetensors";
    const auto msg = ssm::test::error_of([&] {
        ssm::write_safetensors(bad, std::vector{ssm::TensorToWrite{"w", ssm::DType::F32, {4}, std::as_bytes(std::span(v1))}});
    });
    CHECK(msg.find("'w'") != std::string::npos);
    CHECK(ssm::test::error_of([&] {
              ssm::write_safetensors(bad, std::vector{ssm::f32_tensor("d", {3}, v1), ssm::f32_tensor("d", {3}, v1)});
          }).find("twice") != std::string::npos);
    // A folder that does not exist.
    const auto nowhere = dir / "no" / "such" / "dir" / "f.safetensors";
    CHECK(ssm::test::error_of([&] { ssm::write_safetensors(nowhere, std::vector{ssm::f32_tensor("v", {3}, v1)}); })
              .find(nowhere.string()) != std::string::npos);
    CHECK_FALSE(fs::exists(bad));
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
    fs::remove_all(dir);
}

// Regression: an element count below the 2^62 cap whose byte size wraps to 0 in 64 bits
// ([2^62] F32, [2^61] F64) passed as a 0-byte tensor, and load_f32 returned a view of 2^62
// floats over nothing; dimensions after a zero were not checked at all.
TEST_CASE("shapes whose byte size wraps in 64 bits are refused", "[safetensors]") {
    const auto dir = ssm::test::scratch_dir("st-wrap");
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"f32", R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})"},
        {"f64", R"({"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}})"},
        {"i64", R"({"w": {"dtype": "I64", "shape": [2, 1152921504606846976], "data_offsets": [0, 0]}})"},
        {"after_zero", R"({"w": {"dtype": "F32", "shape": [0, 4611686018427387904, 4611686018427387904], "data_offsets": [0, 0]}})"},
        {"before_zero", R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904, 0], "data_offsets": [0, 0]}})"},
    };
    for (const auto& [tag, header] : cases) {
        const auto p = dir / (tag + ".safetensors");
        ssm::test::write_bytes(p, raw_file(header, 0));
        const auto msg = error_opening(p);
        INFO(tag << ": " << msg);
        CHECK(msg.find(p.string()) != std::string::npos);
        CHECK(msg.find("'w'") != std::string::npos);
        CHECK(msg.find("too large") != std::string::npos);
    }
    fs::remove_all(dir);
}

TEST_CASE("malformed files are rejected with the file and tensor named", "[safetensors]") {
    const auto dir = ssm::test::scratch_dir("st-bad");
    const auto write = [&](const std::string& name, const std::string& bytes) {
        const auto p = dir / name;
        ssm::test::write_bytes(p, bytes);
        return p;
    };
    struct Case {
        const char* file;
        std::string bytes;
        std::vector<std::string> needles;
    };
    const std::string ok_entry = R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
    const std::vector<Case> cases = {
        {"short.safetensors", std::string(5, '\0'), {"too short"}},
        {"past_end.safetensors", raw_file("{}", 0, 1000), {"past the end"}},
        {"huge_header.safetensors", raw_file("{}", 0, std::uint64_t{1} << 40), {"exceeds the limit"}},
        {"not_json.safetensors", raw_file("{not json", 0), {"not valid JSON"}},
        {"not_object.safetensors", raw_file("[1, 2]", 0), {"not a JSON object"}},
        {"dtype.safetensors", raw_file(R"({"w": {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}})", 2),
         {"'w'", "unknown dtype", "F8_E9"}},
        {"outside.safetensors", raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4),
         {"'w'", "outside the data region"}},
        {"size.safetensors", raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
         {"'w'", "needs 12"}},
        {"reversed.safetensors", raw_file(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", 8),
         {"'w'", "begin"}},
        {"overlap.safetensors",
         raw_file("{" + ok_entry + R"(, "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
         {"'w'", "'v'", "overlap"}},
        {"negative.safetensors", raw_file(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8),
         {"'w'", "negative"}},
        {"no_offsets.safetensors", raw_file(R"({"w": {"dtype": "F32", "shape": [2]}})", 8), {"'w'", "data_offsets"}},
        {"metadata.safetensors", raw_file(R"({"__metadata__": {"a": 1}})", 0), {"__metadata__"}},
    };
    for (const auto& c : cases) {
        const auto p = write(c.file, c.bytes);
        const auto msg = error_opening(p);
        INFO(c.file << ": " << msg);
        CHECK(msg.find(p.string()) != std::string::npos);
        for (const auto& n : c.needles) CHECK(msg.find(n) != std::string::npos);
    }
    CHECK(error_opening(dir / "missing.safetensors").find("missing.safetensors") != std::string::npos);
    // A real checkpoint cut in half.
    std::ifstream in(ssm::test::data_dir() / "mamba-tiny" / "model.safetensors", std::ios::binary);
    const std::string full((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto cut = write("cut.safetensors", full.substr(0, full.size() / 2));
    CHECK(error_opening(cut).find("outside the data region") != std::string::npos);
    const auto tiny = write("cut_header.safetensors", full.substr(0, 100));
    CHECK(error_opening(tiny).find("past the end") != std::string::npos);
    // Empty tensors take no bytes: one may sit at the offset where another begins.
    const auto with_empty = write("empty_at_start.safetensors",
                                  raw_file("{" + ok_entry + R"(, "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}})", 8));
    CHECK(ssm::SafetensorsFile::open(with_empty).load_f32("e").size() == 0);
    // A valid file: asking for an absent tensor names it.
    const auto good = write("good.safetensors", raw_file("{" + ok_entry + "}", 8));
    CHECK(ssm::test::error_of([&] { (void)ssm::SafetensorsFile::open(good).info("nope"); }).find("'nope'") !=
          std::string::npos);
    fs::remove_all(dir);
}

}  // namespace test_safetensors
