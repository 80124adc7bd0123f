// tests/fuzz/fuzz_util.hpp — what every libFuzzer harness shares. The readers under test
// take paths, so each input is written to a file in a scratch folder of this process.
// The only acceptable way for a reader to refuse bytes is an `ssm::Error`: anything else
// (another exception, a crash, a sanitizer report, a hang, an allocation past
// -rss_limit_mb) ends the run as a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"

namespace ssm::fuzz {

/// This process's scratch folder (created on first use, removed at exit).
inline const std::filesystem::path& scratch() {
    struct Dir {
        std::filesystem::path path;
        Dir() {
            path = std::filesystem::temp_directory_path() / ("ssm-fuzz-" + std::to_string(::getpid()));
            std::filesystem::create_directories(path);
        }
        ~Dir() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    };
    static const Dir dir;
    return dir.path;
}

/// Writes `bytes` to `path` (replacing it).
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Writes the fuzzer's input to scratch()/name and returns the path.
inline std::filesystem::path input_file(const std::string& name, const std::uint8_t* data, std::size_t size) {
    auto path = scratch() / name;
    write_file(path, {reinterpret_cast<const char*>(data), size});
    return path;
}

/// Runs `f`; an `ssm::Error` is the reader refusing the input, which is fine.
template <class F>
void refused_or_read(F&& f) {
    try {
        f();
    } catch (const ssm::Error&) {
    }
}

/// Reads the first and the last element of a loaded tensor, so a view that claims more
/// elements than the file holds is caught by AddressSanitizer (or the mapping's end).
inline void touch(const Tensor& t) {
    const auto v = t.values();
    if (v.empty()) return;
    volatile float sink = v.front();
    sink = v.back();
    (void)sink;
}

/// `input` cut at the first occurrence of `separator` into (head, rest); rest is empty
/// when the separator is absent.
inline std::pair<std::string_view, std::string_view> split_once(std::string_view input, std::string_view separator) {
    const auto at = input.find(separator);
    if (at == std::string_view::npos) return {input, {}};
    return {input.substr(0, at), input.substr(at + separator.size())};
}

/// The separator between the files of a multi-file input (see the seed scripts).
inline constexpr std::string_view kFileSeparator = "\n=====\n";

}  // namespace ssm::fuzz
