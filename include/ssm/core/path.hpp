// ssm/core/path.hpp — what a user-given path names, asked without letting the standard
// library's `std::filesystem_error` escape: a path that cannot be inspected (a folder
// without search permission on the way, a name too long) is an `ssm::Error` naming it.
#pragma once

#include <filesystem>
#include <system_error>

#include "ssm/core/error.hpp"

namespace ssm {

/// What a path names: nothing, a regular file (or a link to one), a folder (or a link to
/// one), or something else (a named pipe, a device, a socket).
enum class PathKind { missing, file, folder, other };

/// What `path` names. A missing path (or one whose parent is a file) is `missing`; any
/// other failure to inspect it throws `ssm::Error` naming the path and the reason.
[[nodiscard]] inline PathKind path_kind(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    switch (st.type()) {
        case fs::file_type::not_found: return PathKind::missing;
        case fs::file_type::regular: return PathKind::file;
        case fs::file_type::directory: return PathKind::folder;
        case fs::file_type::none: fail(path.string(), ": cannot inspect: ", ec.message());
        default: return PathKind::other;
    }
}

/// Whether `path` names anything (see `path_kind`).
[[nodiscard]] inline bool path_exists(const std::filesystem::path& path) {
    return path_kind(path) != PathKind::missing;
}

/// Whether `path` names a folder (see `path_kind`).
[[nodiscard]] inline bool is_folder(const std::filesystem::path& path) {
    return path_kind(path) == PathKind::folder;
}

}  // namespace ssm
