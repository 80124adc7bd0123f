// ssm-forward end to end: on every bundled reference checkpoint its output file matches
// the transformers logits and final hidden states; bad input gives one line and exit != 0.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "ssm/ssm.hpp"
#include "run_program.hpp"
#include "test_util.hpp"

namespace {

using Run = ssm::test::ProgramRun;

Run run(const std::string& args) { return ssm::test::run_program(SSM_FORWARD_EXE, args); }

}  // namespace

TEST_CASE("ssm-forward writes logits and last_hidden_state matching transformers", "[ssm-forward]") {
    const auto scratch = ssm::test::scratch_dir("forward");
    struct Case {
        const char* folder;
        int nseq;
        const char* reference_folder;
    };
    // mambabyte-tiny-torch: the same weights as a state-spaces pytorch_model.bin checkpoint.
    const Case cases[] = {{"mamba-tiny", 4, "mamba-tiny"},
                          {"mambabyte-tiny", 2, "mambabyte-tiny"},
                          {"mamba-tiny-bf16-sharded", 2, "mamba-tiny-bf16-sharded"},
                          {"mambabyte-tiny-torch", 2, "mambabyte-tiny"},
                          {"mamba2-tiny", 4, "mamba2-tiny"},            // Mamba-2
                          {"mamba2-tiny-long", 3, "mamba2-tiny-long"},  // Mamba-2, bf16 shards
                          {"falcon-mamba-tiny", 2, "falcon-mamba-tiny"},
                          {"samba-tiny", 6, "samba-tiny"},  // SAMBA: lit_config.json + lit_model.pth
                          {"samba-tiny-mha", 2, "samba-tiny-mha"}};
    for (const auto& [folder, nseq, reference_folder] : cases) {
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(ssm::test::data_dir() / reference_folder / "reference.safetensors");
        const int layers = static_cast<int>(ssm::MambaConfig::load(dir).num_hidden_layers);
        for (int i = 0; i < nseq; ++i) {
            const std::string p = "seq" + std::to_string(i);
            INFO(folder << " " << p);
            const auto out = scratch / (std::string(folder) + "-" + p + ".safetensors");
            const Run r = run("--model " + dir.string() + " --ids " + ssm::test::join_ids(ref.load_i64(p + ".input_ids")) +
                              " --out " + out.string() + " --threads 2");
            INFO(r.output);
            REQUIRE(r.status == 0);
            CHECK(r.output.find("wrote") != std::string::npos);
            const auto got = ssm::SafetensorsFile::open(out);
            CHECK(ssm::test::rel_error(got.load_f32("logits").values(), ref.load_f32(p + ".logits").values()) < 1e-5);
            CHECK(ssm::test::rel_error(got.load_f32("last_hidden_state").values(),
                                       ref.load_f32(p + ".hidden." + std::to_string(layers)).values()) < 1e-5);
        }
    }
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-forward: --help, and one clear line with exit != 0 on bad input", "[ssm-forward]") {
    const auto tiny = (ssm::test::data_dir() / "mamba-tiny").string();
    const auto scratch = ssm::test::scratch_dir("forward-bad");

    const Run help = run("--help");
    CHECK(help.status == 0);
    CHECK(help.output.find("usage: ssm-forward") != std::string::npos);

    const auto expect_error = [](const Run& r, int status, const std::string& needle) {
        ssm::test::check_one_line_error(r, "ssm-forward", status, needle);
    };
    expect_error(run("--model /nonexistent/folder --ids 1,2"), 1, "/nonexistent/folder");
    expect_error(run("--model " + tiny + " --ids 1,1000"), 1, "1000");
    expect_error(run("--model " + tiny + " --ids -1"), 1, "-1");
    expect_error(run("--model " + tiny + " --ids ''"), 2, "--ids");
    expect_error(run("--model " + tiny + " --ids 1,x,3"), 2, "'x'");
    expect_error(run("--model " + tiny), 2, "--ids");
    expect_error(run("--ids 1"), 2, "--model");
    expect_error(run("--model " + tiny + " --ids 1 --bogus"), 2, "--bogus");

    // A checkpoint whose weights file is cut short.
    const auto broken = scratch / "broken";
    std::filesystem::create_directories(broken);
    std::filesystem::copy_file(std::filesystem::path(tiny) / "config.json", broken / "config.json");
    {
        std::ifstream in(std::filesystem::path(tiny) / "model.safetensors", std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        ssm::test::write_bytes(broken / "model.safetensors", bytes.substr(0, bytes.size() / 2));
    }
    expect_error(run("--model " + broken.string() + " --ids 1,2"), 1, "model.safetensors");

    // A failed run leaves no output file behind.
    const auto out = scratch / "never.safetensors";
    (void)run("--model " + tiny + " --ids 1,5000 --out " + out.string());
    CHECK_FALSE(std::filesystem::exists(out));
    std::filesystem::remove_all(scratch);
}
