// JSON Lines reading: objects and their 1-based line numbers, blank lines skipped, and
// errors that name FILE:LINE for malformed lines (checked against hand-written files).
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "ssm/retrieval/jsonl.hpp"
#include "test_util.hpp"

namespace test_jsonl {

namespace fs = std::filesystem;

namespace {

/// (value of "a", line number) for every object of `path`.
std::vector<std::pair<int, std::int64_t>> read_a(const fs::path& path) {
    std::vector<std::pair<int, std::int64_t>> seen;
    ssm::for_each_jsonl(path, [&](const nlohmann::json& obj, std::int64_t line) {
        seen.emplace_back(obj.at("a").get<int>(), line);
    });
    return seen;
}

bool contains(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("objects come with their line numbers; blank lines are skipped", "[jsonl]") {
    const auto dir = ssm::test::scratch_dir("jsonl");
    const auto path = dir / "x.jsonl";
    ssm::test::write_bytes(path,
                           "{\"a\": 1}\n\n   \n{\"a\": 2}\r\n\t\r\n{\"a\": 3, \"b\": [1, 2]}");
    const std::vector<std::pair<int, std::int64_t>> expected = {{1, 1}, {2, 4}, {3, 6}};
    CHECK(read_a(path) == expected);

    // A UTF-8 byte-order mark before the first object, CRLF line ends, a final newline.
    ssm::test::write_bytes(path, "\xEF\xBB\xBF{\"a\": 7}\r\n{\"a\": 8}\r\n");
    const std::vector<std::pair<int, std::int64_t>> with_bom = {{7, 1}, {8, 2}};
    CHECK(read_a(path) == with_bom);

    ssm::test::write_bytes(path, "");
    CHECK(read_a(path).empty());
    ssm::test::write_bytes(path, "\n \n\n");
    CHECK(read_a(path).empty());
    fs::remove_all(dir);
}

TEST_CASE("a line that is not JSON, or not an object, is an error naming FILE:LINE", "[jsonl]") {
    const auto dir = ssm::test::scratch_dir("jsonl-bad");
    const auto path = dir / "bad.jsonl";
    const auto expect = [&](const std::string& bytes, const std::string& where,
                            const std::string& what) {
        ssm::test::write_bytes(path, bytes);
        const auto msg = ssm::test::error_of([&] { (void)read_a(path); });
        INFO(msg);
        CHECK(contains(msg, path.string() + ":" + where + ":"));
        CHECK(contains(msg, what));
    };
    expect("{\"a\": 1}\n{\"a\": \n", "2", "not valid JSON");
    expect("{\"a\": 1}\n\n{\"a\": 2} trailing\n", "3", "not valid JSON");
    expect("\n\n\n[1, 2]\n", "4", "got array");
    expect("{\"a\": 1}\n\"text\"\n", "2", "got string");
    expect("42\n", "1", "got number");
    expect("{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n{\"a\": 4}\n{\"a\": 5}\n{'a': 6}\n", "6",
           "not valid JSON");
    // Regression: a number out of double range made nlohmann throw out_of_range, which
    // escaped as a bare library message with no file or line (only parse_error was caught).
    expect("{\"a\": 1}\n{\"a\": 1e400}\n", "2", "not valid JSON");
    expect("{\"a\": -1e400}\n", "1", "number overflow");
    fs::remove_all(dir);
}

TEST_CASE("a missing file is an error naming it; the callback's errors pass through", "[jsonl]") {
    const auto dir = ssm::test::scratch_dir("jsonl-missing");
    const auto missing = dir / "absent.jsonl";
    auto msg = ssm::test::error_of([&] { (void)read_a(missing); });
    CHECK(contains(msg, missing.string()));
    msg = ssm::test::error_of([&] { (void)read_a(dir); });
    CHECK(contains(msg, dir.string()));

    const auto path = dir / "fields.jsonl";
    ssm::test::write_bytes(path, "{\"a\": 1}\n\n{\"b\": 2}\n");
    msg = ssm::test::error_of([&] {
        ssm::for_each_jsonl(path, [&](const nlohmann::json& obj, std::int64_t line) {
            if (!obj.contains("a")) ssm::fail_at_line(path, line, "missing \"a\"");
        });
    });
    CHECK(msg == path.string() + ":3: missing \"a\"");
    fs::remove_all(dir);
}

TEST_CASE("fail_at_line formats FILE:LINE: message", "[jsonl]") {
    const auto msg =
        ssm::test::error_of([] { ssm::fail_at_line("dir/data.jsonl", 17, "bad \"text\""); });
    CHECK(msg == "dir/data.jsonl:17: bad \"text\"");
}

}  // namespace test_jsonl
