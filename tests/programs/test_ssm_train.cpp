// ssm-train end to end, each recipe on the bundled byte-level model: 30 steps on bundled
// data, the loss falls, `--resume` from the step-15 checkpoint gives the same losses as the
// uninterrupted run and the same final weights and optimizer state byte for byte (one
// thread: with several, workers' partial sums may meet in another order after a restart), and the saved folder reloads
// in the library (and in the retrieval program) with the trained model's outputs; the same
// for Mamba-2 models (transformers' form, and mamba_ssm's grouped form). Bad input
// is one line naming the file, line or option, and leaves no checkpoint behind.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "run_program.hpp"
#include "ssm/ssm.hpp"
#include "ssm/train/losses.hpp"
#include "ssm/train/parameters.hpp"
#include "ssm/train/steps.hpp"
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;

ssm::test::ProgramRun train(const std::string& args) { return ssm::test::run_program(SSM_TRAIN_EXE, args); }

const fs::path kModel = ssm::test::data_dir() / "mambabyte-tiny";
const fs::path kData = ssm::test::data_dir() / "train";
const fs::path kBeir = fs::path(SSM_TEST_DATA_DIR) / ".." / ".." / "examples" / "data" / "mini-beir";

std::vector<nlohmann::json> read_log(const fs::path& p) {
    std::vector<nlohmann::json> out;
    std::ifstream in(p);
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
}

std::vector<double> losses(const std::vector<nlohmann::json>& log) {
    std::vector<double> out;
    for (const auto& j : log)
        if (j.contains("loss")) out.push_back(j.at("loss").get<double>());
    return out;
}

nlohmann::json last_eval(const std::vector<nlohmann::json>& log) {
    nlohmann::json e;
    for (const auto& j : log)
        if (j.contains("eval")) e = j.at("eval");
    return e;
}

std::string bytes_of(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

double mean(const std::vector<double>& v, std::size_t from, std::size_t to) {
    double s = 0;
    for (std::size_t i = from; i < to; ++i) s += v[i];
    return s / static_cast<double>(to - from);
}

/// Runs `recipe` for 30 steps (checkpoint at 15), then resumes from step 15; checks the
/// loss falls, the resumed losses and final files equal the uninterrupted run's. Returns
/// the uninterrupted run's log.
std::vector<nlohmann::json> train_and_resume(const std::string& recipe, const std::string& args, const fs::path& scratch,
                                             const std::vector<std::string>& files, int threads = 1) {
    const fs::path a = scratch / "a", b = scratch / "b";
    const std::string t = " --threads " + std::to_string(threads);
    const auto ra = train(recipe + " " + args + " --steps 30 --save-every 15" + t + " --out " + a.string() +
                          " --log " + (scratch / "a.jsonl").string());
    INFO(ra.output);
    REQUIRE(ra.status == 0);
    CHECK(ra.output.find("trained steps 1..30") != std::string::npos);
    REQUIRE(fs::exists(a / "checkpoint-15" / "trainer_state.json"));
    const auto rb = train(recipe + " " + args + " --steps 30" + t + " --resume " + (a / "checkpoint-15").string() +
                          " --out " + b.string() + " --log " + (scratch / "b.jsonl").string());
    INFO(rb.output);
    REQUIRE(rb.status == 0);
    CHECK(rb.output.find("trained steps 16..30") != std::string::npos);

    const auto log_a = read_log(scratch / "a.jsonl"), log_b = read_log(scratch / "b.jsonl");
    const auto la = losses(log_a), lb = losses(log_b);
    REQUIRE(la.size() == 30);
    REQUIRE(lb.size() == 15);
    for (std::size_t i = 0; i < 15; ++i) {
        INFO("step " << i + 16);
        CHECK(lb[i] == la[i + 15]);  // bit for bit
    }
    INFO("first five " << mean(la, 0, 5) << ", last five " << mean(la, 25, 30));
    CHECK(mean(la, 25, 30) < 0.8 * mean(la, 0, 5));
    for (const auto& f : files) {
        INFO(f);
        const bool same = bytes_of(a / f) == bytes_of(b / f);
        CHECK(same);
    }
    return log_a;
}

}  // namespace

TEST_CASE("ssm-train lm: loss falls, resume is exact, the saved folder reloads", "[ssm-train]") {
    const auto scratch = ssm::test::scratch_dir("train-lm");
    const std::string args = "--model " + kModel.string() + " --train " + (kData / "lm.txt").string() +
                             " --seq-len 64 --batch-size 4 --lr 3e-3 --warmup 3 --schedule cosine --eval " +
                             (kData / "lm-heldout.txt").string();
    const auto log = train_and_resume("lm", args, scratch, {"model.safetensors", "optimizer.safetensors"});
    const nlohmann::json eval = last_eval(log);
    REQUIRE(eval.contains("loss"));
    REQUIRE(eval.contains("bits_per_byte"));

    // The library reloads the saved folder and gives the held-out loss the trainer measured
    // in memory.
    const fs::path out = scratch / "a";
    std::ifstream in(kData / "lm-heldout.txt", std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    ssm::with_mamba<ssm::LmHead>(out, [&](auto& model) {
        using Model = std::decay_t<decltype(model)>;
        if constexpr (ssm::train::TrainableModel<Model>) {
            ssm::train::Parameters params;  // the training forward keeps what backward needs
            model.register_parameters(params);
            double nats = 0;
            ssm::index predicted = 0;
            for (std::size_t at = 0; at < s.size(); at += 64) {
                const std::size_t n = std::min<std::size_t>(64, s.size() - at);
                if (n < 2) break;
                std::vector<std::int32_t> ids;
                for (std::size_t i = at; i < at + n; ++i) ids.push_back(static_cast<unsigned char>(s[i]));
                ssm::Batch batch;
                batch.add(ids);
                typename Model::TrainCache cache;
                model.forward_train(batch, cache);
                const ssm::Matrix logits = model.logits_train(cache);
                ssm::Matrix unused;
                nats += ssm::train::causal_lm_loss(logits, batch.tokens(), batch.offsets(), unused) *
                        static_cast<double>(n - 1);
                predicted += static_cast<ssm::index>(n - 1);
            }
            CHECK(predicted == eval.at("tokens").get<ssm::index>());
            CHECK(std::abs(nats / static_cast<double>(predicted) - eval.at("loss").get<double>()) < 1e-6);
        }
        return 0;
    });
    // config.json is the base's; the tied head is not written on its own.
    const auto st = ssm::SafetensorsFile::open(out / "model.safetensors");
    CHECK_FALSE(st.contains("lm_head.weight"));
    CHECK(st.contains("backbone.layers.1.mixer.A_log"));
    CHECK(fs::exists(out / "config.json"));
}

TEST_CASE("ssm-train lm at two threads: resume is exact too", "[ssm-train]") {
    // Every reduction has a fixed order whatever the thread count, so a resumed run repeats
    // the uninterrupted one bit for bit at 2 threads as at 1 (without OpenMP both are 1).
    const auto scratch = ssm::test::scratch_dir("train-lm-2t");
    const std::string args = "--model " + kModel.string() + " --train " + (kData / "lm.txt").string() +
                             " --seq-len 64 --batch-size 4 --lr 3e-3 --warmup 3 --schedule cosine";
    (void)train_and_resume("lm", args, scratch, {"model.safetensors", "optimizer.safetensors"}, 2);
}

TEST_CASE("ssm-train lm --bf16-products: on the bf16 unit the loss falls and resume is exact; elsewhere a note",
          "[ssm-train]") {
    const auto scratch = ssm::test::scratch_dir("train-lm-bf16");
    const std::string args = "--model " + kModel.string() + " --train " + (kData / "lm.txt").string() +
                             " --seq-len 64 --batch-size 4 --lr 3e-3 --warmup 3 --schedule cosine --bf16-products";
    if (!ssm::cpu_supports(ssm::CpuIsa::Avx512Bf16)) {  // the products stay float32, and it says so
        const auto r = train("lm " + args + " --steps 4 --threads 1 --out " + (scratch / "note").string());
        INFO(r.output);
        REQUIRE(r.status == 0);
        CHECK(r.output.find("the products stay float32") != std::string::npos);
        CHECK(r.output.find(", bf16 products") == std::string::npos);
        return;
    }
    // The unit forced on for the programs run here (the default leaves it off where the FMA
    // units are faster), and the environment put back however the test ends.
    struct ForceUnit {
        std::optional<std::string> before;
        ForceUnit() {
            if (const char* had = std::getenv("SSM_CPU_ISA")) before = had;
            ::setenv("SSM_CPU_ISA", "avx512bf16", 1);
        }
        ~ForceUnit() {
            if (before)
                ::setenv("SSM_CPU_ISA", before->c_str(), 1);
            else
                ::unsetenv("SSM_CPU_ISA");
        }
        ForceUnit(const ForceUnit&) = delete;
        ForceUnit& operator=(const ForceUnit&) = delete;
    } const force;
    const auto r = train("lm " + args + " --steps 4 --threads 1 --out " + (scratch / "banner").string());
    INFO(r.output);
    CHECK(r.status == 0);
    CHECK(r.output.find(", bf16 products") != std::string::npos);
    (void)train_and_resume("lm", args, scratch, {"model.safetensors", "optimizer.safetensors"});
}

TEST_CASE("ssm-train lm trains Mamba-2: loss falls, resume is exact, the saved folder reloads", "[ssm-train]") {
    // mamba2-tiny: transformers' Mamba2ForCausalLM form, kept as it is.
    const auto scratch = ssm::test::scratch_dir("train-mamba2");
    const fs::path base = ssm::test::data_dir() / "mamba2-tiny";
    const std::string args = "--model " + base.string() + " --train " + (kData / "lm.txt").string() +
                             " --seq-len 64 --batch-size 4 --lr 3e-3 --warmup 3 --schedule cosine --eval " +
                             (kData / "lm-heldout.txt").string();
    const auto log = train_and_resume("lm", args, scratch, {"model.safetensors", "optimizer.safetensors"});
    const nlohmann::json eval = last_eval(log);
    REQUIRE(eval.contains("loss"));
    const fs::path out = scratch / "a";
    CHECK(ssm::MambaConfig::load(out).family == ssm::ModelFamily::Mamba2);
    const auto st = ssm::SafetensorsFile::open(out / "model.safetensors");
    for (const char* name : {"backbone.layers.1.mixer.dt_bias", "backbone.layers.1.mixer.A_log",
                             "backbone.layers.1.mixer.D", "backbone.layers.1.mixer.norm.weight"})
        CHECK(st.contains(name));
    CHECK_FALSE(st.contains("lm_head.weight"));  // tied
    // The reloaded model's held-out loss is the one the trainer measured in memory.
    std::ifstream in(kData / "lm-heldout.txt", std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    const std::string s = text.str();
    auto model = ssm::Mamba2LM::load(out);
    double nats = 0;
    ssm::index predicted = 0;
    for (std::size_t at = 0; at + 2 <= s.size(); at += 64) {
        const std::size_t n = std::min<std::size_t>(64, s.size() - at);
        std::vector<std::int32_t> ids;
        for (std::size_t i = at; i < at + n; ++i) ids.push_back(static_cast<unsigned char>(s[i]));
        ssm::Batch batch;
        batch.add(ids);
        const ssm::Matrix logits = model.forward(batch, {ssm::Logits::All, false}).logits;
        ssm::Matrix unused;
        nats += ssm::train::causal_lm_loss(logits, batch.tokens(), batch.offsets(), unused) * static_cast<double>(n - 1);
        predicted += static_cast<ssm::index>(n - 1);
    }
    CHECK(predicted == eval.at("tokens").get<ssm::index>());
    CHECK(std::abs(nats / static_cast<double>(predicted) - eval.at("loss").get<double>()) < 1e-5);
}

TEST_CASE("ssm-train lm trains a grouped mamba_ssm Mamba-2 checkpoint and keeps its config", "[ssm-train]") {
    // Two groups, d_ssm 48 of 64 inner channels (a gated MLP beside the SSM): transformers
    // has no form for it, so the saved folder keeps mamba_ssm's config.json (its
    // `Infinity` as the string "Infinity") beside weights in the library's names.
    const auto scratch = ssm::test::scratch_dir("train-mamba2-grouped");
    const fs::path base = ssm::test::data_dir() / "mamba2-grouped-torch", out = scratch / "out";
    const auto r = train("lm --model " + base.string() + " --train " + (kData / "lm.txt").string() +
                         " --seq-len 64 --batch-size 4 --lr 3e-3 --steps 8 --threads 1 --out " + out.string() +
                         " --log " + (scratch / "log.jsonl").string());
    INFO(r.output);
    REQUIRE(r.status == 0);
    const auto l = losses(read_log(scratch / "log.jsonl"));
    REQUIRE(l.size() == 8);
    CHECK(l.back() < l.front());
    const auto saved = nlohmann::json::parse(bytes_of(out / "config.json"));
    CHECK(saved.at("ssm_cfg").at("layer") == "Mamba2");
    const ssm::MambaConfig c = ssm::MambaConfig::load(out);
    CHECK(c.family == ssm::ModelFamily::Mamba2);
    CHECK(c.mamba2.n_groups == 2);
    CHECK(std::isinf(c.mamba2.dt_max));
    CHECK_FALSE(c.tie_word_embeddings);
    auto model = ssm::Mamba2LM::load(out);  // every tensor found under the saved names
    ssm::Batch batch;
    batch.add(std::vector<std::int32_t>{72, 101, 108, 108, 111});
    CHECK(model.forward(batch, {ssm::Logits::All, false}).logits.allFinite());
}

TEST_CASE("ssm-train lm --init trains a Mamba-2 model from its config alone", "[ssm-train]") {
    // mamba2-tiny's config.json, drawn as mamba_ssm's Mamba2 draws one: the first loss is
    // near uniform prediction over 256 bytes, and it falls.
    const auto scratch = ssm::test::scratch_dir("train-mamba2-init");
    const fs::path config = ssm::test::data_dir() / "mamba2-tiny" / "config.json", out = scratch / "out";
    const auto r = train("lm --init " + config.string() + " --train " + (kData / "lm.txt").string() +
                         " --seq-len 64 --batch-size 4 --lr 3e-3 --steps 12 --seed 3 --threads 1 --out " + out.string() +
                         " --log " + (scratch / "log.jsonl").string());
    INFO(r.output);
    REQUIRE(r.status == 0);
    const auto l = losses(read_log(scratch / "log.jsonl"));
    REQUIRE(l.size() == 12);
    CHECK(std::abs(l.front() - std::log(256.0)) < 0.5);
    INFO("first three " << mean(l, 0, 3) << ", last three " << mean(l, 9, 12));
    CHECK(mean(l, 9, 12) < mean(l, 0, 3) - 0.3);
    CHECK(ssm::MambaConfig::load(out).family == ssm::ModelFamily::Mamba2);
    auto model = ssm::Mamba2LM::load(out);
    ssm::Batch batch;
    batch.add(std::vector<std::int32_t>{72, 101, 108, 108, 111});
    CHECK(model.forward(batch, {ssm::Logits::All, false}).logits.allFinite());
}

TEST_CASE("ssm-train retriever: loss falls, resume is exact, ssm-retrieve reproduces the final evaluation",
          "[ssm-train]") {
    const auto scratch = ssm::test::scratch_dir("train-retriever");
    const std::string args = "--model " + kModel.string() + " --train " + (kData / "retrieval.jsonl").string() +
                             " --group-size 4 --batch-size 4 --lr 2e-3 --temperature 0.05 --query-max-length 4096"
                             " --passage-max-length 4096 --eval " + kBeir.string();
    const auto log = train_and_resume("retriever", args, scratch, {"model.safetensors", "optimizer.safetensors"});
    const nlohmann::json eval = last_eval(log);
    REQUIRE(eval.contains("ndcg@10"));
    const auto r = ssm::test::run_program(SSM_RETRIEVE_EXE, "--model " + (scratch / "a").string() + " --beir " +
                                                                kBeir.string() + " --top-k 100 --threads 2");
    INFO(r.output);
    REQUIRE(r.status == 0);
    const auto at = r.output.find("nDCG@10 ");
    REQUIRE(at != std::string::npos);
    const double ndcg = std::stod(r.output.substr(at + 8, 6));
    CHECK(std::abs(ndcg - eval.at("ndcg@10").get<double>()) < 6e-5);
}

TEST_CASE("ssm-train reranker: loss falls with dropout, resume is exact, score.safetensors is written",
          "[ssm-train]") {
    const auto scratch = ssm::test::scratch_dir("train-reranker");
    const std::string args = "--model " + kModel.string() + " --train " + (kData / "retrieval.jsonl").string() +
                             " --group-size 2 --batch-size 4 --lr 2e-2 --max-length 256";
    train_and_resume("reranker", args, scratch, {"model.safetensors", "optimizer.safetensors", "score.safetensors"});
    const auto head = ssm::SafetensorsFile::open(scratch / "a" / "score.safetensors");
    CHECK(head.contains("score.weight"));
    CHECK(head.contains("score.bias"));
    // ssm-rerank reads the saved folder, picking up score.safetensors beside the weights by
    // itself, and gives the same scores as with --head.
    ssm::test::write_bytes(scratch / "pairs.jsonl", "{\"query\": \"why is attention slow\", \"document\": \"Attention is quadratic.\"}\n");
    const std::string pairs = " --input " + (scratch / "pairs.jsonl").string();
    const auto by_name = ssm::test::run_program(SSM_RERANK_EXE, "--model " + (scratch / "a").string() + pairs, false);
    const auto given = ssm::test::run_program(
        SSM_RERANK_EXE, "--model " + (scratch / "a").string() + " --head " + (scratch / "a" / "score.safetensors").string() + pairs,
        false);
    INFO(by_name.output);
    CHECK(by_name.status == 0);
    CHECK(given.status == 0);
    CHECK_FALSE(by_name.output.empty());
    CHECK(by_name.output == given.output);
}

TEST_CASE("ssm-train: bad input is one line, and no checkpoint is written", "[ssm-train]") {
    using ssm::test::check_one_line_error;
    const auto scratch = ssm::test::scratch_dir("train-bad");
    const std::string model = " --model " + kModel.string() + " --steps 2 --threads 1";

    ssm::test::write_bytes(scratch / "bad.jsonl",
                           "{\"query\": \"q\", \"positive_passages\": [{\"text\": \"p\"}], \"negative_passages\": [{\"text\": \"n\"}]}\n"
                           "{\"query\": \"q\", \"positive_passages\": [\n");
    auto r = train("retriever" + model + " --train " + (scratch / "bad.jsonl").string() + " --out " + (scratch / "o1").string());
    check_one_line_error(r, "ssm-train", 1, "bad.jsonl:2");
    CHECK_FALSE(fs::exists(scratch / "o1" / "model.safetensors"));

    ssm::test::write_bytes(scratch / "nopos.jsonl",
                           "{\"query\": \"q\", \"positive_passages\": [], \"negative_passages\": [{\"text\": \"n\"}]}\n");
    r = train("retriever" + model + " --train " + (scratch / "nopos.jsonl").string() + " --out " + (scratch / "o2").string());
    check_one_line_error(r, "ssm-train", 1, "nopos.jsonl:1");
    CHECK(r.output.find("no positive") != std::string::npos);

    // A BEIR folder whose training judgments name a document the corpus lacks.
    const fs::path beir = scratch / "beir";
    fs::create_directories(beir / "qrels");
    fs::copy_file(kBeir / "corpus.jsonl", beir / "corpus.jsonl");
    fs::copy_file(kBeir / "queries.jsonl", beir / "queries.jsonl");
    ssm::test::write_bytes(beir / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\td02\t1\nq2\tmissing-doc\t1\n");
    ssm::test::write_bytes(scratch / "run.trec", "q1 Q0 d03 1 2.0 bm25\n");
    r = train("retriever" + model + " --train " + beir.string() + " --negatives " + (scratch / "run.trec").string() +
              " --out " + (scratch / "o3").string());
    check_one_line_error(r, "ssm-train", 1, "missing-doc");

    // An output folder that cannot be created.
    ssm::test::write_bytes(scratch / "afile", "x");
    r = train("lm" + model + " --train " + (kData / "lm.txt").string() + " --out " + (scratch / "afile" / "sub").string());
    check_one_line_error(r, "ssm-train", 1, "afile");

    // --resume from a folder of another model.
    const fs::path other = ssm::test::data_dir() / "mamba-tiny";
    r = train("lm --model " + other.string() + " --steps 2 --threads 1 --train " + (kData / "lm.txt").string() +
              " --resume " + (scratch / "nothing").string() + " --out " + (scratch / "o4").string());
    check_one_line_error(r, "ssm-train", 1, "trainer_state.json");
    const fs::path saved = scratch / "saved";
    REQUIRE(train("lm" + model + " --seq-len 32 --train " + (kData / "lm.txt").string() + " --out " + saved.string()).status == 0);
    r = train("lm --model " + other.string() + " --steps 4 --threads 1 --seq-len 32 --batch-size 8 --train " +
              (kData / "lm.txt").string() + " --resume " + saved.string() + " --out " + (scratch / "o5").string());
    check_one_line_error(r, "ssm-train", 1, "different model");

    // Usage errors: a recipe's option given to another, a missing recipe.
    r = train("lm" + model + " --train x --out y --temperature 0.1");
    check_one_line_error(r, "ssm-train", 2, "--temperature");
    r = train("--model x");
    check_one_line_error(r, "ssm-train", 2, "recipe");
}

TEST_CASE("ssm-train: a BEIR folder with a run to mine negatives from, and the reranker's evaluation", "[ssm-train]") {
    const auto scratch = ssm::test::scratch_dir("train-beir");
    const fs::path beir = scratch / "beir";
    fs::create_directories(beir / "qrels");
    fs::copy_file(kBeir / "corpus.jsonl", beir / "corpus.jsonl");
    fs::copy_file(kBeir / "queries.jsonl", beir / "queries.jsonl");
    fs::copy_file(kBeir / "qrels" / "test.tsv", beir / "qrels" / "test.tsv");
    fs::copy_file(kBeir / "qrels" / "test.tsv", beir / "qrels" / "train.tsv");
    // A run ranking every document for every query, in corpus order (judged ones skipped
    // as negatives by the reader).
    std::string run;
    for (int q = 1; q <= 8; ++q)
        for (int d = 1; d <= 24; ++d) {
            char line[64];
            std::snprintf(line, sizeof line, "q%d Q0 d%02d %d %d.0 test\n", q, d, d, 100 - d);
            run += line;
        }
    ssm::test::write_bytes(scratch / "run.trec", run);
    const std::string common = " --model " + kModel.string() + " --train " + beir.string() + " --negatives " +
                               (scratch / "run.trec").string() + " --group-size 4 --batch-size 4 --steps 3 --threads 1";
    auto r = train("retriever" + common + " --lr 2e-3 --out " + (scratch / "ret").string() + " --eval " + kBeir.string() +
                   " --log " + (scratch / "ret.jsonl").string());
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK(r.output.find("retriever: 8 training items") != std::string::npos);
    auto e = last_eval(read_log(scratch / "ret.jsonl"));
    CHECK(e.contains("ndcg@10"));
    CHECK(e.value("queries", 0) == 8);

    r = train("reranker" + common + " --lr 2e-3 --max-length 256 --out " + (scratch / "rr").string() + " --eval " +
              kBeir.string() + " --eval-run " + (scratch / "run.trec").string() + " --eval-depth 10 --log " +
              (scratch / "rr.jsonl").string());
    INFO(r.output);
    REQUIRE(r.status == 0);
    e = last_eval(read_log(scratch / "rr.jsonl"));
    REQUIRE(e.contains("ndcg@10"));
    CHECK(e.value("queries", 0) == 8);
    CHECK(e.at("ndcg@10").get<double>() >= 0.0);
    CHECK(e.at("ndcg@10").get<double>() <= 1.0);
}
