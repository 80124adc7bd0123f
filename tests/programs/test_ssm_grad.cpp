// ssm-grad end to end: the gradients it writes for the three losses equal PyTorch autograd
// in float64 (tests/data/{mambabyte-tiny,falcon-mamba-tiny,mamba2-tiny,samba-tiny}/grad/, made by make_training_reference.py) to
// 1e-4 per tensor, norm-wise, and the loss to 1e-5; bad input gives one line, exit != 0.
#include <cmath>
#include <string>

#include "run_program.hpp"
#include "ssm/io/safetensors.hpp"
#include "test_util.hpp"

namespace {

ssm::test::ProgramRun grad(const std::string& args) { return ssm::test::run_program(SSM_GRAD_EXE, args); }

const std::filesystem::path kModel = ssm::test::data_dir() / "mambabyte-tiny";

std::string base(const std::string& loss, const std::filesystem::path& input, const std::filesystem::path& out,
                 const std::filesystem::path& model = kModel) {
    return "--model " + model.string() + " --loss " + loss + " --input " + input.string() + " --out " + out.string();
}

}  // namespace

TEST_CASE("ssm-grad writes PyTorch's float64 gradients for lm, infonce and listwise", "[ssm-grad]") {
    const auto scratch = ssm::test::scratch_dir("grad");
    // A Mamba LM, Falcon-Mamba, Mamba-2, and a SAMBA hybrid (lit-gpt checkpoint, Mamba and attention layers).
    for (const char* dir : {"mambabyte-tiny", "falcon-mamba-tiny", "mamba2-tiny", "samba-tiny"})
    for (const std::string loss : {"lm", "infonce", "listwise"}) {
        INFO(dir << " " << loss);
        const auto model = ssm::test::data_dir() / dir;
        const auto ref_dir = model / "grad";
        const auto out = scratch / (std::string(dir) + "-" + loss + ".safetensors");
        std::string args = base(loss, ref_dir / (loss + ".jsonl"), out, model) + " --threads 2";
        if (loss == "infonce") args += " --temperature 0.05";
        if (loss == "listwise") args += " --head " + (ref_dir / "head.safetensors").string();
        const auto r = grad(args);
        INFO(r.output);
        REQUIRE(r.status == 0);
        CHECK(r.output.find(loss + " loss") != std::string::npos);
        const auto got = ssm::SafetensorsFile::open(out);
        const auto ref = ssm::SafetensorsFile::open(ref_dir / (loss + ".safetensors"));
        std::size_t compared = 0;
        for (const auto& name : ref.names()) {
            if (name == "temperature") continue;
            INFO(name);
            REQUIRE(got.contains(name));
            const ssm::Tensor a = got.load_f32(name), b = ref.load_f32(name);
            REQUIRE(a.size() == b.size());
            if (name == "loss") {
                CHECK(std::abs(a.values()[0] - b.values()[0]) <= 1e-5 * std::abs(b.values()[0]));
            } else if (name == "score.bias") {  // 0 in exact arithmetic
                CHECK(std::abs(a.values()[0]) < 1e-6);
            } else {
                CHECK(ssm::test::rel_error(a.values(), b.values()) < 1e-4);
            }
            ++compared;
        }
        CHECK(got.names().size() == compared);  // nothing extra
        CHECK(compared >= 21);  // the loss and every parameter: mamba2-tiny, the smallest, has 20
    }
}

TEST_CASE("ssm-grad rejects bad input with one line", "[ssm-grad]") {
    const auto scratch = ssm::test::scratch_dir("grad-bad");
    const auto out = scratch / "g.safetensors";
    const auto write = [&](const std::string& name, const std::string& text) {
        ssm::test::write_bytes(scratch / name, text);
        return scratch / name;
    };
    const auto head = (kModel / "grad" / "head.safetensors").string();
    ssm::test::check_one_line_error(grad(base("lm", write("empty.jsonl", "{\"ids\": [1, 2]}\n{\"ids\": []}\n"), out)),
                                    "ssm-grad", 1, ":2");
    ssm::test::check_one_line_error(grad(base("lm", write("vocab.jsonl", "{\"ids\": [1, 256]}\n"), out)), "ssm-grad", 1,
                                    "outside the vocabulary");
    ssm::test::check_one_line_error(
        grad(base("infonce", write("groups.jsonl", "{\"query\": [1], \"passages\": [[1], [2]]}\n"
                                                   "{\"query\": [1], \"passages\": [[1], [2], [3]]}\n"),
                  out)),
        "ssm-grad", 1, "same size");
    ssm::test::check_one_line_error(
        grad(base("listwise", write("one.jsonl", "{\"pairs\": [[1, 2]]}\n"), out) + " --head " + head), "ssm-grad", 1,
        "negative");
    ssm::test::check_one_line_error(grad(base("listwise", write("ok.jsonl", "{\"pairs\": [[1], [2]]}\n"), out)),
                                    "ssm-grad", 2, "--head");
    // A head whose width disagrees with the model.
    const ssm::Tensor w = ssm::Tensor::zeros({1, 7});
    const ssm::Tensor b = ssm::Tensor::zeros({1});
    const std::vector<ssm::TensorToWrite> t = {ssm::f32_tensor("score.weight", {1, 7}, w.values()),
                                              ssm::f32_tensor("score.bias", {1}, b.values())};
    ssm::write_safetensors(scratch / "narrow.safetensors", t);
    ssm::test::check_one_line_error(
        grad(base("listwise", scratch / "ok.jsonl", out) + " --head " + (scratch / "narrow.safetensors").string()),
        "ssm-grad", 1, "score.weight");
    ssm::test::check_one_line_error(grad(base("mse", scratch / "ok.jsonl", out)), "ssm-grad", 2, "--loss");
    CHECK_FALSE(std::filesystem::exists(out));  // nothing half-written
}
