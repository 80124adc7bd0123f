// ssm/core/atomic_file.hpp — write a file so that it appears complete or not at all.
#pragma once

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "ssm/core/error.hpp"

namespace ssm {

/// Calls `write(std::ostream&)` on a temporary file beside `path`, then renames it onto
/// `path`. If `write` throws or the stream fails (disk full), the temporary file is
/// removed, `path` is left as it was, and an `ssm::Error` names `path`.
template <class Writer>
void write_file_atomically(const std::filesystem::path& path, Writer&& write) {
    const std::string file = path.string();
    std::random_device rd;
    const auto tmp = std::filesystem::path(file + ".tmp-" + std::to_string(rd()) + std::to_string(rd()));
    try {
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            if (!out) fail(file, ": cannot create ", tmp.string());
            write(static_cast<std::ostream&>(out));
            out.flush();
            if (!out) fail(file, ": write failed (disk full?)");
        }
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        if (ec) fail(file, ": cannot rename the finished temporary file into place: ", ec.message());
    } catch (...) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        throw;
    }
}

}  // namespace ssm
