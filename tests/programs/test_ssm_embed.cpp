// ssm-embed end to end: the .npy it writes equals transformers' `embed.embeddings` (EOS
// appended by the program, or given with --no-eos); bad input gives one line, exit != 0.
#include <fstream>
#include <string>
#include <vector>

#include "run_program.hpp"
#include "ssm/retrieval/npy.hpp"
#include "ssm/ssm.hpp"
#include "test_util.hpp"

namespace {

ssm::test::ProgramRun embed(const std::string& args) { return ssm::test::run_program(SSM_EMBED_EXE, args); }

std::string ids_json(std::span<const std::int64_t> ids) { return "[" + ssm::test::join_ids(ids) + "]"; }

}  // namespace

TEST_CASE("ssm-embed writes transformers' embeddings, rows in input order", "[ssm-embed]") {
    const auto scratch = ssm::test::scratch_dir("embed");
    for (const char* folder : {"mamba-tiny", "mambabyte-tiny", "mamba-tiny-bf16-sharded", "mamba2-tiny",
                               "mamba2-tiny-long", "falcon-mamba-tiny"}) {
        INFO(folder);
        const auto dir = ssm::test::data_dir() / folder;
        const auto ref = ssm::SafetensorsFile::open(dir / "reference.safetensors");
        std::string without_eos, with_eos;
        for (int k = 0; k < 4; ++k) {
            const auto ids = ref.load_i64("embed" + std::to_string(k) + ".input_ids");  // ends in the EOS
            without_eos += "{\"id\": " + std::to_string(k) + ", \"input_ids\": " +
                           ids_json(std::span(ids).first(ids.size() - 1)) + "}\n";
            with_eos += "{\"id\": \"d" + std::to_string(k) + "\", \"input_ids\": " + ids_json(ids) + "}\n\n";
        }
        ssm::test::write_bytes(scratch / "a.jsonl", without_eos);
        ssm::test::write_bytes(scratch / "b.jsonl", with_eos);
        const auto a = embed("--model " + dir.string() + " --input " + (scratch / "a.jsonl").string() + " --out " +
                             (scratch / "a.npy").string() + " --threads 2 --batch-tokens 20");
        INFO(a.output);
        REQUIRE(a.status == 0);
        CHECK(a.output.find("embedded 4 inputs") != std::string::npos);
        const auto b = embed("--model " + dir.string() + " --input " + (scratch / "b.jsonl").string() + " --out " +
                             (scratch / "b.npy").string() + " --no-eos");
        INFO(b.output);
        REQUIRE(b.status == 0);
        const ssm::Tensor expected = ref.load_f32("embed.embeddings");
        for (const char* out : {"a.npy", "b.npy"}) {
            const ssm::Matrix got = ssm::load_npy(scratch / out);
            REQUIRE(got.rows() == 4);
            REQUIRE(got.cols() == expected.dim(1));
            CHECK(ssm::test::rel_error({got.data(), static_cast<std::size_t>(got.size())}, expected.values()) < 1e-5);
        }
    }
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-embed --no-normalize and --pooling mean change what is written", "[ssm-embed]") {
    const auto scratch = ssm::test::scratch_dir("embed-opts");
    const auto dir = (ssm::test::data_dir() / "mamba-tiny").string();
    ssm::test::write_bytes(scratch / "in.jsonl", "{\"id\": 1, \"input_ids\": [5, 6, 7, 8]}\n");
    const std::string common = " --model " + dir + " --input " + (scratch / "in.jsonl").string();
    REQUIRE(embed(common + " --out " + (scratch / "n.npy").string()).status == 0);
    REQUIRE(embed(common + " --out " + (scratch / "r.npy").string() + " --no-normalize").status == 0);
    REQUIRE(embed(common + " --out " + (scratch / "m.npy").string() + " --pooling mean").status == 0);
    const ssm::Matrix n = ssm::load_npy(scratch / "n.npy"), r = ssm::load_npy(scratch / "r.npy"),
                      m = ssm::load_npy(scratch / "m.npy");
    CHECK(std::abs(n.row(0).norm() - 1.0f) < 1e-6f);
    CHECK(r.row(0).norm() > 1.5f);
    CHECK((r.row(0) / r.row(0).norm() - n.row(0)).norm() < 1e-6f);
    CHECK(std::abs(m.row(0).norm() - 1.0f) < 1e-6f);
    CHECK((m.row(0) - n.row(0)).norm() > 1e-3f);
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-embed: one clear line and exit != 0 on bad input", "[ssm-embed]") {
    const auto scratch = ssm::test::scratch_dir("embed-bad");
    const auto tiny = (ssm::test::data_dir() / "mamba-tiny").string();
    const auto bf16 = (ssm::test::data_dir() / "mamba-tiny-bf16-sharded").string();
    const auto in = (scratch / "in.jsonl").string(), out = (scratch / "out.npy").string();
    const auto err = [&](const ssm::test::ProgramRun& r, int status, const std::string& needle) {
        ssm::test::check_one_line_error(r, "ssm-embed", status, needle);
    };
    CHECK(embed("--help").output.find("usage: ssm-embed") != std::string::npos);
    err(embed("--model " + tiny + " --out " + out), 2, "--input");
    err(embed("--model " + tiny + " --input " + in + " --out " + out + " --pooling max"), 2, "--pooling");

    ssm::test::write_bytes(in, "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2\n");
    err(embed("--model " + tiny + " --input " + in + " --out " + out), 1, in + ":2:");
    ssm::test::write_bytes(in, "{\"input_ids\": [1, 2]}\n\n{\"input_ids\": [1, 1000]}\n");
    err(embed("--model " + tiny + " --input " + in + " --out " + out), 1, in + ":3:");
    ssm::test::write_bytes(in, "{\"input_ids\": [1, \"x\"]}\n");
    err(embed("--model " + tiny + " --input " + in + " --out " + out), 1, in + ":1:");
    ssm::test::write_bytes(in, "{\"id\": 3}\n");
    err(embed("--model " + tiny + " --input " + in + " --out " + out), 1, "\"text\"");
    ssm::test::write_bytes(in, "{\"input_ids\": []}\n");
    err(embed("--model " + tiny + " --input " + in + " --out " + out), 1, "empty");
    ssm::test::write_bytes(in, "\n\n");
    err(embed("--model " + tiny + " --input " + in + " --out " + out), 1, "no inputs");
    err(embed("--model " + tiny + " --input " + (scratch / "missing.jsonl").string() + " --out " + out), 1,
        "missing.jsonl");
    ssm::test::write_bytes(in, "{\"text\": \"hello\"}\n");  // a token model without tokenizer.json
    err(embed("--model " + bf16 + " --input " + in + " --out " + out), 1, "tokenizer.json");
    CHECK_FALSE(std::filesystem::exists(out));  // nothing half-written by any of these
    std::filesystem::remove_all(scratch);
}
