// ssm/retrieval/jsonl.hpp — read JSON Lines files (one JSON object per line), with
// errors that name FILE:LINE.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"

namespace ssm {

/// Throws `ssm::Error` "FILE:LINE: message": the one shape of error for a malformed line
/// or field in a text file, so every reader reports a bad input the same way.
[[noreturn]] inline void fail_at_line(const std::filesystem::path& path, std::int64_t line,
                                      const std::string& message) {
    fail(path.string(), ":", line, ": ", message);
}

namespace detail {

/// True when `line` holds nothing but spaces, tabs, '\r', '\n', '\f', '\v'.
[[nodiscard]] inline bool is_blank(std::string_view line) noexcept {
    return line.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}

/// The whitespace-separated fields of `line` (views into it).
[[nodiscard]] inline std::vector<std::string_view> split_whitespace(std::string_view line) {
    std::vector<std::string_view> fields;
    constexpr std::string_view space = " \t\r\n\f\v";
    std::size_t pos = line.find_first_not_of(space);
    while (pos != std::string_view::npos) {
        const std::size_t end = line.find_first_of(space, pos);
        fields.push_back(line.substr(pos, end == std::string_view::npos ? end : end - pos));
        pos = line.find_first_not_of(space, end);
    }
    return fields;
}

/// Opens `path` for reading; a missing or unreadable file is an error naming it.
[[nodiscard]] inline std::ifstream open_text_file(const std::filesystem::path& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail(path.string(), ": no such file");
    if (std::filesystem::is_directory(path, ec))
        fail(path.string(), ": is a directory, not a file");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path.string(), ": cannot open: ", std::strerror(errno));
    return in;
}

/// Calls `f(std::string_view line, std::int64_t line_number)` for every line of `path`
/// (1-based numbers; a trailing '\r' and a leading UTF-8 byte-order mark removed).
template <class F>
void for_each_line(const std::filesystem::path& path, F&& f) {
    std::ifstream in = open_text_file(path);
    std::string line;
    std::int64_t number = 0;
    while (std::getline(in, line)) {
        ++number;
        std::string_view view = line;
        if (number == 1 && view.starts_with("\xEF\xBB\xBF")) view.remove_prefix(3);
        if (view.ends_with('\r')) view.remove_suffix(1);
        f(view, number);
    }
    if (in.bad()) fail(path.string(), ": read error after line ", number);
}

}  // namespace detail

/// Calls `f(const nlohmann::json& object, std::int64_t line_number)` (1-based) for each
/// non-blank line of the JSON Lines file `path`, in file order. A line that is not valid
/// JSON, or is valid JSON but not an object, throws `ssm::Error` "FILE:LINE: ..."; a
/// missing file throws an error naming it. Exceptions from `f` propagate unchanged.
template <class F>
void for_each_jsonl(const std::filesystem::path& path, F&& f) {
    detail::for_each_line(path, [&](std::string_view line, std::int64_t number) {
        if (detail::is_blank(line)) return;
        nlohmann::json object;
        try {
            object = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {  // parse_error, out_of_range (1e400), ...
            fail_at_line(path, number, std::string("not valid JSON: ") + e.what());
        }
        if (!object.is_object()) {
            fail_at_line(path, number,
                         std::string("expected a JSON object, got ") + object.type_name());
        }
        f(std::as_const(object), number);
    });
}

}  // namespace ssm
