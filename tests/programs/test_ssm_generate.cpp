// ssm-generate end to end: greedy --format ids equals transformers' generate.output for
// the token and the byte model, and the SAMBA references; seeded sampling repeats; bad
// input gives one line.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "run_program.hpp"
#include "ssm/ssm.hpp"
#include "ssm/text/tokenizer.hpp"
#include "test_util.hpp"

namespace {

ssm::test::ProgramRun generate(const std::string& args, bool merge_stderr = false) {
    return ssm::test::run_program(SSM_GENERATE_EXE, args, merge_stderr);
}

}  // namespace

TEST_CASE("ssm-generate --greedy --format ids reproduces generate.output", "[ssm-generate]") {
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny", "mamba-tiny-bf16-sharded", "samba-tiny", "samba-tiny-mha",
                               "mamba2-tiny", "mamba2-tiny-long", "falcon-mamba-tiny"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        const auto prompt = ref.load_i64("generate.prompt");
        const auto expected = ref.load_i64("generate.output");
        const auto n = expected.size() - prompt.size();
        // Greedy decoding of the n reference tokens after the prompt, with `options` added.
        const auto greedy = [&](const std::string& options) {
            return generate("--model " + dir.string() + " --ids " + ssm::test::join_ids(prompt) +
                            " --greedy --no-eos-stop --max-new-tokens " + std::to_string(n) + " --format ids " + options);
        };
        const auto r = greedy("--threads 2");
        INFO(r.output);
        REQUIRE(r.status == 0);
        CHECK(r.output == ssm::test::join_ids(std::span(expected).subspan(prompt.size())) + "\n");
        if (std::string(folder) == "mamba-tiny-bf16-sharded") {  // BF16 weights kept as bf16: the same tokens
            const auto half = greedy("--bf16");
            INFO(half.output);
            CHECK(half.status == 0);
            CHECK(half.output == r.output);
        }
        if (std::string(folder) == "mamba-tiny") {
            // int8 weights, and int8 activations in decoding too: runs, and gives as many tokens.
            for (const char* options : {"--int8", "--int8 --int8-activations"}) {
                const auto q = greedy(options);
                INFO(options << ": " << q.output);
                CHECK(q.status == 0);
                CHECK(std::count(q.output.begin(), q.output.end(), ',') == std::count(r.output.begin(), r.output.end(), ','));
            }
        }
    }
}

TEST_CASE("ssm-generate: seeded sampling repeats, text output streams the byte model", "[ssm-generate]") {
    const auto dir = (ssm::test::data_dir() / "mambabyte-tiny").string();
    const std::string sample = "--model " + dir + " --prompt 'Hello, ' --temperature 0.9 --top-p 0.9 --top-k 50 "
                               "--max-new-tokens 40 --no-eos-stop --format ids --seed ";
    const auto a = generate(sample + "7"), b = generate(sample + "7"), c = generate(sample + "8");
    REQUIRE(a.status == 0);
    CHECK(a.output == b.output);
    CHECK(a.output != c.output);
    CHECK(std::count(a.output.begin(), a.output.end(), ',') == 39);

    const auto text = generate("--model " + dir + " --prompt 'Hello, ' --max-new-tokens 20 --no-eos-stop", true);
    INFO(text.output);
    REQUIRE(text.status == 0);
    CHECK(text.output.rfind("Hello, ", 0) == 0);  // the prompt, then the continuation
    CHECK(text.output.find("20 new tokens") != std::string::npos);
    CHECK(text.output.find("stopped: max new tokens") != std::string::npos);
}

TEST_CASE("ssm-generate: text through a LLaMA-kind tokenizer streams what decode gives", "[ssm-generate]") {
    // mamba-tiny's weights (vocab 1000) with the 600-id LLaMA-kind test tokenizer.
    namespace fs = std::filesystem;
    const auto dir = ssm::test::scratch_dir("generate-llama");
    for (const char* f : {"config.json", "model.safetensors"})
        fs::copy_file(ssm::test::data_dir() / "mamba-tiny" / f, dir / f);
    fs::copy_file(ssm::test::data_dir() / "tokenizer" / "tokenizer_llama.json", dir / "tokenizer.json");
    const auto tok = ssm::BpeTokenizer::load(dir / "tokenizer.json");
    const std::string common = "--model " + dir.string() + " --prompt 'Hello world' --greedy --no-eos-stop --max-new-tokens 12";
    const auto ids = generate(common + " --format ids");
    REQUIRE(ids.status == 0);
    std::vector<std::int32_t> all = tok.encode("Hello world");
    for (std::size_t at = 0; at < ids.output.size();) {
        const std::size_t comma = std::min(ids.output.find_first_of(",\n", at), ids.output.size());
        if (comma > at) all.push_back(std::stoi(ids.output.substr(at, comma - at)));
        at = comma + 1;
    }
    REQUIRE(all.size() == tok.encode("Hello world").size() + 12);
    const auto text = generate(common);
    REQUIRE(text.status == 0);
    // The prompt without the space the normalizer put before it, then the continuation
    // token by token: the same text as decoding everything at once.
    CHECK(text.output == ssm::printable_utf8(tok.decode(all)) + "\n");
    CHECK(text.output.rfind("Hello world", 0) == 0);
    fs::remove_all(dir);
}

TEST_CASE("ssm-generate: one clear line and exit != 0 on bad input", "[ssm-generate]") {
    const auto tiny = (ssm::test::data_dir() / "mamba-tiny").string();
    const auto bf16 = (ssm::test::data_dir() / "mamba-tiny-bf16-sharded").string();
    const auto err = [](const ssm::test::ProgramRun& r, int status, const std::string& needle) {
        ssm::test::check_one_line_error(r, "ssm-generate", status, needle);
    };
    CHECK(generate("--help").output.find("usage: ssm-generate") != std::string::npos);
    err(generate("--model " + tiny, true), 2, "--prompt");
    err(generate("--model " + tiny + " --ids 1 --prompt x", true), 2, "not both");
    err(generate("--model " + tiny + " --ids 1,1000", true), 1, "1000");
    err(generate("--model " + tiny + " --ids 1 --temperature abc", true), 2, "--temperature");
    err(generate("--model " + tiny + " --ids 1 --temperature -1", true), 1, "temperature");
    err(generate("--model " + tiny + " --ids 1 --top-p 1.5", true), 1, "top_p");
    err(generate("--model " + tiny + " --ids 1 --greedy --top-k 3", true), 2, "--greedy");
    err(generate("--model " + tiny + " --ids 1 --format xml", true), 2, "--format");
    err(generate("--model " + tiny + " --ids 1 --bf16 --int8", true), 2, "not both");
    err(generate("--model " + tiny + " --ids 1 --int8-activations", true), 2, "--int8-activations goes with --int8");
    err(generate("--model " + bf16 + " --prompt hello", true), 1, "tokenizer.json");
    err(generate("--model /no/such/model --ids 1", true), 1, "/no/such/model");
}
