// tests/programs/run_program.hpp — run an example program and capture what it prints.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdint>
#include <span>
#include <string>

#include "catch.hpp"

namespace ssm::test {

struct ProgramRun {
    int status;          // exit status (-1 when killed by a signal)
    std::string output;  // what it printed; stdout only, or stdout + stderr
};

/// Runs `exe args` through the shell; `merge_stderr` folds stderr into the output.
inline ProgramRun run_program(const std::string& exe, const std::string& args, bool merge_stderr = true) {
    const std::string cmd = exe + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
    FILE* pipe = popen(cmd.c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string out;
    std::array<char, 4096> buf{};
    std::size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
    const int raw = pclose(pipe);
    return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, out};
}

/// Token ids as a comma-separated list ("3,17,5"), as the programs' --ids take them.
inline std::string join_ids(std::span<const std::int64_t> ids) {
    std::string s;
    for (const auto id : ids) {
        if (!s.empty()) s += ',';
        s += std::to_string(id);
    }
    return s;
}

inline int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

/// Checks the contract for bad input: exit `status`, exactly one line, starting with
/// "PROGRAM: error:", and naming `needle`.
inline void check_one_line_error(const ProgramRun& r, const std::string& program, int status, const std::string& needle) {
    INFO(r.output);
    CHECK(r.status == status);
    CHECK(count_lines(r.output) == 1);
    CHECK(r.output.rfind(program + ": error:", 0) == 0);
    CHECK(r.output.find(needle) != std::string::npos);
}

}  // namespace ssm::test
