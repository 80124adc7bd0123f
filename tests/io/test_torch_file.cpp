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

namespace test_torch_file {

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

// A stored ZIP archive of `records` (name, bytes), as torch.save lays one out.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& records) {
    const auto le = [](std::string& out, std::uint64_t v, int n) {
        for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
    };
    std::string out, central;
    for (const auto& [name, data] : records) {
        const std::size_t offset = out.size();
        le(out, 0x04034b50, 4), le(out, 20, 2), le(out, 0, 2), le(out, 0, 2), le(out, 0, 4), le(out, 0, 4);
        le(out, data.size(), 4), le(out, data.size(), 4), le(out, name.size(), 2), le(out, 0, 2);
        out += name + data;
        le(central, 0x02014b50, 4), le(central, 20, 2), le(central, 20, 2), le(central, 0, 2), le(central, 0, 2);
        le(central, 0, 4), le(central, 0, 4), le(central, data.size(), 4), le(central, data.size(), 4);
        le(central, name.size(), 2), le(central, 0, 2), le(central, 0, 2), le(central, 0, 2), le(central, 0, 2);
        le(central, 0, 4), le(central, offset, 4);
        central += name;
    }
    const std::size_t dir_offset = out.size();
    out += central;
    le(out, 0x06054b50, 4), le(out, 0, 2), le(out, 0, 2), le(out, records.size(), 2), le(out, records.size(), 2);
    le(out, central.size(), 4), le(out, dir_offset, 4), le(out, 0, 2);
    return out;
}

// A pickle string op: BINUNICODE with its 4-byte length.
std::string unicode(const std::string& s) {
    std::string out = "X";
    for (int i = 0; i < 4; ++i) out += static_cast<char>((s.size() >> (8 * i)) & 0xff);
    return out + s;
}

}  // namespace

TEST_CASE("torch files: hand-made pickles: cycles, deep nesting, unknown objects and opcodes", "[torch]") {
    using namespace std::string_literals;  // the pickles hold NUL bytes
    const auto dir = ssm::test::scratch_dir("torch-pickles");
    const auto open_pickle = [&](const std::string& pickle, const std::string& tag) {
        const auto path = dir / (tag + ".pt");
        ssm::test::write_bytes(path, make_zip({{"archive/data.pkl", pickle},
                                               {"archive/data/0", std::string(16, '\0')}}));
        return ssm::test::error_of([&] { (void)ssm::TorchFile::open(path); });
    };
    const std::string proto = "\x80\x02";
    // A float storage of 4 elements (key "0") and a tensor [2, 2] over it.
    const std::string storage = "(" + unicode("storage") + "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") +
                                "K\x04tQ";
    const std::string tensor = "ctorch._utils\n_rebuild_tensor_v2\n(" + storage + "K\x00K\x02K\x02\x86K\x02K\x01\x86\x89tR"s;

    // A dict holding a tensor and things no state dict needs: an unknown class called,
    // instantiated and given state, which are kept inert (never run).
    const std::string odd = "cos\nsystem\n(" + unicode("echo no") + "tR" + unicode("y") + "cbuiltins\nobject\n)\x81}b";
    const auto path = dir / "odd.pt";
    ssm::test::write_bytes(path, make_zip({{"archive/data.pkl", proto + "}(" + unicode("w") + tensor + unicode("x") +
                                                                    odd + "u."},
                                           {"archive/data/0", std::string(16, '\0')}}));
    const auto f = ssm::TorchFile::open(path);
    CHECK(f.names() == std::vector<std::string>{"w"});
    CHECK(f.load_f32("w").size() == 4);

    // A list that holds itself, and 200000 nested lists: released without a leak or a
    // deep recursion; neither is a dict of tensors.
    CHECK(open_pickle(proto + "}" + unicode("k") + "]q\x01h\x01" "as.", "cycle").find("no dict of tensors") !=
          std::string::npos);
    CHECK(open_pickle(proto + "}" + unicode("k") + std::string(200000, ']') + std::string(199999, 'a') + "s.", "deep")
              .find("no dict of tensors") != std::string::npos);
    // Malformed pickles name the byte.
    CHECK(open_pickle(proto + "}\xff.", "opcode").find("opcode 0xff") != std::string::npos);
    CHECK(open_pickle(proto + "a.", "underflow").find("underflow") != std::string::npos);
    CHECK(open_pickle(proto + "}}.", "stop").find("STOP with 2 values") != std::string::npos);
    CHECK(open_pickle(proto + "h\x07.", "memo").find("memo entry 7") != std::string::npos);
    CHECK(open_pickle(proto + "}" + unicode("k"), "early").find("ends early") != std::string::npos);
    // Tensors that reach outside their storage, or storages that do not match their record.
    const std::string big = "ctorch._utils\n_rebuild_tensor_v2\n(" + storage + "K\x01K\x02K\x02\x86K\x02K\x01\x86\x89tR";
    CHECK(open_pickle(proto + "}" + unicode("w") + big + "s.", "reach").find("reaches element 4") != std::string::npos);
    std::string wrong = storage;
    wrong.replace(wrong.find("K\x04"), 2, "K\x05");
    const std::string short_storage = "ctorch._utils\n_rebuild_tensor_v2\n(" + wrong + "K\x00K\x02\x85K\x01\x85\x89tR"s;
    CHECK(open_pickle(proto + "}" + unicode("w") + short_storage + "s.", "numel").find("holds 16 bytes") !=
          std::string::npos);
    fs::remove_all(dir);
}

// Regressions for views whose sizes the file cannot back, and for a pickle that recursed
// once per nesting level:
// - zero strides with huge sizes passed the bounds check (it bounds only the last element
//   reached) and load_f32 then threw std::length_error / std::bad_alloc;
// - a shape (2^62, 2^62, 0) was accepted because dimensions after a zero were not checked;
// - 1,000,000 nested `_rebuild_from_type_v2` calls overflowed the stack (SIGSEGV).
TEST_CASE("torch files: views the file cannot back and deeply nested rebuild calls are refused", "[torch]") {
    using namespace std::string_literals;
    const auto dir = ssm::test::scratch_dir("torch-views");
    const auto open_pickle = [&](const std::string& pickle, const std::string& tag) {
        const auto path = dir / (tag + ".pt");
        ssm::test::write_bytes(path, make_zip({{"archive/data.pkl", pickle},
                                               {"archive/data/0", std::string(16, '\0')}}));
        const auto msg = ssm::test::error_of([&] {
            const auto f = ssm::TorchFile::open(path);
            for (const auto& n : f.names()) (void)f.load_f32(n);
        });
        CHECK(msg.find(path.string()) != std::string::npos);
        return msg;
    };
    const std::string proto = "\x80\x02";
    const std::string storage = "(" + unicode("storage") + "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") +
                                "K\x04tQ";
    const auto tensor = [&](const std::string& size, const std::string& stride) {
        return "}" + unicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + storage + "K\x00"s + size + stride +
               "\x89tRs.";
    };
    const std::string big = "J\x00\x00\x10\x00"s;                        // 2^20
    const std::string huge = "\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40"s;  // 2^62
    // 2^40 elements gathered from a 4-element storage through zero strides.
    const auto zero_strides = open_pickle(proto + tensor("(" + big + big + "t", "(K\x00K\x00t"s), "zero-strides");
    CHECK(zero_strides.find("'w'") != std::string::npos);
    CHECK(zero_strides.find("1099511627776 elements") != std::string::npos);
    // Sizes whose product overflows once the zero is skipped.
    const auto after_zero = open_pickle(proto + tensor("(" + huge + huge + "K\x00t"s, "(K\x01K\x01K\x01t"s), "after-zero");
    CHECK(after_zero.find("'w'") != std::string::npos);
    CHECK(after_zero.find("too large") != std::string::npos);

    // _rebuild_from_type_v2(func, type, args, state) whose args call it again, n deep:
    // built bottom-up through the memo, so the pickle's own stack stays small.
    const auto nested = [&](int n) {
        std::string p = proto + "}" + unicode("w") + "ctorch._tensor\n_rebuild_from_type_v2\nq\x01" + "0" +
                        "(cbuiltins\nobject\nN)Nt";
        for (int i = 0; i < n; ++i) p += "q\x02" "0(h\x01Nh\x02Nt";
        return p + "q\x02" "0h\x01h\x02Rs.";  // the outermost call: G(*T)
    };
    CHECK(open_pickle(nested(100), "nested-100").find("_rebuild_from_type_v2 calls are nested more than 64 deep") !=
          std::string::npos);
    // 1,000,000 deep (the stack overflow found): refused, whichever bound it meets first.
    (void)open_pickle(nested(1000000), "nested-1000000");

    // The memo and the number of values a pickle makes are bounded (a value costs a few
    // hundred bytes, made from one or two bytes of pickle).
    const auto memo = open_pickle(proto + "}N" + std::string((1u << 20) + 1, '\x94') + "0.", "memo");
    CHECK(memo.find("memo exceeds") != std::string::npos);
    std::string many = proto + "}" + unicode("k") + "]";
    for (int i = 0; i <= (1 << 20); ++i) many += "Na";
    CHECK(open_pickle(many + "s.", "values").find("values") != std::string::npos);
    fs::remove_all(dir);
}

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

}  // namespace test_torch_file
