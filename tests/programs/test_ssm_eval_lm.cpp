// ssm-eval-lm end to end: its bits per byte and perplexity equal a log-softmax over the
// library's own logits computed here window by window; --context-carry equals one window
// over the whole text; JSON Lines documents are evaluated apart; bad input gives one line.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/ssm.hpp"
#include "ssm/text/tokenizer.hpp"
#include "run_program.hpp"
#include "test_util.hpp"

namespace {

using Run = ssm::test::ProgramRun;

Run run(const std::string& args, bool merge_stderr = true) {
    return ssm::test::run_program(SSM_EVAL_LM_EXE, args, merge_stderr);
}

/// The program's --json object (stdout only).
nlohmann::json run_json(const std::string& args) {
    const Run r = run(args + " --json", false);
    INFO(args << "\n" << r.output);
    REQUIRE(r.status == 0);
    REQUIRE(ssm::test::count_lines(r.output) == 1);
    return nlohmann::json::parse(r.output);
}

/// What a set of windows should give.
struct Expected {
    double nats = 0;
    std::int64_t tokens = 0, bytes = 0;
    [[nodiscard]] double bits_per_byte() const { return nats / std::log(2.0) / static_cast<double>(bytes); }
};

/// Adds −ln p(ids[i] | ids[0..i)) for i ≥ 1 of one window run from the zero state: all
/// logits from the library's forward, the log-softmax written out here in long double.
/// `bytes(window)`: the bytes the window's tokens after the first stand for.
template <class M, class Bytes>
void add_window(const M& model, std::span<const std::int32_t> ids, Bytes&& bytes, Expected& e) {
    if (ids.size() < 2) return;
    ssm::Batch batch;
    batch.add(ids);
    const ssm::ForwardResult r = model.forward(batch, {ssm::Logits::All, false});
    for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
        const auto row = r.logits.row(static_cast<ssm::index>(i));
        long double mx = row(0);
        for (ssm::index v = 1; v < row.size(); ++v) mx = std::max<long double>(mx, row(v));
        long double sum = 0;
        for (ssm::index v = 0; v < row.size(); ++v) sum += std::exp(static_cast<long double>(row(v)) - mx);
        e.nats += static_cast<double>(mx + std::log(sum) - static_cast<long double>(row(ids[i + 1])));
        ++e.tokens;
    }
    e.bytes += bytes(ids);
}

/// Windows of `seq_len` tokens back to back (the last one shorter), each from zero state.
template <class M, class Bytes>
void add_windows(const M& model, const std::vector<std::int32_t>& ids, std::size_t seq_len, Bytes&& bytes,
                 Expected& e) {
    for (std::size_t b = 0; b < ids.size(); b += seq_len)
        add_window(model, std::span(ids).subspan(b, std::min(seq_len, ids.size() - b)), bytes, e);
}

std::vector<std::int32_t> byte_ids(const std::string& text) {
    std::vector<std::int32_t> ids;
    for (const char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
}

std::int64_t window_bytes(std::span<const std::int32_t> ids) { return static_cast<std::int64_t>(ids.size()) - 1; }

/// A few hundred bytes of text, multi-byte UTF-8 included.
std::string sample_text(int words, unsigned seed) {
    const char* vocab[] = {"the", "state", "space", "model", "scans", "a", "long", "sequence", "naïve", "café",
                           "—", "in", "linear", "time,", "and", "then", "stops.", "日本", "\n"};
    std::string s;
    unsigned x = seed;
    for (int i = 0; i < words; ++i) {
        x = x * 1103515245u + 12345u;
        if (!s.empty() && s.back() != '\n') s += ' ';
        s += vocab[(x >> 16) % (sizeof vocab / sizeof *vocab)];
    }
    return s;
}

void check_close(double got, double want) {
    INFO("got " << got << ", expected " << want);
    CHECK(std::abs(got - want) <= 1e-5 * std::abs(want));
}

}  // namespace

TEST_CASE("ssm-eval-lm: bits per byte of a byte-level model, window by window", "[ssm-eval-lm]") {
    const auto dir = ssm::test::data_dir() / "mambabyte-tiny";
    const auto model = ssm::MambaLM::load(dir);
    const auto scratch = ssm::test::scratch_dir("eval-lm");
    // Lengths: several full windows and a remainder; and 3 windows + 1 (a lone last byte
    // predicts nothing).
    const std::string long_text = sample_text(60, 7);
    const std::string texts[] = {long_text, long_text.substr(0, 3 * 64 + 1)};
    for (const auto& text : texts) {
        INFO(text.size() << " bytes");
        REQUIRE(text.size() > 3 * 64);
        const auto file = scratch / "text.txt";
        ssm::test::write_bytes(file, text);
        Expected e;
        add_windows(model, byte_ids(text), 64, window_bytes, e);
        const auto j = run_json("--model " + dir.string() + " --input " + file.string() + " --seq-len 64 --threads 2");
        check_close(j.at("bits_per_byte").get<double>(), e.bits_per_byte());
        CHECK(j.at("tokens").get<std::int64_t>() == e.tokens);
        CHECK(j.at("bytes").get<std::int64_t>() == e.bytes);
        CHECK(e.tokens == static_cast<std::int64_t>(text.size() - (text.size() + 63) / 64));
        CHECK(!j.contains("perplexity"));
        CHECK(j.at("seconds").get<double>() >= 0);
    }

    // --max-bytes: the first N bytes only.
    const auto file = scratch / "text.txt";
    ssm::test::write_bytes(file, long_text);
    Expected first;
    add_windows(model, byte_ids(long_text.substr(0, 100)), 64, window_bytes, first);
    const auto j = run_json("--model " + dir.string() + " --input " + file.string() + " --seq-len 64 --max-bytes 100");
    check_close(j.at("bits_per_byte").get<double>(), first.bits_per_byte());
    CHECK(j.at("bytes").get<std::int64_t>() == 98);

    // The summary line: "bits/byte X  (N bytes, S s, R bytes/s)".
    const Run human = run("--model " + dir.string() + " --input " + file.string() + " --seq-len 64", false);
    INFO(human.output);
    CHECK(human.status == 0);
    CHECK(ssm::test::count_lines(human.output) == 1);
    CHECK(human.output.rfind("bits/byte ", 0) == 0);
    CHECK(human.output.find(" bytes, ") != std::string::npos);
    CHECK(human.output.find(" bytes/s)") != std::string::npos);
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-eval-lm: --context-carry equals one window over the whole text", "[ssm-eval-lm]") {
    const auto dir = ssm::test::data_dir() / "mambabyte-tiny";
    const auto model = ssm::MambaLM::load(dir);
    const auto scratch = ssm::test::scratch_dir("eval-lm-carry");
    const std::string text = sample_text(50, 3);
    const auto file = scratch / "text.txt";
    ssm::test::write_bytes(file, text);
    const auto ids = byte_ids(text);
    Expected whole;
    add_window(model, ids, window_bytes, whole);
    REQUIRE(whole.tokens == static_cast<std::int64_t>(text.size()) - 1);

    const std::string base = "--model " + dir.string() + " --input " + file.string();
    for (const int seq_len : {2, 40, 64, static_cast<int>(text.size()) + 5}) {
        INFO("--seq-len " << seq_len);
        const auto j = run_json(base + " --context-carry --seq-len " + std::to_string(seq_len));
        check_close(j.at("bits_per_byte").get<double>(), whole.bits_per_byte());
        CHECK(j.at("tokens").get<std::int64_t>() == whole.tokens);
        CHECK(j.at("bytes").get<std::int64_t>() == whole.bytes);
    }
    // Without the carry each window starts over: fewer predictions, another value.
    Expected windows;
    add_windows(model, ids, 40, window_bytes, windows);
    const auto cut = run_json(base + " --seq-len 40");
    check_close(cut.at("bits_per_byte").get<double>(), windows.bits_per_byte());
    CHECK(cut.at("tokens").get<std::int64_t>() < whole.tokens);
    CHECK(std::abs(windows.bits_per_byte() - whole.bits_per_byte()) > 1e-4 * whole.bits_per_byte());
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-eval-lm: a tokenized model reports perplexity = exp(nats per token) and bits per byte",
          "[ssm-eval-lm]") {
    const auto dir = ssm::test::data_dir() / "mamba-tiny";
    const auto model = ssm::MambaLM::load(dir);
    const auto tok = ssm::Tokenizer::for_checkpoint(dir, model.vocab_size());
    REQUIRE(!tok.is_bytes());
    const auto scratch = ssm::test::scratch_dir("eval-lm-bpe");
    const std::string text = sample_text(120, 11);
    const auto file = scratch / "text.txt";
    ssm::test::write_bytes(file, text);
    const auto ids = tok.encode(text);
    REQUIRE(ids.size() > 2 * 32);
    // Bytes a window's predicted tokens stand for: the window's text less its first token's.
    const auto bytes = [&](std::span<const std::int32_t> w) {
        return static_cast<std::int64_t>(tok.decode(w).size() - tok.decode(w.first(1)).size());
    };
    const std::string base = "--model " + dir.string() + " --input " + file.string();

    Expected e;
    add_windows(model, ids, 32, bytes, e);
    const auto j = run_json(base + " --seq-len 32");
    check_close(j.at("perplexity").get<double>(), std::exp(e.nats / static_cast<double>(e.tokens)));
    check_close(j.at("bits_per_byte").get<double>(), e.bits_per_byte());
    CHECK(j.at("tokens").get<std::int64_t>() == e.tokens);
    CHECK(j.at("bytes").get<std::int64_t>() == e.bytes);
    CHECK(e.tokens == static_cast<std::int64_t>(ids.size() - (ids.size() + 31) / 32));

    Expected whole;
    add_window(model, ids, bytes, whole);
    const auto carried = run_json(base + " --seq-len 16 --context-carry");
    check_close(carried.at("perplexity").get<double>(), std::exp(whole.nats / static_cast<double>(whole.tokens)));
    check_close(carried.at("bits_per_byte").get<double>(), whole.bits_per_byte());
    CHECK(carried.at("bytes").get<std::int64_t>() == static_cast<std::int64_t>(text.size() - tok.decode(std::span(ids).first(1)).size()));

    const Run human = run(base + " --seq-len 32", false);
    INFO(human.output);
    CHECK(human.status == 0);
    CHECK(ssm::test::count_lines(human.output) == 1);
    CHECK(human.output.rfind("perplexity ", 0) == 0);
    CHECK(human.output.find(" bits/byte ") != std::string::npos);
    CHECK(human.output.find(" tokens, ") != std::string::npos);
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-eval-lm: JSON Lines documents are evaluated apart", "[ssm-eval-lm]") {
    const auto dir = ssm::test::data_dir() / "mambabyte-tiny";
    const auto model = ssm::MambaLM::load(dir);
    const auto scratch = ssm::test::scratch_dir("eval-lm-jsonl");
    const std::vector<std::string> docs = {sample_text(20, 1), "x", "", sample_text(9, 2), sample_text(30, 5)};
    std::string jsonl;
    for (const auto& d : docs) jsonl += nlohmann::json{{"text", d}, {"id", 1}}.dump() + "\n";
    jsonl += "  \n";  // a blank line is skipped
    const auto file = scratch / "docs.jsonl";
    ssm::test::write_bytes(file, jsonl);
    const std::string base = "--model " + dir.string() + " --input " + file.string() + " --format jsonl";

    Expected windows, whole;
    for (const auto& d : docs) {
        add_windows(model, byte_ids(d), 16, window_bytes, windows);
        add_window(model, byte_ids(d), window_bytes, whole);
    }
    const auto j = run_json(base + " --seq-len 16");
    check_close(j.at("bits_per_byte").get<double>(), windows.bits_per_byte());
    CHECK(j.at("tokens").get<std::int64_t>() == windows.tokens);
    const auto c = run_json(base + " --seq-len 16 --context-carry");
    check_close(c.at("bits_per_byte").get<double>(), whole.bits_per_byte());
    CHECK(c.at("tokens").get<std::int64_t>() == whole.tokens);

    // The file as one text is another evaluation: the documents' boundaries matter.
    const auto as_text = run_json("--model " + dir.string() + " --input " + file.string() + " --seq-len 16");
    CHECK(as_text.at("bytes").get<std::int64_t>() > windows.bytes);
    std::filesystem::remove_all(scratch);
}

TEST_CASE("ssm-eval-lm: --help, and one clear line with exit != 0 on bad input", "[ssm-eval-lm]") {
    const auto byte_model = (ssm::test::data_dir() / "mambabyte-tiny").string();
    const auto bpe_model = (ssm::test::data_dir() / "mamba-tiny").string();
    const auto scratch = ssm::test::scratch_dir("eval-lm-bad");
    const auto expect_error = [](const Run& r, int status, const std::string& needle) {
        ssm::test::check_one_line_error(r, "ssm-eval-lm", status, needle);
    };
    const Run help = run("--help");
    CHECK(help.status == 0);
    CHECK(help.output.find("usage: ssm-eval-lm") != std::string::npos);

    const auto write = [&](const std::string& name, const std::string& bytes) {
        const auto p = scratch / name;
        ssm::test::write_bytes(p, bytes);
        return p.string();
    };
    const auto good = write("good.txt", "some text to evaluate");
    const auto m = "--model " + byte_model + " --input ";

    expect_error(run(m + "/nonexistent/input.txt"), 1, "/nonexistent/input.txt");
    expect_error(run(m + scratch.string()), 1, "directory");
    expect_error(run(m + write("empty.txt", "")), 1, "nothing to evaluate");
    expect_error(run(m + write("one.txt", "a")), 1, "nothing to evaluate");
    expect_error(run(m + write("short.jsonl", "{\"text\": \"a\"}\n{\"text\": \"\"}\n") + " --format jsonl"), 1,
                 "nothing to evaluate");
    expect_error(run(m + write("no-text.jsonl", "{\"text\": \"abc\"}\n{\"body\": \"abc\"}\n") + " --format jsonl"), 1,
                 "no-text.jsonl:2: no 'text' field");
    expect_error(run(m + write("bad.jsonl", "{\"text\": \"abc\"}\n\n{\"text\": \"ab\n") + " --format jsonl"), 1,
                 "bad.jsonl:3: not valid JSON");
    expect_error(run(m + write("num.jsonl", "{\"text\": 5}\n") + " --format jsonl"), 1,
                 "num.jsonl:1: 'text' must be a string");
    expect_error(run(m + write("array.jsonl", "[1, 2]\n") + " --format jsonl"), 1, "array.jsonl:1");
    expect_error(run(m + good + " --seq-len 1"), 2, "--seq-len");
    expect_error(run(m + good + " --seq-len x"), 2, "--seq-len");
    expect_error(run(m + good + " --format xml"), 2, "--format");
    expect_error(run(m + good + " --max-bytes -1"), 2, "--max-bytes");
    expect_error(run("--model " + byte_model), 2, "--input");
    expect_error(run("--input " + good), 2, "--model");
    expect_error(run("--model /nonexistent/model --input " + good), 1, "/nonexistent/model");
    // A tokenized model needs UTF-8: the file is named.
    expect_error(run("--model " + bpe_model + " --input " + write("latin1.txt", "caf\xE9 au lait")), 1, "latin1.txt");
    expect_error(run("--model " + bpe_model + " --input " + write("latin1.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"caf\xE9\"}\n") +
                     " --format jsonl"),
                 1, "latin1.jsonl:2");
    // No tokenizer.json and a vocabulary that is not bytes: the text cannot be tokenized.
    expect_error(run("--model " + (ssm::test::data_dir() / "samba-tiny").string() + " --input " + good), 1,
                 "tokenizer.json");
    std::filesystem::remove_all(scratch);
}
