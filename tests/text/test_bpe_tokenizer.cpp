// Tests for ssm/text/bpe_tokenizer.hpp against HuggingFace `tokenizers` 0.23.3: the ids
// of tests/data/tokenizer/cases*.jsonl were written by `Tokenizer.encode(text,
// add_special_tokens=False)` and the decoded text by `Tokenizer.decode(ids)` (see
// generate_tokenizer_data.py). Also: the GPT-2 pre-tokenizer on hand-checked splits, both
// merge formats, the vocabulary queries, and an ssm::Error naming the file for every
// malformed or unsupported tokenizer.json.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "ssm/text/bpe_tokenizer.hpp"
#include "ssm/text/byte_tokenizer.hpp"
#include "test_util.hpp"

namespace test_bpe_tokenizer {

namespace {

namespace fs = std::filesystem;

fs::path tokenizer_dir() {
    return ssm::test::data_dir() / "tokenizer";
}

struct Case {
    std::string text;
    std::vector<std::int32_t> ids;
    std::string decoded;  // what HF's decode gives (the text after NFC; lossy UTF-8)
};

Case case_from_json(const nlohmann::json& j) {
    Case c;
    c.text = j.at("text").get<std::string>();
    c.ids = j.at("ids").get<std::vector<std::int32_t>>();
    c.decoded = j.contains("decoded") ? j.at("decoded").get<std::string>() : c.text;
    return c;
}

std::vector<Case> read_cases(const fs::path& file) {
    std::ifstream in(file);
    REQUIRE(in.good());
    std::vector<Case> cases;
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty()) cases.push_back(case_from_json(nlohmann::json::parse(line)));
    }
    return cases;
}

/// `s` with everything outside printable ASCII written as \u{...}, for messages.
std::string escaped(std::string_view s) {
    std::ostringstream os;
    for (const char32_t c : ssm::unicode::decode_utf8(s)) {
        if (c >= 0x20 && c < 0x7F) {
            os << static_cast<char>(c);
        } else {
            os << "\\u{" << std::hex << static_cast<std::uint32_t>(c) << std::dec << "}";
        }
    }
    return os.str();
}

std::string ids_text(const std::vector<std::int32_t>& ids) {
    std::ostringstream os;
    for (std::size_t i = 0; i < ids.size(); ++i) os << (i ? "," : "") << ids[i];
    return os.str();
}

/// Checks every case; reports the first few differences in full.
void check_cases(const ssm::BpeTokenizer& tok, const std::vector<Case>& cases) {
    int encode_mismatches = 0, decode_mismatches = 0, stream_mismatches = 0;
    for (const Case& c : cases) {
        const auto ids = tok.encode(c.text);
        if (ids != c.ids && ++encode_mismatches <= 5) {
            FAIL_CHECK("encode(\"" << escaped(c.text) << "\")\n  got      " << ids_text(ids)
                                   << "\n  expected " << ids_text(c.ids));
        }
        // HF ends decoding with from_utf8_lossy; decode gives the raw bytes, and
        // printable_utf8 does the same replacement.
        const std::string text = ssm::printable_utf8(tok.decode(c.ids));
        if (text != c.decoded && ++decode_mismatches <= 5) {
            FAIL_CHECK("decode(ids of \"" << escaped(c.text) << "\") gave \"" << escaped(text)
                                          << "\", expected \"" << escaped(c.decoded) << "\"");
        }
        // Streaming: the first token decoded, then each later token's bytes, is the text.
        if (!c.ids.empty()) {
            std::string streamed = tok.decode(std::span(c.ids).first(1));
            for (std::size_t i = 1; i < c.ids.size(); ++i) streamed += tok.token_bytes(c.ids[i]);
            if (streamed != tok.decode(c.ids) && ++stream_mismatches <= 5) {
                FAIL_CHECK("token by token, the ids of \"" << escaped(c.text) << "\" gave \""
                                                          << escaped(ssm::printable_utf8(streamed)) << "\"");
            }
        }
    }
    INFO(cases.size() << " cases");
    CHECK(encode_mismatches == 0);
    CHECK(decode_mismatches == 0);
    CHECK(stream_mismatches == 0);
}

nlohmann::json read_json(const fs::path& file) {
    std::ifstream in(file);
    return nlohmann::json::parse(in);
}

/// Writes `j` as `name` in a fresh scratch folder; returns the file.
fs::path write_json(const nlohmann::json& j, const std::string& name) {
    const auto file = ssm::test::scratch_dir("bpe") / name;
    ssm::test::write_bytes(file, j.dump());
    return file;
}

/// The message of the ssm::Error that loading `file` throws; checks that it names the file.
std::string load_error(const fs::path& file) {
    const std::string msg = ssm::test::error_of([&] { (void)ssm::BpeTokenizer::load(file); });
    INFO(msg);
    CHECK(msg.find(file.string()) != std::string::npos);
    fs::remove_all(file.parent_path());
    return msg;
}

std::vector<std::string> pieces(std::string_view text) {
    std::vector<std::string> out;
    for (const auto p : ssm::gpt2_pre_tokenize(text)) out.emplace_back(p);
    return out;
}

using Pieces = std::vector<std::string>;

}  // namespace

TEST_CASE("GPT-2 pre-tokenizer: the regex's splits", "[text][bpe]") {
    CHECK(pieces("") == Pieces{});
    CHECK(pieces("Hello world") == Pieces{"Hello", " world"});
    CHECK(pieces("a   b") == Pieces{"a", "  ", " b"});  // \s+(?!\S) leaves one space
    CHECK(pieces("a \n b") == Pieces{"a", " \n", " b"});
    CHECK(pieces("a\n\nb") == Pieces{"a", "\n", "\n", "b"});  // \s+(?!\S), then \s+
    CHECK(pieces("trailing   ") == Pieces{"trailing", "   "});
    CHECK(pieces("it's I'M we'll") == Pieces{"it", "'s", " I", "'", "M", " we", "'ll"});
    CHECK(pieces("x'sy 's") == Pieces{"x", "'s", "y", " '", "s"});
    CHECK(pieces("abc123 456!!? ?") == Pieces{"abc", "123", " 456", "!!?", " ?"});
    CHECK(pieces(" \xC2\xA0x") == Pieces{" ", "\xC2\xA0", "x"});  // NBSP is \s but not ' '
    CHECK(pieces("\xC2\xA0x") == Pieces{"\xC2\xA0", "x"});
    CHECK(pieces("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87") ==
          Pieces{"caf\xC3\xA9", " \xE4\xB8\xAD\xE6\x96\x87"});
    // A combining mark is not a letter: it ends the letter run.
    CHECK(pieces("e\xCC\x81t") == Pieces{"e", "\xCC\x81", "t"});
}

TEST_CASE("BPE: tokenizer.json (ByteLevel) encodes every case exactly as HF tokenizers",
          "[text][bpe]") {
    const auto tok = ssm::BpeTokenizer::load(tokenizer_dir() / "tokenizer.json");
    const auto cases = read_cases(tokenizer_dir() / "cases.jsonl");
    REQUIRE(cases.size() >= 3000);
    check_cases(tok, cases);
}

TEST_CASE("BPE: tokenizer_split.json (Sequence[Split, ByteLevel], added tokens with flags)",
          "[text][bpe]") {
    const auto tok = ssm::BpeTokenizer::load(tokenizer_dir() / "tokenizer_split.json");
    const auto cases = read_cases(tokenizer_dir() / "cases_split.jsonl");
    REQUIRE(cases.size() >= 300);
    check_cases(tok, cases);
}

TEST_CASE("BPE: option variants (variants.json) encode exactly as HF tokenizers", "[text][bpe]") {
    // ByteLevel with add_prefix_space, ignore_merges, unk_token (fused or not, or none),
    // byte_fallback, continuing_subword_prefix + end_of_word_suffix, literal Splits with
    // each behaviour: small tokenizers, each with HF's ids for the same 51 texts.
    const auto base = read_json(tokenizer_dir() / "tokenizer.json");
    const auto variants = read_json(tokenizer_dir() / "variants.json");
    REQUIRE(variants.size() >= 13);
    for (const auto& v : variants) {
        const std::string name = v.at("name").get<std::string>();
        nlohmann::json spec;
        if (v.contains("tokenizer")) {
            spec = v.at("tokenizer");
        } else {  // each top-level key replaced, the model's keys one by one
            spec = base;
            for (const auto& [key, value] : v.at("patch").items()) {
                if (key == "model") {
                    for (const auto& [model_key, model_value] : value.items()) {
                        spec["model"][model_key] = model_value;
                    }
                } else {
                    spec[key] = value;
                }
            }
        }
        std::vector<Case> cases;
        for (const auto& c : v.at("cases")) cases.push_back(case_from_json(c));
        INFO("variant " << name);
        check_cases(ssm::BpeTokenizer::from_json(spec, name), cases);
    }
}

TEST_CASE("BPE: tokenizer_llama.json (LLaMA kind: Prepend/Replace \u2581, byte fallback) as HF tokenizers",
          "[text][bpe]") {
    const auto tok = ssm::BpeTokenizer::load(tokenizer_dir() / "tokenizer_llama.json");
    CHECK(tok.vocab_size() == 600);
    CHECK(tok.token_to_id("<0x41>") == 3 + 0x41);
    const auto cases = read_cases(tokenizer_dir() / "cases_llama.jsonl");
    REQUIRE(cases.size() >= 3000);
    check_cases(tok, cases);
    // The decoder's Strip takes the space the normalizer put before the first word only.
    const auto ids = tok.encode("Hello world");
    CHECK(tok.decode(ids) == "Hello world");
    CHECK(tok.token_bytes(ids.at(0)).front() == ' ');
}

TEST_CASE("BPE: LLaMA-kind variants (Metaspace forms, no decoder, per-token Strip) as HF tokenizers",
          "[text][bpe]") {
    const auto base = read_json(tokenizer_dir() / "tokenizer_llama.json");
    const auto variants = read_json(tokenizer_dir() / "variants_llama.json");
    REQUIRE(variants.size() >= 7);
    for (const auto& v : variants) {
        nlohmann::json spec = base;
        for (const auto& [key, value] : v.at("patch").items()) {
            if (key == "model") {
                for (const auto& [model_key, model_value] : value.items()) spec["model"][model_key] = model_value;
            } else {
                spec[key] = value;
            }
        }
        std::vector<Case> cases;
        for (const auto& c : v.at("cases")) cases.push_back(case_from_json(c));
        const std::string name = v.at("name").get<std::string>();
        INFO("variant " << name);
        check_cases(ssm::BpeTokenizer::from_json(spec, name), cases);
    }
}

TEST_CASE("BPE: vocabulary queries and special tokens", "[text][bpe]") {
    const auto tok = ssm::BpeTokenizer::load(tokenizer_dir() / "tokenizer.json");
    CHECK(tok.vocab_size() == 1000);
    CHECK(tok.token_to_id("<|endoftext|>") == 0);
    CHECK(tok.token_to_id("<|padding|>") == 1);
    CHECK(tok.token_to_id("\xC4\xA0") == tok.encode(" ").at(0));  // "Ġ" is the space byte
    CHECK(tok.token_to_id("no such token") == std::nullopt);
    CHECK(tok.id_to_token(0) == "<|endoftext|>");
    CHECK(tok.id_to_token(1000) == std::nullopt);
    CHECK(tok.id_to_token(-1) == std::nullopt);
    CHECK(tok.is_special(0));
    CHECK_FALSE(tok.is_special(500));

    const auto ids = tok.encode("Hi<|endoftext|>there");
    REQUIRE(ids.size() >= 3);
    CHECK(tok.decode(ids) == "Hi<|endoftext|>there");
    CHECK(tok.decode(ids, /*skip_special=*/true) == "Hithere");

    // Bytes of one character split over two ids decode to partial UTF-8.
    const auto euro = tok.encode("\xE2\x82\xAC");
    std::string joined;
    for (const auto id : euro) joined += tok.decode(std::vector<std::int32_t>{id});
    CHECK(joined == "\xE2\x82\xAC");

    const std::vector<std::int32_t> bad{5, 1000};
    const std::string msg = ssm::test::error_of([&] { (void)tok.decode(bad); });
    CHECK(msg.find("1000") != std::string::npos);
    CHECK(msg.find("position 1") != std::string::npos);
    const std::vector<std::int32_t> negative{-3};
    CHECK(ssm::test::error_of([&] { (void)tok.decode(negative); }).find("-3") != std::string::npos);

    // Text that is not UTF-8 cannot be what HF encodes: an error, not a guess.
    const std::string invalid = ssm::test::error_of([&] { (void)tok.encode("ab\xFF"); });
    CHECK(invalid.find("UTF-8") != std::string::npos);
    CHECK(invalid.find("offset 2") != std::string::npos);
}

TEST_CASE("BPE: merges as \"a b\" strings and as [a, b] pairs give the same ids", "[text][bpe]") {
    auto j = read_json(tokenizer_dir() / "tokenizer.json");
    REQUIRE(j["model"]["merges"][0].is_array());
    const auto pairs = ssm::BpeTokenizer::from_json(j, "pairs");
    for (auto& m : j["model"]["merges"]) {
        m = m[0].get<std::string>() + " " + m[1].get<std::string>();
    }
    j["model"]["merges"].insert(j["model"]["merges"].begin(), "#version: 0.2");
    const auto strings = ssm::BpeTokenizer::from_json(j, "strings");
    for (const Case& c : read_cases(tokenizer_dir() / "cases.jsonl")) {
        if (pairs.encode(c.text) != strings.encode(c.text)) FAIL("differ on " << escaped(c.text));
    }
}

TEST_CASE("BPE: a long word merges correctly and a large text encodes fast", "[text][bpe]") {
    const auto tok = ssm::BpeTokenizer::load(tokenizer_dir() / "tokenizer.json");
    // One 180,000-letter word: heap merging, no quadratic blow-up.
    std::string word;
    while (word.size() < 180000) word += "selectivestatespacemodel";
    const auto ids = tok.encode(word);
    CHECK(tok.decode(ids) == word);
    CHECK(ids.size() < word.size() / 2);

    // About 1 MB of mixed prose, code and other scripts.
    std::string text;
    const auto cases = read_cases(tokenizer_dir() / "cases.jsonl");
    while (text.size() < (1u << 20)) {
        for (const Case& c : cases) (text += c.text) += '\n';
    }
    const auto start = std::chrono::steady_clock::now();
    const auto big = tok.encode(text);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(text.size() << " bytes -> " << big.size() << " ids in " << seconds << " s");
    CHECK(tok.decode(big) == ssm::unicode::nfc(text));
    CHECK(seconds < 20.0);  // generous: sanitizer builds; -O2 takes well under a second
}

TEST_CASE("BPE: unreadable, malformed and unsupported files name the file", "[text][bpe]") {
    const auto good = read_json(tokenizer_dir() / "tokenizer.json");
    const auto scratch = ssm::test::scratch_dir("bpe-missing");
    CHECK(load_error(scratch / "tokenizer.json").find("cannot open") != std::string::npos);

    {
        const auto file = ssm::test::scratch_dir("bpe-dir");
        const std::string msg = ssm::test::error_of([&] { (void)ssm::BpeTokenizer::load(file); });
        CHECK(msg.find(file.string()) != std::string::npos);
        fs::remove_all(file);
    }
    {
        const auto file = ssm::test::scratch_dir("bpe-text") / "tokenizer.json";
        ssm::test::write_bytes(file, "{\"model\": {\"type\": \"BPE\", ");
        CHECK(load_error(file).find("not valid JSON") != std::string::npos);
    }
    {
        const auto file = ssm::test::scratch_dir("bpe-empty") / "tokenizer.json";
        ssm::test::write_bytes(file, "");
        CHECK(load_error(file).find("not valid JSON") != std::string::npos);
    }
    CHECK(load_error(write_json(nlohmann::json::array(), "array.json")).find("not a JSON object") !=
          std::string::npos);
    {
        auto j = good;
        j.erase("model");
        CHECK(load_error(write_json(j, "no_model.json")).find("model") != std::string::npos);
    }
    {
        auto j = good;
        j["model"] = {
            {"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", {{"[UNK]", 0}, {"a", 1}}}};
        CHECK(load_error(write_json(j, "wordpiece.json")).find("WordPiece") != std::string::npos);
    }
    {
        auto j = good;
        j["model"] = {{"type", "Unigram"}, {"vocab", nlohmann::json::array()}};
        CHECK(load_error(write_json(j, "unigram.json")).find("Unigram") != std::string::npos);
    }
    {
        auto j = good;
        j["model"]["merges"].push_back(nlohmann::json::array({"\xC4\xA0", "zzzz"}));
        const std::string msg = load_error(write_json(j, "unknown_merge.json"));
        CHECK(msg.find("zzzz") != std::string::npos);
        CHECK(msg.find("not in the vocabulary") != std::string::npos);
    }
    {
        auto j = good;
        j["model"]["merges"].push_back("only-one-token");
        CHECK(load_error(write_json(j, "bad_merge.json")).find("only-one-token") !=
              std::string::npos);
    }
    {
        auto j = good;
        j["model"]["merges"].push_back(42);
        CHECK(load_error(write_json(j, "merge_number.json")).find("merge") != std::string::npos);
    }
    {
        auto j = good;
        j["model"]["vocab"]["x"] = "seven";
        CHECK(load_error(write_json(j, "vocab_string.json")).find("\"x\"") != std::string::npos);
    }
    {
        auto j = good;
        j["model"]["vocab"] = nlohmann::json::array();
        CHECK(load_error(write_json(j, "vocab_array.json")).find("vocab") != std::string::npos);
    }
    {
        auto j = good;
        j["model"]["dropout"] = 0.1;
        CHECK(load_error(write_json(j, "dropout.json")).find("dropout") != std::string::npos);
    }
    {
        auto j = good;
        j["normalizer"] = {{"type", "NFKC"}};
        CHECK(load_error(write_json(j, "nfkc.json")).find("NFKC") != std::string::npos);
    }
    {
        auto j = good;
        j["pre_tokenizer"] = {{"type", "Sequence"},
                              {"pretokenizers",
                               {{{"type", "Metaspace"}, {"replacement", "_"}},
                                {{"type", "ByteLevel"}, {"add_prefix_space", false}}}}};
        CHECK(load_error(write_json(j, "metaspace.json")).find("Metaspace") != std::string::npos);
    }
    {
        auto j = good;
        j["pre_tokenizer"] = {{"type", "ByteLevel"}};
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {j["pre_tokenizer"], j["pre_tokenizer"]}}};
        CHECK(load_error(write_json(j, "two_bytelevel.json")).find("ByteLevel") != std::string::npos);
    }
    const auto llama = read_json(tokenizer_dir() / "tokenizer_llama.json");
    {
        auto j = llama;
        j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", " +"}};
        CHECK(load_error(write_json(j, "replace_regex.json")).find("regex") != std::string::npos);
    }
    {
        auto j = llama;
        j["normalizer"]["normalizers"][0].erase("prepend");
        CHECK(load_error(write_json(j, "prepend.json")).find("Prepend") != std::string::npos);
    }
    {
        auto j = llama;
        j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "sometimes"}};
        CHECK(load_error(write_json(j, "scheme.json")).find("sometimes") != std::string::npos);
    }
    for (const char* replacement : {"", "ab"}) {
        auto j = llama;
        j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", replacement}};
        CHECK(load_error(write_json(j, "replacement.json")).find("one character") != std::string::npos);
    }
    {
        auto j = llama;
        j["decoder"]["decoders"][3]["start"] = -1;
        CHECK(load_error(write_json(j, "strip.json")).find("Strip") != std::string::npos);
    }
    {
        auto j = llama;
        j["decoder"]["decoders"][0]["content"] = nullptr;
        CHECK(load_error(write_json(j, "replace_content.json")).find("content") != std::string::npos);
    }
    {
        auto j = good;
        j["pre_tokenizer"] = {{"type", "Sequence"},
                              {"pretokenizers",
                               {{{"type", "Split"},
                                 {"pattern", {{"Regex", "\\d+"}}},
                                 {"behavior", "Isolated"},
                                 {"invert", false}},
                                {{"type", "ByteLevel"}, {"add_prefix_space", false}}}}};
        CHECK(load_error(write_json(j, "regex.json")).find("\\d+") != std::string::npos);
    }
    {
        auto j = good;
        j["decoder"] = {{"type", "WordPiece"}};
        CHECK(load_error(write_json(j, "decoder.json")).find("decoder") != std::string::npos);
    }
    {
        auto j = good;
        j["added_tokens"][0].erase("id");
        CHECK(load_error(write_json(j, "added.json")).find("added_tokens[0]") != std::string::npos);
    }
    fs::remove_all(scratch);
}

// Regression: a normalized added token whose content normalizes to "" (here a Replace
// normalizer deletes it) made an empty pattern, which "matched" a NUL byte without
// advancing: split_on_added_tokens looped forever adding empty pieces (bad_alloc after
// 14 s). An empty pattern can match nothing; the ids are those of HF tokenizers 0.23.3
// for this tokenizer.json, with or without the added token.
TEST_CASE("BPE: an added token that normalizes to nothing matches nothing", "[text][bpe]") {
    auto j = read_json(tokenizer_dir() / "tokenizer.json");
    j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "Z"}}}, {"content", ""}};
    const auto plain = ssm::BpeTokenizer::load(write_json(j, "tokenizer.json"));
    j["added_tokens"].push_back({{"id", j["model"]["vocab"].size() + 10}, {"content", "Z"}, {"single_word", false},
                                 {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", false}});
    const auto tok = ssm::BpeTokenizer::load(write_json(j, "tokenizer.json"));
    using namespace std::string_literals;
    const std::string text = "a\0bZc"s;
    CHECK(tok.encode(text) == std::vector<std::int32_t>{66, 190, 67, 68});
    CHECK(tok.encode(text) == plain.encode(text));
    CHECK(tok.encode("\0\0\0"s) == plain.encode("\0\0\0"s));
}

// Regression: NFC's canonical ordering was quadratic on long runs of combining marks of
// alternating class (320 KB of text took 35 s in ssm-embed); see also test_unicode.cpp.
// The stable canonical order puts the class-220 marks (U+0323) before the class-230 ones
// (U+0301), each in text order; 'q' composes with neither.
TEST_CASE("BPE: a long run of combining marks encodes fast under an NFC normalizer", "[text][bpe]") {
    const std::size_t n = 100000;  // 200,000 marks, 400 KB of UTF-8
    std::u32string text = U"q", expect = U"q";
    for (std::size_t i = 0; i < n; ++i) text += U"\u0301\u0323";
    expect.append(n, U'\u0323');
    expect.append(n, U'\u0301');
    auto j = read_json(tokenizer_dir() / "tokenizer.json");
    j["normalizer"] = {{"type", "NFC"}};
    const auto tok = ssm::BpeTokenizer::load(write_json(j, "tokenizer.json"));
    const std::string utf8 = ssm::unicode::encode_utf8(text);
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.encode(utf8);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(seconds << " s to encode");
    CHECK(tok.decode(ids) == ssm::unicode::encode_utf8(expect));
    CHECK(seconds < 20.0);  // generous (sanitizers); -O2 takes well under a second
}

// Regression: error messages printed the offending value with nlohmann's recursive dump(),
// so a value nested 200,000 deep crashed the program instead of giving the error.
TEST_CASE("BPE: a deeply nested value in an error message is shown without recursion", "[text][bpe]") {
    const std::string good = read_json(tokenizer_dir() / "tokenizer.json").dump();
    const std::string deep = std::string(200000, '[') + std::string(200000, ']');
    for (const std::string key : {"\"dropout\":null", "\"fuse_unk\":false", "\"unk_token\":null"}) {
        std::string text = good;
        const auto at = text.find(key);
        REQUIRE(at != std::string::npos);
        text.replace(at, key.size(), key.substr(0, key.find(':') + 1) + deep);
        const auto file = ssm::test::scratch_dir("bpe-deep") / "tokenizer.json";
        ssm::test::write_bytes(file, text);
        const std::string msg = load_error(file);
        CHECK(msg.find(key.substr(1, key.find(':') - 2)) != std::string::npos);
        CHECK(msg.size() < 1000);
    }
}

}  // namespace test_bpe_tokenizer
